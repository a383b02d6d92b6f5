"""The launcher and the outer loop: real entry point, config errors, NaN stops."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cgml_jax.training import loop
from compile_env import fast_compile_env

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(*args, **kw):
  return subprocess.run([sys.executable, '-m', 'experiments.run', *args], cwd=REPO,
                        capture_output=True, text=True, timeout=600,
                        env=fast_compile_env(), **kw)


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
  assert not os.path.exists(tmp_path / 'metrics.json')


def test_launcher_rejects_bad_modes(tmp_path):
  p = run('--config=experiments/toy.py:smoke', f'--workdir={tmp_path}',
          '--config.data.modes=()')
  line = one_error_line(p)
  assert 'modes' in line and 'non-empty' in line


def test_nan_stops_training_naming_the_step():
  def step(state, batch, key):
    del key
    loss = jnp.where(state >= 2, jnp.nan, 1.0)  # steps 1, 2 fine; step 3 gives NaN
    return state + 1, {'E': loss}

  batches = iter(lambda: {}, None)
  with pytest.raises(loop.NonFiniteError, match='step 3'):
    loop.fit(jnp.zeros((), jnp.int32), step, batches, num_steps=10,
             key=jax.random.key(0), log_every=100)
