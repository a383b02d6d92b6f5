"""Metric writers: JSON lines and TensorBoard files, image grids of K modes, fit's log interval."""

import glob
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cgml_jax.training import loop, writers


def test_jsonl_scalars_and_images(tmp_path):
  w = writers.create_writer(str(tmp_path), tensorboard=False)
  w.write_scalars(5, {'E': np.float32(0.5), 'lr': 1e-3})
  w.write_images(5, {'toy/samples': np.zeros((4, 6, 3))})
  w.close()
  rows = [json.loads(l) for l in open(tmp_path / 'metrics.jsonl')]
  assert rows == [{'step': 5, 'E': 0.5, 'lr': 1e-3}]
  img = json.loads(open(tmp_path / 'images.jsonl').read())
  assert img['step'] == 5 and os.path.exists(tmp_path / img['toy/samples'])


def test_mode_grid_puts_the_k_modes_of_an_input_in_one_row():
  s = np.zeros((2, 3, 4, 5, 1), np.float32)  # N=2 inputs, K=3 modes, 4x5 images
  s[1, 2] = 0.5  # input 1, mode 2
  g = writers.mode_grid(s, pad=1)
  assert g.shape == (2 * 5, 3 * 6, 1)
  assert np.all(g[5:9, 12:17] == 0.5) and np.all(g[0:4, 0:5] == 0.0)
  with pytest.raises(ValueError, match=r'\(N, K, H, W'):
    writers.mode_grid(np.zeros((3, 4)))


def test_tensorboard_event_files(tmp_path):
  pytest.importorskip('tensorboardX')
  w = writers.create_writer(str(tmp_path))
  w.write_scalars(1, {'E': 1.0})
  w.write_images(1, {'modes': writers.mode_grid(np.ones((2, 3, 4, 4, 3)))})
  w.close()
  assert glob.glob(str(tmp_path / 'events.out.tfevents.*'))


def test_fit_writes_every_log_interval(tmp_path):
  w = writers.create_writer(str(tmp_path), tensorboard=False)

  def step(state, batch, key):
    del batch, key
    return state + 1.0, {'E': state}

  loop.fit(jnp.zeros(()), step, iter(lambda: {}, None), num_steps=7, key=jax.random.key(0),
           log_every=3, name='m', writer=w)
  w.close()
  rows = [json.loads(l) for l in open(tmp_path / 'metrics.jsonl')]
  assert rows == [{'step': 3, 'm/E': 2.0}, {'step': 6, 'm/E': 5.0}, {'step': 7, 'm/E': 6.0}]


def test_writer_creates_nothing_before_its_first_record(tmp_path):
  w = writers.create_writer(str(tmp_path / 'logs'))
  w.flush()
  assert not (tmp_path / 'logs').exists()
  w.write_scalars(1, {'E': float('nan'), 'rho': 0.5})
  w.close()
  raise_on = lambda c: (_ for _ in ()).throw(ValueError(c))
  rows = [json.loads(l, parse_constant=raise_on) for l in open(tmp_path / 'logs/metrics.jsonl')]
  assert rows == [{'step': 1, 'E': None, 'rho': 0.5}]


def test_progress_from_the_first_step_with_rate_and_eta(capsys):
  def step(state, batch, key):
    del batch, key
    return state + 1.0, {'E': state}

  loop.fit(jnp.zeros(()), step, iter(lambda: {}, None), num_steps=5, key=jax.random.key(0),
           log_every=100, name='m')
  lines = capsys.readouterr().out.splitlines()
  assert lines[0] == '[m] starting at step 0/5; compiling the step'
  assert lines[1].startswith('[m] step 1/5 E=0 | first step ')
  assert lines[-1].startswith('[m] step 5/5 E=4 |') and 'steps/s ETA 0:00:00' in lines[-1]
