"""Shareable models: export -> load -> sample is bitwise the training code's sampling, and
the sampling command runs on a folder of images."""

import os

import jax
import numpy as np
import pytest
from PIL import Image

from cgml_jax import export
from cgml_jax.tasks import colorize, image, viz
from cgml_jax.tasks import methods as methods_lib
from cgml_jax.training import workdir as workdir_lib
from experiments import colorize as colorize_config
from experiments import sample as sample_cmd


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  """A smoke-trained colorization run (cGML and L1, checkpointed) and its eval inputs."""
  wd = str(tmp_path_factory.mktemp('colorize_run'))
  config = colorize_config.get_config('photos,smoke')
  config.train.steps = 2
  writer = workdir_lib.prepare(config, wd)
  trained = {m: image.train_method(m, colorize.TASK, config, jax.random.key(i), wd, writer)
             for i, m in enumerate(('cgml', 'l1'))}
  writer.close()
  x = image.load_eval_set(colorize.TASK, config, 'test')['x'][:3]
  return config, wd, trained, x


@pytest.mark.parametrize('method', ['cgml', 'l1'])
def test_export_load_sample_is_bitwise_identical(run, tmp_path, method):
  config, _, trained, x = run
  key = jax.random.key(7)
  want = methods_lib.sample(trained[method], x, key, 4)
  path = export.export(trained[method], config, tmp_path / 'model')
  model = export.load_pretrained(path)
  got = model.sample(x, key, 4)
  assert model.method == method and model.config.data.image_size == config.data.image_size
  assert got.shape == (3, 4) + x.shape[1:3] + (2,)
  np.testing.assert_array_equal(got, want)
  if method == 'l1':  # K copies of one prediction
    np.testing.assert_array_equal(got[:, 0], got[:, 3])
  else:
    assert np.abs(got[:, 0] - got[:, 1]).max() > 0
  # Small: parameters only (no optimiser state).
  size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)
  assert size < 2 * sum(a.nbytes for a in jax.tree.leaves(trained[method].state.params)) + 2e5


def test_export_from_workdir_checkpoint(run, tmp_path):
  config, wd, trained, x = run
  model = export.load_pretrained(export.export(wd, None, tmp_path / 'm'))  # cgml by default
  assert model.method == 'cgml'
  key = jax.random.key(3)
  np.testing.assert_array_equal(model.sample(x, key, 2),
                                methods_lib.sample(trained['cgml'], x, key, 2))
  with pytest.raises(export.ExportError, match='exists'):
    export.export(wd, None, tmp_path / 'm')


def test_sample_command_on_a_folder(run, tmp_path):
  config, _, trained, _ = run
  model_dir = export.export(trained['cgml'], config, tmp_path / 'model')
  photos = tmp_path / 'photos'
  photos.mkdir()
  rng = np.random.default_rng(0)
  Image.fromarray(rng.integers(0, 255, (16, 16, 3), np.uint8)).save(photos / 'colour.png')
  Image.fromarray(rng.integers(0, 255, (24, 20), np.uint8)).save(photos / 'grey.png')
  lines = []
  result = sample_cmd.run(str(model_dir), str(photos), str(tmp_path / 'out'), 3,
                          log=lines.append)
  names = sorted(os.listdir(tmp_path / 'out'))
  assert names == sorted(['grid.png', 'colour_grid.png', 'grey_grid.png']
                         + [f'{s}_sample{k}.png' for s in ('colour', 'grey') for k in range(3)])
  assert len(result.written) == len(names) and not result.failed
  resized = [l for l in lines if 'grey.png' in l]
  assert len(resized) == 1 and '20x24' in resized[0] and '16x16' in resized[0]
  assert not any('colour.png' in l for l in lines)  # already the model's size
  out = np.asarray(Image.open(tmp_path / 'out' / 'colour_sample0.png'))
  assert out.shape == (16, 16, 3)
  assert np.asarray(Image.open(tmp_path / 'out' / 'grey_sample2.png')).shape == (24, 20, 3)
  # grid.png: one row per input at the model's side under a header (input, the method,
  # k = 1..3), enlarged to about viz.CELL_PX a cell; the single samples are bare.
  grid = np.asarray(Image.open(tmp_path / 'out' / 'grid.png'))
  size, scale = config.data.image_size, viz.legible_scale(config.data.image_size)
  bare = (2 * (size + 2) + 2, 4 * (size + 2) + 2)
  assert grid.shape[1] == scale * bare[1] and grid.shape[0] > scale * bare[0]
  assert (grid[:grid.shape[0] - scale * bare[0]] < 128).any()


def _bad_and_good_folder(folder, size: int, good: int = 5):
  """`good` photos of at least `size` px a side and 7 files that are no usable image."""
  folder.mkdir()
  rng = np.random.default_rng(1)
  for i in range(good):
    h, w = size + 3 * i, size + 5 * i
    Image.fromarray(rng.integers(0, 255, (h, w, 3), np.uint8)).save(folder / f'good{i}.png')
  whole = (folder / 'good0.png').read_bytes()
  (folder / 'empty.png').write_bytes(b'')
  (folder / 'empty.jpg').write_bytes(b'')
  (folder / 'notes.jpg').write_text('not a photo\n')
  (folder / 'notes.png').write_text('<html>an error page saved as .png</html>\n')
  (folder / 'truncated.png').write_bytes(whole[:len(whole) // 2])
  (folder / 'header_only.png').write_bytes(whole[:40])
  Image.fromarray(np.zeros((1, 1, 3), np.uint8)).save(folder / 'one_pixel.png')
  return ['empty.jpg', 'empty.png', 'header_only.png', 'notes.jpg', 'notes.png', 'one_pixel.png',
          'truncated.png']


def test_sample_command_skips_bad_files_and_writes_the_rest(run, tmp_path):
  config, _, trained, _ = run
  model_dir = export.export(trained['l1'], config, tmp_path / 'model')
  bad = _bad_and_good_folder(tmp_path / 'photos', config.data.image_size)
  warnings = []
  result = sample_cmd.run(str(model_dir), str(tmp_path / 'photos'), str(tmp_path / 'out'), 2,
                          batch_size=4, log=lambda line: None, warn=warnings.append)
  assert sorted(os.path.basename(f) for f, _ in result.failed) == bad
  assert len(warnings) == len(bad) and all('\n' not in w for w in warnings)
  for name in bad:  # one line each, naming the file
    assert sum(name in w for w in warnings) == 1, name
  assert any('smaller than' in w and '16 px' in w for w in warnings if 'one_pixel' in w)
  names = set(os.listdir(tmp_path / 'out'))
  assert names == {'grid.png'} | {f'good{i}_{s}.png' for i in range(5)
                                  for s in ('sample0', 'sample1', 'grid')}


def test_sample_cli_exit_status(run, tmp_path):
  """Some inputs bad: each named on stderr in one line, the rest written, status 1 (no
  traceback); a bad command: one line, status 2."""
  import subprocess
  import sys
  config, _, trained, _ = run
  model_dir = export.export(trained['l1'], config, tmp_path / 'model')
  bad = _bad_and_good_folder(tmp_path / 'photos', config.data.image_size, good=2)
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

  def cli(*args):
    return subprocess.run([sys.executable, '-m', 'experiments.sample', f'--model={model_dir}',
                           *args], cwd=root, capture_output=True, text=True, timeout=300)
  p = cli(f'--input={tmp_path / "photos"}', f'--out={tmp_path / "out"}', '--num_samples=2')
  assert p.returncode == sample_cmd.EXIT_SOME_FAILED, p.stderr
  assert 'Traceback' not in p.stderr
  skipped = [l for l in p.stderr.splitlines() if l.startswith('[sample] skipped')]
  assert len(skipped) == len(bad)
  assert f'{len(bad)} of {len(bad) + 2} inputs skipped' in p.stderr
  # stderr holds only those lines and the summary (no INFO log of JAX's backend probe).
  assert len(p.stderr.strip().splitlines()) == len(bad) + 1, p.stderr
  assert 'good1_sample1.png' in os.listdir(tmp_path / 'out')
  p = cli(f'--input={tmp_path / "nowhere"}', f'--out={tmp_path / "out2"}')
  assert p.returncode == sample_cmd.EXIT_BAD_COMMAND and 'Traceback' not in p.stderr
  assert p.stderr.strip().splitlines()[-1].startswith('error: --input')
  # A missing or unknown flag, a stray argument, a training workdir for --model: one line,
  # status 2; --help: status 0.
  wd = run[1]
  for args, says in ([f'--input={tmp_path / "photos"}'], '--out'), (
      [f'--input={tmp_path / "photos"}', '--out=o', '--num_sample=2'], 'num_sample'), (
      [f'--input={tmp_path / "photos"}', '--out=o', 'extra'], 'extra'):
    p = cli(*args)
    assert p.returncode == sample_cmd.EXIT_BAD_COMMAND, p.stderr
    assert p.stderr.strip().splitlines() == [p.stderr.strip()] and says in p.stderr, p.stderr
  p = subprocess.run([sys.executable, '-m', 'experiments.sample', f'--model={wd}',
                      f'--input={tmp_path / "photos"}', f'--out={tmp_path / "o"}'], cwd=root,
                     capture_output=True, text=True, timeout=300)
  assert p.returncode == sample_cmd.EXIT_BAD_COMMAND, p.stderr
  assert p.stderr.strip().startswith('error: ') and 'export it first' in p.stderr, p.stderr
  assert '\n' not in p.stderr.strip()
  p = cli(f'--input={tmp_path / "photos" / "empty.png"}', f'--out={tmp_path / "o"}')
  assert p.returncode == sample_cmd.EXIT_SOME_FAILED
  assert p.stderr.strip().splitlines()[-1].endswith('nothing was written'), p.stderr
  p = cli('--help')
  assert p.returncode == 0 and 'Exit status' in p.stdout and '--num_samples' in p.stdout


def test_colorization_keeps_the_full_resolution_lightness(run, tmp_path):
  """Outputs at the input's size; their L is the input's own L (ab upsampled to it)."""
  from skimage.color import rgb2lab
  config, _, trained, _ = run
  model_dir = export.export(trained['cgml'], config, tmp_path / 'model')
  h, w = 3 * config.data.image_size, 2 * config.data.image_size + 5
  yy, xx = np.mgrid[:h, :w]
  photo = np.stack([(xx * 255 // w), (yy * 255 // h), ((xx + yy) % 17) * 15], -1)
  Image.fromarray(photo.astype(np.uint8)).save(tmp_path / 'photo.png')
  sample_cmd.run(str(model_dir), str(tmp_path / 'photo.png'), str(tmp_path / 'out'), 2,
                 log=lambda line: None)
  out = np.asarray(Image.open(tmp_path / 'out' / 'photo_sample1.png'))
  assert out.shape == (h, w, 3)
  l_in = rgb2lab(photo.astype(np.float64) / 255)[..., 0]
  l_out = rgb2lab(out / 255.0)[..., 0]
  # Equal up to 8-bit rounding and the sRGB gamut clip of strongly coloured pixels; the
  # high-frequency stripes of the blue channel would be lost at the model's 16 px.
  assert np.median(np.abs(l_out - l_in)) < 1.0
  # The grid: a header over input | k = 1 | k = 2, whose cells are the input's pixels
  # (repeated for a narrow input so the labels fit) and exactly the sample files.
  grid = np.asarray(Image.open(tmp_path / 'out' / 'photo_grid.png'))
  s = viz.legible_scale(w)
  cells = grid[-s * (h + 4):]
  assert s > 1 and grid.shape[1] == s * (3 * (w + 2) + 2) and grid.shape[0] > len(cells)
  left = s * (2 + 2 * (w + 2))
  np.testing.assert_array_equal(cells[2 * s:(2 + h) * s:s, left:left + w * s:s], out)
  assert (grid[:-len(cells)] < 128).any()  # text in the header


@pytest.mark.slow  # long; run with -m slow
def test_readme_colorize_run_exports_and_samples(tmp_path):
  """The README's path: train `experiments/colorize.py:smoke` through the entry point,
  export the workdir, load it, and sample a folder (colour modes or photo colorization,
  whichever the config's default task is)."""
  import cgml_jax
  config = colorize_config.get_config('smoke')
  wd = str(tmp_path / 'colorize')
  cgml_jax.train_and_evaluate(config, wd)
  path = export.export(wd, None, tmp_path / 'colorizer')
  model = export.load_pretrained(path)
  assert model.task == config.task and model.method == 'cgml'
  s = config.data.image_size
  x = np.zeros((2, s, s, model.image_task.in_channels), np.float32)
  y = model.sample(x, jax.random.key(0), 3)
  assert y.shape == (2, 3, s, s, model.image_task.out_channels)
  bad = _bad_and_good_folder(tmp_path / 'photos', s, good=3)
  result = sample_cmd.run(path, str(tmp_path / 'photos'), str(tmp_path / 'out'), 3,
                          log=lambda line: None, warn=lambda line: None)
  assert len(result.failed) == len(bad)
  out = np.asarray(Image.open(tmp_path / 'out' / 'good2_sample2.png'))
  assert out.shape == (s + 6, s + 10, 3)
  if model.task == 'colour_modes':
    # A grey glyph in, an RGB output: channels may differ (a colour), unlike the input.
    glyph = np.zeros((s, s), np.uint8)
    glyph[s // 4:3 * s // 4, s // 4:3 * s // 4] = 255
    Image.fromarray(glyph).save(tmp_path / 'glyph.png')
    sample_cmd.run(path, str(tmp_path / 'glyph.png'), str(tmp_path / 'out_glyph'), 2,
                   log=lambda line: None)
    assert np.asarray(Image.open(tmp_path / 'out_glyph' / 'glyph_sample0.png')).shape == (
        s, s, 3)


@pytest.mark.slow  # long; run with -m slow
def test_sample_command_completion_masks(tmp_path):
  """Completion: a mask PNG (white = hole, resized to the model) or a named protocol."""
  from cgml_jax import cgml
  from cgml_jax.tasks import complete, methods
  from cgml_jax.training import optim
  from experiments import complete as complete_config
  config = complete_config.get_config('smoke')
  task = complete.make_task(config.data.channels)
  enc, gen, lat = image.build_models(task, config)
  s = config.data.image_size
  tx = optim.from_config(config.train, config.train.lr)
  state = cgml.CGMLState.create(jax.random.key(0), np.zeros((1, s, s, 4), np.float32),
                                encoder=enc, generator=gen, latent_net=lat, tx_hg=tx,
                                tx_latent=tx, hp=methods.hyper(config))
  model_dir = export.export(state, config, tmp_path / 'model')
  rng = np.random.default_rng(1)
  Image.fromarray(rng.integers(0, 255, (s, s, 3), np.uint8)).save(tmp_path / 'face.png')
  hole = np.zeros((2 * s, 2 * s), np.uint8)
  hole[s // 2:s, s // 2:s] = 255
  Image.fromarray(hole).save(tmp_path / 'hole.png')
  for mask in ('center', str(tmp_path / 'hole.png')):
    out = tmp_path / f'out_{len(mask)}'
    sample_cmd.run(str(model_dir), str(tmp_path / 'face.png'), str(out), 2, mask=mask,
                   log=lambda line: None)
    assert sorted(os.listdir(out)) == ['face_grid.png', 'face_sample0.png', 'face_sample1.png',
                                       'grid.png']
    # Outside the hole the output is the observed image (completion composites).
    got = np.asarray(Image.open(out / 'face_sample0.png')).astype(int)
    scale = got.shape[0] // s
    want = np.asarray(Image.open(tmp_path / 'face.png')).astype(int)
    assert np.abs(got[::scale, ::scale][0, 0] - want[0, 0]).max() <= 1


def test_sample_cli_ctrl_c_is_one_line(tmp_path):
  """Ctrl-C while sampling: one line naming where the outputs are, status 130."""
  import subprocess
  import sys
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  script = ('import sys\n'
            'from absl import app\n'
            'from experiments import sample\n'
            'def interrupted(*args, **kwargs):\n'
            '  raise KeyboardInterrupt\n'
            'sample.run = interrupted\n'
            'app.run(sample.main)\n')
  p = subprocess.run([sys.executable, '-c', script, '--model=m', '--input=i',
                      f'--out={tmp_path}'], cwd=root, capture_output=True, text=True,
                     timeout=120)
  assert p.returncode == sample_cmd.EXIT_INTERRUPTED, p.stderr
  assert p.stderr.strip().splitlines() == [
      f'interrupted (Ctrl-C); the outputs written so far are in {tmp_path}']
