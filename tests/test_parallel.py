"""Data parallelism: 1 device vs 4 forced CPU devices vs 2 processes x 2 devices.

XLA_FLAGS must be set before jax is imported, so every configuration runs
`tests/parallel_helper.py` in its own process; the three run concurrently.
"""

import json
import os
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest
from compile_env import fast_compile_env

from cgml_jax.training import parallel

HERE = os.path.dirname(os.path.abspath(__file__))
HELPER = os.path.join(HERE, 'parallel_helper.py')


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _start(out, devices, env=None, *extra):
  return subprocess.Popen([sys.executable, HELPER, f'--devices={devices}', f'--out={out}',
                           *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=fast_compile_env(**(env or {})))


def _result(p, timeout=400):
  try:
    out, err = p.communicate(timeout=timeout)
  except subprocess.TimeoutExpired:
    p.kill()
    out, err = p.communicate()
  assert p.returncode == 0, err[-3000:]
  lines = [l for l in out.splitlines() if l.startswith('{')]
  assert lines, out[-2000:] + err[-2000:]
  return json.loads(lines[-1])


def test_one_vs_four_devices_vs_two_processes(tmp_path):
  port = _free_port()
  dist = lambda i: {parallel.ENV_COORDINATOR: f'localhost:{port}',
                    parallel.ENV_NUM_PROCESSES: '2', parallel.ENV_PROCESS_ID: str(i)}
  procs = {
      'one': _start(tmp_path / 'one.npz', 1),
      'four': _start(tmp_path / 'four.npz', 4, None, '--uneven=6'),
      'mp0': _start(tmp_path / 'mp.npz', 2, dist(0)),
      'mp1': _start(tmp_path / 'mp.npz', 2, dist(1)),
  }
  info = {k: _result(p) for k, p in procs.items()}
  assert info['one']['devices'] == 1 and info['four']['devices'] == 4
  assert info['mp0']['devices'] == 4 and info['mp0']['processes'] == 2
  # The batch really is split over `data`, the state really is replicated.
  assert info['four']['batch_spec'] == "P('data',)" and info['four']['batch_shards'] == 4
  assert info['mp1']['batch_shards'] == 2  # this process holds 2 of the 4 shards
  assert all(i['params_replicated'] for i in info.values())
  # An uneven global batch fails with the numbers in the message.
  assert 'global batch size 6 is not divisible by the 4 devices' in info['four']['uneven_error']
  one = np.load(tmp_path / 'one.npz')
  for name in ('four', 'mp'):
    other = np.load(tmp_path / f'{name}.npz')
    assert set(other.files) == set(one.files)
    diff = max(float(np.abs(one[k] - other[k]).max()) for k in one.files)
    print(f'max |params_1 - params_{name}| = {diff:.3g}')
    assert diff <= 1e-5, (name, diff)
  # The steps did move the parameters and the persistent z table.
  trained = [k for k in one.files if not k.startswith('init')]
  assert "['z_table']" in trained
  assert max(float(np.abs(one[k] - one['init' + k]).max()) for k in trained) > 1e-2


def test_single_process_helpers():
  mesh = parallel.make_mesh()
  assert mesh.axis_names == ('data',)
  assert parallel.process_batch_size(8, mesh) == 8
  with pytest.raises(ValueError, match='scalar'):
    parallel.shard_batch({'x': np.float32(1.0)}, mesh)
  # Nothing configured: no distributed initialisation, no error.
  env = {k: os.environ.pop(k) for k in (parallel.ENV_COORDINATOR, parallel.ENV_NUM_PROCESSES,
                                        parallel.ENV_PROCESS_ID) if k in os.environ}
  try:
    assert parallel.initialize_distributed() is False
    with pytest.raises(ValueError, match='JAX_PROCESS_ID'):
      parallel.initialize_distributed('localhost:1', 2, None)
  finally:
    os.environ.update(env)


PREEMPT_HELPER = os.path.join(HERE, 'preempt_helper.py')


def _start_pair(workdir, out, *extra):
  """Two processes of `preempt_helper.py` joined on a fresh localhost port."""
  port = _free_port()
  procs = []
  for i in range(2):
    env = fast_compile_env(**{parallel.ENV_COORDINATOR: f'localhost:{port}',
                              parallel.ENV_NUM_PROCESSES: '2', parallel.ENV_PROCESS_ID: str(i)})
    procs.append(subprocess.Popen(
        [sys.executable, PREEMPT_HELPER, f'--workdir={workdir}', f'--out={out}', *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
  return procs


def _wait(p, timeout=300):
  try:
    out, err = p.communicate(timeout=timeout)
  except subprocess.TimeoutExpired:
    p.kill()
    out, err = p.communicate()
  return p.returncode, out, err


def test_sigterm_to_one_process_stops_all_at_the_same_step(tmp_path):
  """SIGTERM reaches only process 1 of 2 (as on a pod, where one host is told first): both
  checkpoint the same step and exit with 143, and the resumed run ends bitwise equal to an
  uninterrupted one (which the same processes train first, see `preempt_helper.py`)."""
  run = _start_pair(tmp_path / 'run', tmp_path / 'run.npz', f'--reference={tmp_path}/ref.npz',
                    '--pace=0.1')
  lines = []
  for line in run[0].stdout:  # process 0 reports progress
    lines.append(line)
    if '[train] step 5/60 ' in line:
      run[1].send_signal(signal.SIGTERM)
      break
  results = [_wait(p) for p in run]
  outs = [''.join(lines) + results[0][1], results[1][1]]
  for rc, out, err in results:
    assert rc == 143, out[-2000:] + err[-3000:]
  stops = [int(o.split('preempted (SIGTERM) after step ')[1].split(';')[0]) for o in outs]
  assert stops[0] == stops[1] and 5 <= stops[0] < 60, (stops, outs)
  assert f'saved step {stops[0]} ' in outs[0]
  resumed = [_wait(p) for p in _start_pair(tmp_path / 'run', tmp_path / 'run.npz')]
  for rc, out, err in resumed:
    assert rc == 0, out[-2000:] + err[-3000:]
  assert f'restored step {stops[0]} ' in resumed[0][1]
  a, b = np.load(tmp_path / 'ref.npz'), np.load(tmp_path / 'run.npz')
  assert set(a.files) == set(b.files) and a.files
  for k in a.files:
    np.testing.assert_array_equal(a[k], b[k], err_msg=k)
