"""The launcher and the outer loop: real entry point, --help, config, data and size errors
(one line, status 2, nothing written), NaN stops, a failed checkpoint write and a crash in
evaluation."""

import errno
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from compile_env import fast_compile_env

from cgml_jax.data import sources
from cgml_jax.training import loop

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*args, **kw):
  return subprocess.run([sys.executable, '-m', 'experiments.run', *args], cwd=REPO,
                        capture_output=True, text=True, timeout=600,
                        env=fast_compile_env(), **kw)


def run_patched(patch: str, *args):
  """The launcher, after `patch` (Python source) ran in the same process."""
  code = f'{patch}\nfrom experiments import run\nrun.launch()'
  return subprocess.run([sys.executable, '-c', code, *args], cwd=REPO, capture_output=True,
                        text=True, timeout=600, env=fast_compile_env())


# The data item of checkpoint 10 fails with ENOSPC while the state item is being written.
DISK_FULL_AT_10 = f'''
import os
from cgml_jax.training import checkpoint
save = checkpoint.IteratorHandler.save
def disk_full(self, directory, args):
  if os.path.basename(os.path.dirname(str(directory))).startswith('10.'):
    raise OSError({errno.ENOSPC}, os.strerror({errno.ENOSPC}), str(directory))
  return save(self, directory, args)
checkpoint.IteratorHandler.save = disk_full
'''
# Evaluation (whatever a task does after `fit_method` returns) raises.
EVAL_CRASH = '''
from cgml_jax.training import workdir
fit_method = workdir.fit_method
def crash_after(*args, **kw):
  fit_method(*args, **kw)
  raise RuntimeError('evaluation crashed')
workdir.fit_method = crash_after
'''


@pytest.mark.slow
def test_launcher_smoke_writes_metrics_and_shows_progress(tmp_path):
  """Slow: the default suite makes the same checks on run A of tests/test_resume.py (the
  same launcher on the toy smoke config with its three default methods: metrics.json has
  all three, stdout shows ETA, rho= and lr=), so this separate run is not repeated there."""
  p = run('--config=experiments/toy.py:smoke', f'--workdir={tmp_path}',
          '--config.train.steps=20')
  assert p.returncode == 0, p.stderr[-3000:]
  metrics = json.load(open(tmp_path / 'metrics.json'))
  assert set(metrics['methods']) == {'l1', 'cgml_no_rho', 'cgml'}
  assert 'ETA' in p.stdout and 'rho=' in p.stdout and 'lr=' in p.stdout


def one_error_line(p) -> str:
  """The launcher's single 'error:' line; config errors come without a traceback."""
  assert p.returncode == 2, p.stderr[-3000:]
  assert 'Traceback' not in p.stderr, p.stderr[-3000:]
  lines = [l for l in p.stderr.splitlines() if l.startswith('error:')]
  assert len(lines) == 1, p.stderr[-3000:]
  return lines[0]


def test_launcher_rejects_unknown_config_key(tmp_path):
  p = run('--config=experiments/toy.py:smoke', f'--workdir={tmp_path}',
          '--config.train.stepz=5')
  assert 'stepz' in one_error_line(p)
  # The line names the override, among several, whose field does not exist.
  p = run('--config=experiments/toy.py:smoke', f'--workdir={tmp_path}/run',
          '--config.train.steps=5', '--config.trian.lr=0.1')
  assert one_error_line(p).startswith('error: bad config override --config.trian.lr=0.1: ')
  assert not os.path.exists(tmp_path / 'metrics.json')


def test_launcher_rejects_bad_modes(tmp_path):
  p = run('--config=experiments/toy.py:smoke', f'--workdir={tmp_path}',
          '--config.data.modes=()')
  line = one_error_line(p)
  assert 'modes' in line and 'non-empty' in line


def test_help_lists_every_config_and_its_variants():
  p = run('--help')
  assert p.returncode == 0, p.stderr[-3000:]
  assert '--workdir=runs/toy_smoke \\\n      --config.train.steps=1000' in p.stdout
  configs = {l.split()[0]: l.split(None, 1)[1] for l in p.stdout.splitlines()
             if l.startswith('  experiments/')}
  assert configs['experiments/toy.py'] == 'paper, best, smoke'
  assert configs['experiments/colour_modes.py'] == 'smoke, mnist, best, paper, variant=NAME'
  assert 'experiments/run.py' not in configs and len(configs) >= 10
  assert '--workdir' in p.stdout and '143' in p.stdout and '130' in p.stdout


def test_launcher_names_a_missing_config_file(tmp_path):
  p = run('--config=WRONG_PATH', f'--workdir={tmp_path}/run')
  line = one_error_line(p)
  assert "config file 'WRONG_PATH' not found" in line and 'experiments/toy.py' in line
  assert not os.path.exists(tmp_path / 'run')


def test_absurd_batch_size_is_refused_before_the_workdir_is_touched(tmp_path):
  p = run('--config=experiments/toy.py:smoke', f'--workdir={tmp_path}/run',
          '--config.data.batch_size=100000000')
  line = one_error_line(p)
  assert 'config.data.batch_size = 100000000' in line and 'at most the 512' in line
  assert not os.path.exists(tmp_path / 'run')


def test_missing_data_is_one_line_and_the_suggested_fix_works_on_the_same_workdir(tmp_path):
  """Without the data folder: one line naming the file and both ways to point at it, and
  nothing written; the retry with --config.data.data_dir then runs on the same workdir
  (it used to be refused as a config mismatch by the config.json of the failed run)."""
  args = ['--config=experiments/colour_modes.py:mnist,smoke', f'--workdir={tmp_path}/run',
          "--config.methods=('l1',)", '--config.train.steps=2']
  p = subprocess.run([sys.executable, '-m', 'experiments.run', *args], cwd=REPO,
                     capture_output=True, text=True, timeout=600,
                     env=fast_compile_env(**{sources.ENV_VAR: str(tmp_path / 'no_data')}))
  line = one_error_line(p)
  assert line.startswith('error: missing data: mnist (mnist/mnist_train.npz) not found')
  assert '$CGML_DATA_DIR' in line and '--config.data.data_dir' in line
  assert not os.path.exists(tmp_path / 'run')
  data_dir = sources.resolve_data_dir(must_exist=False)
  if not (data_dir / 'mnist' / 'mnist_train.npz').exists():
    pytest.skip('the retry needs the offline data folder (set CGML_DATA_DIR; docs/data.md)')
  p = subprocess.run([sys.executable, '-m', 'experiments.run', *args,
                      f'--config.data.data_dir={data_dir}'], cwd=REPO, capture_output=True,
                     text=True, timeout=600,
                     env=fast_compile_env(**{sources.ENV_VAR: str(tmp_path / 'no_data')}))
  assert p.returncode == 0, p.stderr[-3000:]
  assert os.path.exists(tmp_path / 'run' / 'metrics.json')


def test_ctrl_c_while_starting_is_one_line(tmp_path):
  """Ctrl-C in the first second (importing JAX): one line, status 130, no traceback and
  nothing written (or, on a machine that imports faster, the line of an interrupted run)."""
  import signal
  import time
  p = subprocess.Popen([sys.executable, '-m', 'experiments.run',
                        '--config=experiments/toy.py:smoke', f'--workdir={tmp_path}/run'],
                       cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                       env=fast_compile_env(),
                       preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
  time.sleep(1.0)
  p.send_signal(signal.SIGINT)
  out, err = p.communicate(timeout=300)
  assert p.returncode == 130, out + err
  assert 'Traceback' not in err and 'Exception ignored' not in err, err
  assert out.strip().splitlines()[-1].startswith('interrupted (Ctrl-C)'), out
  if 'while starting' in out:
    assert out.strip() == 'interrupted (Ctrl-C) while starting; nothing was run'
    assert not os.path.exists(tmp_path / 'run')


def test_nan_stops_training_naming_the_step():
  def step(state, batch, key):
    del key
    loss = jnp.where(state >= 2, jnp.nan, 1.0)  # steps 1, 2 fine; step 3 gives NaN
    return state + 1, {'E': loss}

  batches = iter(lambda: {}, None)
  with pytest.raises(loop.NonFiniteError, match='step 3'):
    loop.fit(jnp.zeros((), jnp.int32), step, batches, num_steps=10,
             key=jax.random.key(0), log_every=100)


@pytest.mark.slow
def test_failed_write_then_eval_crash_then_done(tmp_path):
  """Slow (four launcher runs; tests/test_checkpoint.py checks the same in-process): a full
  disk during checkpoint 10 stops the launcher with one line and status 1; the same command
  resumes from 5 and trains to the end, then evaluation crashes; the next run trains
  nothing ('already trained') and ends bitwise equal to an uninterrupted run."""
  args = ['--config=experiments/toy.py:smoke', "--config.methods=('l1',)",
          '--config.train.steps=20', '--config.checkpoint.every=5',
          '--config.logging.tensorboard=False']
  ref, dir_ = tmp_path / 'ref', tmp_path / 'run'
  p = run_patched(DISK_FULL_AT_10, *args, f'--workdir={dir_}')
  assert p.returncode == 1, p.stderr[-3000:]
  assert 'Traceback' not in p.stderr, p.stderr[-3000:]
  lines = [l for l in p.stderr.splitlines() if l.startswith('error:')]
  assert len(lines) == 1 and 'writing checkpoint 10 to' in lines[0], p.stderr[-3000:]
  assert 'No space left on device' in lines[0] and 'is step 5' in lines[0]
  p = run_patched(EVAL_CRASH, *args, f'--workdir={dir_}')
  assert p.returncode != 0 and 'evaluation crashed' in p.stderr, p.stderr[-3000:]
  assert 'restored step 5 ' in p.stdout and '[toy/l1] step 20/20' in p.stdout, p.stdout
  p = run(*args, f'--workdir={dir_}')
  assert p.returncode == 0, p.stderr[-3000:]
  assert '[toy/l1] already trained to step 20' in p.stdout and '[toy/l1] step' not in p.stdout
  assert run(*args, f'--workdir={ref}').returncode == 0
  a, b = (ocp.StandardCheckpointer().restore(d / 'checkpoints/l1/20/state') for d in (ref, dir_))
  for (k, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(x, y, err_msg=jax.tree_util.keystr(k))
