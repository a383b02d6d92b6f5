r"""Run a shared model (`cgml_jax.export`) on your own images: K outputs per input.

  python -m experiments.sample --model=colorizer --input=photos/ --num_samples=8 --out=out/
  python -m experiments.sample --model=inpainter --input=face.png --mask=hole.png --out=out/
  python -m experiments.sample --model=inpainter --input=faces/ --mask=center --out=out/

For each input image NAME it writes NAME_sample{k}.png (k = 0..K-1) at the input's own
resolution and NAME_grid.png (input | K outputs, labelled with the method and k; at the
input's resolution, enlarged by pixel repetition only below about 96 px), and grid.png
with every input as a row at the model's side, labelled the same way.

  colorization  grey or colour photos; the network sees their lightness L at its side, and
                the predicted ab is upsampled (bicubic) to the input's size and joined
                with the input's full-resolution L
  colour modes  a grey glyph (a colour image is converted to grey); RGB outputs
  completion    an image plus --mask: a PNG (white = the hole to fill, any size) or a
                named mask protocol of cgml_jax.tasks.complete (area10, area15, area25,
                center, irregular; the random ones drawn with --seed)
  translation   the input image of the pair (e.g. a facades label map)

Sizes: the network takes square images of the side S it was trained at
(config.data.image_size). Every input is resized (bicubic) to S x S for it, and its
outputs are resized back to the input's size. An input smaller than S on a side is
refused (it would have to be upscaled). Files are read by `cgml_jax.data.images.read_rgb`
(16-bit, palette, CMYK; transparency composited on white).

Exit status: 0 when every input was written; 1 when some inputs could not be read (each
is reported in one line and skipped; the others are written); 2 for a bad command (a
missing model or input folder, a bad mask, a bad or missing flag); 130 after Ctrl-C
(one line; the outputs written before it stay). --help prints this text (status 0).
"""

from __future__ import annotations

import dataclasses
import os
import sys

import numpy as np
from absl import app, flags, logging

FLAGS = flags.FLAGS
flags.DEFINE_string('model', None, 'Directory written by cgml_jax.export.export.')
flags.DEFINE_string('input', None, 'An image file, or a folder of them.')
flags.DEFINE_integer('num_samples', 6, 'K: outputs per input (L1 models give K copies).')
flags.DEFINE_string('out', None, 'Output directory (created).')
flags.DEFINE_string('mask', 'center', 'Completion only: a mask PNG or a protocol name.')
flags.DEFINE_integer('seed', 0, 'Seed of the latents (and of random mask protocols).')
flags.DEFINE_integer('batch_size', 16, 'Inputs per network call.')
flags.DEFINE_integer('scale', 0, 'Enlarge grid.png this many times (0: to about 96 px).')
flags.mark_flags_as_required(['model', 'input', 'out'])

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.gif', '.tif', '.tiff', '.webp')
TASKS = ('colorize', 'colour_modes', 'complete', 'translate')
EXIT_SOME_FAILED = 1  # some inputs were skipped (each reported); the rest are written
EXIT_BAD_COMMAND = 2  # nothing was run: a bad flag, model, input folder or mask
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT): the outputs written before it stay


class SampleError(ValueError):
  """Bad inputs to the command (missing files, a task it does not handle)."""


@dataclasses.dataclass
class Result:
  """What a run did: the files written and the inputs skipped, as (path, reason)."""
  written: list[str]
  failed: list[tuple[str, str]]
  num_inputs: int = 0


def list_inputs(path: str) -> list[str]:
  """The image files of `path` (a file, or a folder's images sorted by name)."""
  if os.path.isdir(path):
    files = sorted(os.path.join(path, f) for f in os.listdir(path)
                   if f.lower().endswith(IMAGE_EXTENSIONS))
    if not files:
      raise SampleError(f'no images ({", ".join(IMAGE_EXTENSIONS)}) in {path}')
    return files
  if not os.path.isfile(path):
    raise SampleError(f'--input {path} is neither an image file nor a folder')
  return [path]


def resize(img: np.ndarray, height: int, width: int, resample: str = 'bicubic') -> np.ndarray:
  """uint8 (H, W[, C]) -> (height, width[, C]) with PIL ('bicubic' or 'nearest')."""
  from PIL import Image
  if img.shape[:2] == (height, width):
    return img
  mode = Image.BICUBIC if resample == 'bicubic' else Image.NEAREST
  grey = img.ndim == 3 and img.shape[-1] == 1
  out = np.asarray(Image.fromarray(img[..., 0] if grey else img).resize((width, height), mode))
  return out[..., None] if grey else out


def read_mask(spec: str, size: int, rng: np.random.Generator, config) -> np.ndarray:
  """(H, W, 1) float32 hole mask: a protocol drawn at size x size, or a PNG (white = hole)
  at its own size. `resize_mask` fits either to an image."""
  from cgml_jax.data import images
  from cgml_jax.tasks import complete
  if spec in complete.PROTOCOLS:
    return np.asarray(complete.mask_fn(config, spec)(rng, size, size), np.float32)
  if not os.path.isfile(spec):
    raise SampleError(f'--mask {spec!r} is neither a PNG file nor one of {complete.PROTOCOLS}')
  try:
    rgb = images.read_rgb(spec)
  except images.ImageReadError as e:
    raise SampleError(f'--mask {e}') from None
  return (_grey(rgb) > 127).astype(np.float32)


def resize_mask(mask: np.ndarray, height: int, width: int) -> np.ndarray:
  """A 0/1 mask (h, w, 1) at (height, width, 1), nearest-neighbour (it stays 0/1)."""
  m = resize((mask[..., 0] * 255).astype(np.uint8), height, width, 'nearest')
  return (m > 127).astype(np.float32)[..., None]


def _grey(rgb: np.ndarray) -> np.ndarray:
  """uint8 RGB -> uint8 grey (H, W, 1), Pillow's ITU-R 601-2 luma."""
  from PIL import Image
  return np.asarray(Image.fromarray(rgb).convert('L'))[..., None]


def make_input(task: str, rgb: np.ndarray, config, mask: np.ndarray | None) -> np.ndarray:
  """The network input x (H, W, C) of a uint8 RGB image (any size; the network takes S)."""
  from cgml_jax.data import transforms
  if task == 'colorize':
    return transforms.colorization()({'image': rgb}, None)['x']
  if task == 'colour_modes':
    return _grey(rgb).astype(np.float32) / 127.5 - 1.0  # the glyph, grey, in [-1, 1]
  if task == 'complete' and int(config.data.channels) == 1:
    rgb = _grey(rgb)
  img = transforms.to_float()({'image': rgb}, None)['image']
  if task == 'complete':
    return transforms.completion(lambda rng, h, w: mask)({'image': img}, None)['x']
  return img  # translate: the input image in [-1, 1]


@dataclasses.dataclass
class _Input:
  path: str
  x_net: np.ndarray   # (S, S, C): what the network sees
  x_full: np.ndarray  # (H, W, C): the same input at the file's resolution


def _prepare(path: str, model, mask_spec: str, rng, log) -> _Input:
  """Reads one file and makes its inputs; SampleError (one line) if it cannot be used."""
  from cgml_jax.data import images
  config, task = model.config, model.task
  size = int(config.data.image_size)
  try:
    rgb = images.read_rgb(path)
  except images.ImageReadError as e:
    raise SampleError(str(e)) from None
  h, w = rgb.shape[:2]
  if min(h, w) < size:
    raise SampleError(f'{path}: {w}x{h} is smaller than the model\'s {size}x{size} input; '
                      f'inputs are never upscaled, give at least {size} px a side')
  if (h, w) != (size, size):
    log(f'[sample] {os.path.basename(path)}: {w}x{h} resized to {size}x{size} for the model, '
        f'outputs resized back to {w}x{h}')
  mask_net = mask_full = None
  if task == 'complete':
    mask = read_mask(mask_spec, size, rng, config)
    mask_net, mask_full = resize_mask(mask, size, size), resize_mask(mask, h, w)
  return _Input(path, make_input(task, resize(rgb, size, size), config, mask_net),
                make_input(task, rgb, config, mask_full))


def _write_full_resolution(inp: _Input, y: np.ndarray, task, method: str,
                           out_dir: str) -> list[str]:
  """NAME_sample{k}.png and NAME_grid.png at the input's size, from outputs y (K, S, S, C).

  Each output is upsampled (bicubic) to the input's size and shown with the
  full-resolution input by the task's `to_image` (colorization: the input's own L). The
  grid is labelled; its cells are the input's pixels, repeated only when the input is
  narrower than `viz.CELL_PX` so that the labels fit over a cell.
  """
  import jax
  import jax.numpy as jnp

  from cgml_jax.tasks import viz
  stem = os.path.splitext(os.path.basename(inp.path))[0]
  h, w = inp.x_full.shape[:2]
  x = jnp.asarray(inp.x_full)[None]
  outputs, written = [], []
  for k, y_k in enumerate(y):
    y_up = jax.image.resize(jnp.asarray(y_k), (h, w, y_k.shape[-1]), 'cubic')
    outputs.append(np.asarray(task.to_image(x, y_up[None]))[0])
    written.append(os.path.join(out_dir, f'{stem}_sample{k}.png'))
    viz.save_png(written[-1], viz.to_uint8(outputs[-1]))
  written.append(os.path.join(out_dir, f'{stem}_grid.png'))
  shown = np.asarray(task.input_image(x))
  viz.save_png(written[-1], viz.samples_grid(shown, None, {method: np.stack(outputs)[None]}))
  return written


def run(model_dir: str, input_path: str, out_dir: str, num_samples: int, mask: str = 'center',
        seed: int = 0, batch_size: int = 16, scale: int = 0, log=print, warn=None) -> Result:
  """The command: samples every readable input, writes the PNGs.

  Unreadable inputs (empty, not an image, truncated, too small) are reported in one line
  each through `warn` (default `log`) and skipped; the others are written batch by batch,
  so what was written stays written.

  Returns:
    The files written and the inputs skipped.
  """
  import jax

  from cgml_jax import export
  from cgml_jax.tasks import viz
  if num_samples < 1:
    raise SampleError(f'--num_samples must be >= 1, got {num_samples}')
  if batch_size < 1:
    raise SampleError(f'--batch_size must be >= 1, got {batch_size}')
  model = export.load_pretrained(model_dir)
  if model.task not in TASKS:
    raise SampleError(f'the model is a {model.task!r} model; this command runs {TASKS}')
  task, size = model.image_task, int(model.config.data.image_size)
  files = list_inputs(input_path)
  if model.task == 'complete':
    read_mask(mask, size, np.random.default_rng(seed), model.config)  # a bad --mask: exit 2
  rng = np.random.default_rng(seed)
  os.makedirs(out_dir, exist_ok=True)
  result = Result([], [], len(files))
  warn = warn or log
  shown_all, outputs_all = [], []  # inputs as shown and K outputs at S, for grid.png
  to_image, input_image = jax.jit(task.to_image), jax.jit(task.input_image)
  key = jax.random.key(seed)
  for start in range(0, len(files), batch_size):
    batch = []
    for f in files[start:start + batch_size]:
      try:
        batch.append(_prepare(f, model, mask, rng, log))
      except SampleError as e:
        warn(f'[sample] skipped {e}')
        result.failed.append((f, str(e)))
    if not batch:
      continue
    x = np.stack([b.x_net for b in batch]).astype(np.float32)
    # Every call gets the same batch shape (zero rows fill a short batch, their outputs are
    # dropped), so the sampler compiles once however many inputs a batch loses.
    full = min(batch_size, len(files))
    padded = np.concatenate([x, np.zeros((full - len(x),) + x.shape[1:], x.dtype)])
    y = model.sample(padded, jax.random.fold_in(key, start), num_samples)[:len(x)]
    b, k = y.shape[:2]                                     # y: (B, K, S, S, C)
    small = np.asarray(to_image(np.repeat(x, k, axis=0), y.reshape((b * k,) + y.shape[2:])))
    shown = np.asarray(input_image(x))
    for i, inp in enumerate(batch):
      result.written += _write_full_resolution(inp, y[i], task, model.method, out_dir)
      shown_all.append(shown[i])
      outputs_all.append(small[i * k:(i + 1) * k])
  if shown_all:
    result.written.append(os.path.join(out_dir, 'grid.png'))
    viz.save_png(result.written[-1], viz.samples_grid(
        np.stack(shown_all), None, {model.method: np.stack(outputs_all)}, scale=scale or None))
  log(f'[sample] {len(shown_all)} of {len(files)} inputs x {num_samples} samples ({model.method}, '
      f'{model.task}) -> {out_dir}' + (f'; {len(result.failed)} skipped' if result.failed
                                        else ''))
  return result


HELP_FLAGS = ('-h', '-help', '--help', '-?', '--helpshort', '--helpfull')


def _bad_command(message: str):
  print(f'error: {message} (see --help)', file=sys.stderr, flush=True)
  sys.exit(EXIT_BAD_COMMAND)


def parse_flags(argv):
  """absl's flag parsing, with --help on stdout (status 0) and a bad or missing flag or a
  stray argument in one line (status 2), like the other commands."""
  if any(a in HELP_FLAGS for a in argv[1:]):
    flag_help = FLAGS.get_help() if '--helpfull' in argv else FLAGS.main_module_help()
    print(f'{__doc__.strip()}\n\nFlags:\n{flag_help}', flush=True)
    sys.exit(0)
  try:
    argv = FLAGS(argv)
  except flags.Error as e:
    _bad_command(' '.join(str(e).split()))
  if len(argv) > 1:
    _bad_command(f'unexpected arguments {argv[1:]}; flags are written --name=value')
  return argv


def main(argv):
  del argv  # parse_flags refused any argument that is not a flag
  if not FLAGS['verbosity'].present:
    # JAX logs its backend probe (e.g. a missing libtpu) at INFO; stderr keeps only the
    # lines about the inputs. --verbosity=0 shows the INFO lines again.
    logging.set_verbosity(logging.WARNING)
  from cgml_jax.export import ExportError
  try:
    result = run(FLAGS.model, FLAGS.input, FLAGS.out, FLAGS.num_samples, FLAGS.mask,
                 FLAGS.seed, FLAGS.batch_size, FLAGS.scale,
                 warn=lambda line: print(line, file=sys.stderr))
  except KeyboardInterrupt:
    print(f'interrupted (Ctrl-C); the outputs written so far are in {FLAGS.out}',
          file=sys.stderr)
    from cgml_jax.training import loop
    loop.exit_interrupted(EXIT_INTERRUPTED)
  except (SampleError, ExportError, FileNotFoundError) as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(EXIT_BAD_COMMAND)
  if result.failed:
    rest = ('the others are written' if len(result.failed) < result.num_inputs
            else 'nothing was written')
    print(f'error: {len(result.failed)} of {result.num_inputs} inputs skipped (each named '
          f'above); {rest}', file=sys.stderr)
    sys.exit(EXIT_SOME_FAILED)

if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
