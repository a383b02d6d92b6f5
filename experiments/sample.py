r"""Run a shared model (`cgml_jax.export`) on your own images: K outputs per input.

  python -m experiments.sample --model=colorizer --input=photos/ --num_samples=8 --out=out/
  python -m experiments.sample --model=inpainter --input=face.png --mask=hole.png --out=out/
  python -m experiments.sample --model=inpainter --input=faces/ --mask=center --out=out/

For each input image NAME it writes NAME_sample{k}.png (k = 0..K-1) and NAME_grid.png
(input | K outputs), and grid.png with every input as a row.

  colorization  grey or colour photos; colour ones are converted to their lightness L
  completion    an image plus --mask: a PNG (white = the hole to fill, any size) or a
                named mask protocol of cgml_jax.tasks.complete (area10, area15, area25,
                center, irregular; the random ones drawn with --seed)
  translation   the input image of the pair (e.g. a facades label map)

The network takes square images of the side it was trained at (config.data.image_size);
other inputs are centre-cropped to a square and resized to it (bicubic), one line each.
"""

from __future__ import annotations

import os
import sys

import numpy as np
from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string('model', None, 'Directory written by cgml_jax.export.export.')
flags.DEFINE_string('input', None, 'An image file, or a folder of them.')
flags.DEFINE_integer('num_samples', 6, 'K: outputs per input (L1 models give K copies).')
flags.DEFINE_string('out', None, 'Output directory (created).')
flags.DEFINE_string('mask', 'center', 'Completion only: a mask PNG or a protocol name.')
flags.DEFINE_integer('seed', 0, 'Seed of the latents (and of random mask protocols).')
flags.DEFINE_integer('batch_size', 16, 'Inputs per network call.')
flags.DEFINE_integer('scale', 0, 'Enlarge the PNGs this many times (0: to about 96 px).')
flags.mark_flags_as_required(['model', 'input', 'out'])

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.gif', '.tif', '.tiff', '.webp')
TASKS = ('colorize', 'complete', 'translate')


class SampleError(ValueError):
  """Bad inputs to the command (missing files, a task it does not handle)."""


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


def fit_to(img: np.ndarray, size: int, resample: str = 'bicubic') -> tuple[np.ndarray, str]:
  """Centre-crops to a square and resizes to size x size; returns (image, what was done).

  Args:
    img: uint8 (H, W) or (H, W, C).
    size: the side the network takes.
    resample: 'bicubic' (photos) or 'nearest' (masks).

  Returns:
    (uint8 image (size, size[, C]), '' if unchanged else a description).
  """
  from PIL import Image
  h, w = img.shape[:2]
  if (h, w) == (size, size):
    return img, ''
  done = []
  if h != w:
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    img = img[top:top + s, left:left + s]
    done.append(f'centre-cropped to {s}x{s}')
  if img.shape[0] != size:
    mode = Image.BICUBIC if resample == 'bicubic' else Image.NEAREST
    img = np.asarray(Image.fromarray(img).resize((size, size), mode))
    done.append(f'resized to {size}x{size}')
  return img, f'{w}x{h} ' + ', '.join(done)


def read_rgb(path: str) -> np.ndarray:
  """uint8 (H, W, 3); grey images get three equal channels."""
  from PIL import Image
  with Image.open(path) as im:
    return np.asarray(im.convert('RGB'))


def read_mask(spec: str, size: int, rng: np.random.Generator, config) -> np.ndarray:
  """(size, size, 1) float32 hole mask from a PNG (white = hole) or a protocol name."""
  from cgml_jax.tasks import complete
  if spec in complete.PROTOCOLS:
    return np.asarray(complete.mask_fn(config, spec)(rng, size, size), np.float32)
  if not os.path.isfile(spec):
    raise SampleError(f'--mask {spec!r} is neither a PNG file nor one of {complete.PROTOCOLS}')
  from PIL import Image
  with Image.open(spec) as im:
    m = np.asarray(im.convert('L'))
  m, _ = fit_to(m, size, resample='nearest')
  return (m > 127).astype(np.float32)[..., None]


def make_input(task: str, rgb: np.ndarray, config, mask: np.ndarray | None) -> np.ndarray:
  """The network input x (S, S, C) for a uint8 RGB image of the right size."""
  from cgml_jax.data import transforms
  if task == 'colorize':
    return transforms.colorization()({'image': rgb}, None)['x']
  img = transforms.to_float()({'image': rgb}, None)['image']
  if task == 'complete':
    channels = int(config.data.channels)
    if channels == 1:
      img = img.mean(axis=-1, keepdims=True)
    return transforms.completion(lambda rng, h, w: mask)({'image': img}, None)['x']
  return img  # translate: the input image in [-1, 1]


def run(model_dir: str, input_path: str, out_dir: str, num_samples: int, mask: str = 'center',
        seed: int = 0, batch_size: int = 16, scale: int = 0, log=print) -> list[str]:
  """The command: samples every input, writes the PNGs; returns the paths written."""
  import jax

  from cgml_jax import export
  from cgml_jax.tasks import viz
  if num_samples < 1:
    raise SampleError(f'--num_samples must be >= 1, got {num_samples}')
  model = export.load_pretrained(model_dir)
  if model.task not in TASKS:
    raise SampleError(f'the model is a {model.task!r} model; this command runs {TASKS}')
  task, config = model.image_task, model.config
  size = int(config.data.image_size)
  files = list_inputs(input_path)
  rng = np.random.default_rng(seed)
  xs = []
  for f in files:
    rgb, note = fit_to(read_rgb(f), size)
    if note:
      log(f'[sample] {os.path.basename(f)}: {note} (the model takes {size}x{size} inputs)')
    m = read_mask(mask, size, rng, config) if model.task == 'complete' else None
    xs.append(make_input(model.task, rgb, config, m))
  x = np.stack(xs).astype(np.float32)
  key = jax.random.key(seed)
  outs = [model.sample(x[i:i + batch_size], jax.random.fold_in(key, i), num_samples)
          for i in range(0, len(x), batch_size)]
  y = np.concatenate(outs)                                   # (N, K, S, S, C_out)
  n, k = y.shape[:2]
  to_image, input_image = jax.jit(task.to_image), jax.jit(task.input_image)
  imgs = np.asarray(to_image(np.repeat(x, k, axis=0), y.reshape((n * k,) + y.shape[2:])))
  imgs = imgs.reshape((n, k) + imgs.shape[1:])
  shown = np.asarray(input_image(x))
  scale = scale or max(1, 96 // size)
  os.makedirs(out_dir, exist_ok=True)
  written = []
  for f, inp, samples in zip(files, shown, imgs):
    stem = os.path.splitext(os.path.basename(f))[0]
    for j, s in enumerate(samples):
      written.append(os.path.join(out_dir, f'{stem}_sample{j}.png'))
      viz.save_png(written[-1], viz.grid([[s]], pad=0), scale=scale)
    written.append(os.path.join(out_dir, f'{stem}_grid.png'))
    viz.save_png(written[-1], viz.grid([[inp] + list(samples)]), scale=scale)
  written.append(os.path.join(out_dir, 'grid.png'))
  viz.save_png(written[-1], viz.grid([[inp] + list(s) for inp, s in zip(shown, imgs)]),
               scale=scale)
  log(f'[sample] {n} inputs x {k} samples ({model.method}, {model.task}) -> {out_dir}')
  return written


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  try:
    run(FLAGS.model, FLAGS.input, FLAGS.out, FLAGS.num_samples, FLAGS.mask, FLAGS.seed,
        FLAGS.batch_size, FLAGS.scale)
  except (SampleError, FileNotFoundError, ValueError) as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)


if __name__ == '__main__':
  app.run(main)
