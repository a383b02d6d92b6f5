"""Checkpoints through `loop.fit`: exact resume, keep-k, corruption, NaN, SIGTERM, config guard,
failed writes, a crash after training.

A tiny hand-written train state (params, Adam state, a statistic, a z table) and a step
that uses its key and its batch, so a resume that lost any of them would diverge.
"""

import errno
import json
import os
import signal
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import struct

from cgml_jax.training import checkpoint, lock, loop, workdir

TX = optax.adam(0.05)


class State(struct.PyTreeNode):
  step: jax.Array
  params: Any
  stats: Any
  opt_state: Any
  z_table: Any
  tx: Any = struct.field(pytree_node=False)


def init_state():
  params = {'w': jnp.linspace(-1.0, 1.0, 6).reshape(2, 3)}
  return State(step=jnp.zeros((), jnp.int32), params=params, stats={'u': jnp.ones(3)},
               opt_state=TX.init(params), z_table=jnp.zeros((16, 3)), tx=TX)


def step_fn(state, batch, key, nan_at=None):
  noise = jax.random.normal(key, (3,))

  def loss(p):
    pred = batch['x'] @ p['w'] + noise
    return jnp.mean((pred - state.stats['u']) ** 2)

  e, g = jax.value_and_grad(loss)(state.params)
  updates, opt_state = state.tx.update(g, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  if nan_at is not None:  # parameters (not the loss) go NaN at step `nan_at`
    params = jax.tree.map(lambda w: jnp.where(state.step + 1 == nan_at, jnp.nan, w), params)
  z = state.z_table.at[batch['index']].add(noise)
  stats = {'u': state.stats['u'] * 0.9 + 0.1 * noise}
  return state.replace(step=state.step + 1, params=params, opt_state=opt_state, stats=stats,
                       z_table=z), {'E': e}


class Batches:
  """Deterministic batches from a position; checkpointable, and it can send a signal
  (SIGTERM by default, `times` times) when it hands out batch `sigterm_at`."""

  def __init__(self, sigterm_at=None, sig=signal.SIGTERM, times=1):
    self.pos, self.sigterm_at, self.sig, self.times = 0, sigterm_at, sig, times

  def get_state(self):
    return {'pos': self.pos}

  def set_state(self, s):
    self.pos = s['pos']

  def __iter__(self):
    return self

  def __next__(self):
    rng = np.random.default_rng(self.pos)
    self.pos += 1
    if self.pos == self.sigterm_at:
      for _ in range(self.times):
        os.kill(os.getpid(), self.sig)
    return {'x': rng.normal(size=(4, 2)).astype(np.float32),
            'index': rng.integers(0, 16, size=4).astype(np.int32)}


def generator_batches():
  it = Batches()
  while True:
    yield next(it)


def run(num_steps, ckpt=None, batches=None, **kw):
  return loop.fit(init_state(), kw.pop('step', step_fn), batches or Batches(),
                  num_steps=num_steps, key=jax.random.key(3), log_every=1000,
                  checkpointer=ckpt, **kw)


def leaves(state):
  return [np.asarray(x) for x in jax.tree.leaves(state)]


def assert_same(a, b):
  for x, y in zip(leaves(a), leaves(b), strict=True):
    np.testing.assert_array_equal(x, y)


@pytest.fixture(scope='module')
def reference():
  return run(10)[0]


@pytest.mark.parametrize('async_save', [False, True])
def test_resume_is_bitwise_and_keeps_k(tmp_path, reference, capsys, async_save):
  d = str(tmp_path / 'ck')
  run(7, checkpoint.Checkpointer(d, every=3, keep=2, async_save=async_save))  # "interrupted"
  ck = checkpoint.Checkpointer(d, every=3, keep=2, async_save=async_save)
  assert ck.all_steps() == [6, 7]  # every 3 plus the end; step 3 pruned (keep 2)
  with open(os.path.join(d, '7', 'data', 'process_0-of-1.json')) as f:
    assert json.load(f) == {'pos': 7}  # the iterator position is in the checkpoint
  batches = Batches()
  state, history = run(10, ck, batches)
  assert 'restored step 7' in capsys.readouterr().out
  assert batches.pos == 10  # continued from 7, did not restart at 0
  assert_same(state, reference)
  assert ck.all_steps() == [9, 10]
  assert [h['step'] for h in history] == [7, 10]  # history restored from the checkpoint
  # A finished run restores and returns without training.
  batches = Batches()
  state, _ = run(10, checkpoint.Checkpointer(d, every=3, keep=2), batches)
  out = capsys.readouterr().out
  assert 'already trained' in out and '[train] step' not in out and batches.pos == 10
  assert_same(state, reference)


def test_plain_iterator_is_fast_forwarded(tmp_path, reference):
  d = str(tmp_path / 'ck')
  run(5, checkpoint.Checkpointer(d, every=5), generator_batches())
  state, _ = run(10, checkpoint.Checkpointer(d, every=5), generator_batches())
  assert_same(state, reference)


def test_corrupted_or_partial_latest_uses_previous(tmp_path, capsys):
  d = str(tmp_path / 'ck')
  run(6, checkpoint.Checkpointer(d, every=3, keep=5))
  # Step 6 loses its array data (a truncated copy, a disk error); step 9 is a partial
  # write that never got renamed (a kill during save).
  for root, _, files in os.walk(os.path.join(d, '6', 'state')):
    for f in files:
      if f != '_METADATA' and 'commit' not in f:
        with open(os.path.join(root, f), 'r+b') as fh:
          fh.truncate(3)
  os.makedirs(os.path.join(d, '9.orbax-checkpoint-tmp-123', 'state'))
  ck = checkpoint.Checkpointer(d, every=3, keep=5)
  restored = ck.restore_latest(loop.parallel.replicate(init_state(), loop.parallel.make_mesh()),
                               key=jax.random.key(3), iterator=Batches())
  out = capsys.readouterr().out
  assert restored.step == 3, out
  assert 'step 6' in out and 'unreadable' in out
  assert os.listdir(os.path.join(d, 'corrupted'))[0].startswith('6-')
  assert ck.all_steps() == [3]
  # Training then continues from 3 and matches an uninterrupted run.
  state, _ = run(6, ck)
  assert_same(state, run(6)[0])


def test_checkpoint_of_another_model_is_refused_not_discarded(tmp_path):
  d = str(tmp_path / 'ck')
  run(3, checkpoint.Checkpointer(d, every=3))
  bigger = init_state().replace(z_table=jnp.zeros((32, 3)))
  with pytest.raises(checkpoint.CheckpointMismatchError, match=r'\(32, 3\)'):
    checkpoint.Checkpointer(d, every=3).restore_latest(bigger, key=jax.random.key(3))
  assert checkpoint.Checkpointer(d, every=3).all_steps() == [3]  # still there


def test_nan_in_parameters_names_step_and_keeps_last_good(tmp_path):
  d = str(tmp_path / 'ck')
  ck = checkpoint.Checkpointer(d, every=2, keep=5)
  step = lambda s, b, k: step_fn(s, b, k, nan_at=5)
  with pytest.raises(loop.NonFiniteError, match=r'step 5: the parameters') as e:
    run(10, ck, step=step)
  assert 'last good checkpoint is step 4' in str(e.value)
  assert ck.all_steps() == [2, 4]
  restored = ck.restore_latest(init_state(), key=jax.random.key(3))
  assert all(np.isfinite(x).all() for x in leaves(restored.state.params))


def test_sigterm_saves_and_stops(tmp_path, reference):
  d = str(tmp_path / 'ck')
  with pytest.raises(loop.Preempted) as e:
    run(10, checkpoint.Checkpointer(d, every=100), Batches(sigterm_at=4))
  assert e.value.step == 4 and 'step 4' in str(e.value)
  ck = checkpoint.Checkpointer(d, every=100)
  assert ck.all_steps() == [4]
  assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handler restored
  state, _ = run(10, ck)
  assert_same(state, reference)


def test_ctrl_c_saves_and_stops_like_sigterm(tmp_path, reference):
  d = str(tmp_path / 'ck')
  with pytest.raises(loop.Preempted) as e:
    run(10, checkpoint.Checkpointer(d, every=100), Batches(sigterm_at=4, sig=signal.SIGINT))
  assert e.value.step == 4 and e.value.signum == signal.SIGINT
  assert str(e.value).startswith('interrupted (Ctrl-C) after step 4; checkpoint at step 4')
  assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored
  ck = checkpoint.Checkpointer(d, every=100)
  assert ck.all_steps() == [4]
  state, _ = run(10, ck)
  assert_same(state, reference)


def test_second_ctrl_c_aborts_at_once(tmp_path):
  d = str(tmp_path / 'ck')
  with pytest.raises(KeyboardInterrupt):
    run(10, checkpoint.Checkpointer(d, every=100),
        Batches(sigterm_at=4, sig=signal.SIGINT, times=2))
  assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


_CTRL_C_IN_COMPILE = """
import atexit, os, signal, sys, threading, traceback
import jax, jax.numpy as jnp
from cgml_jax.training import loop
signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal
atexit.register(lambda: print('exit handlers ran', flush=True))
def f(x):
  for i in range(4000):  # a graph that takes XLA a few seconds to compile
    x = jnp.sin(x) * 1.0001 + i
  return x
lowered = jax.jit(f).lower(1.0)
threading.Timer(0.3, lambda: os.kill(os.getpid(), signal.SIGINT)).start()
try:
  lowered.compile()
  print('compiled first', flush=True)
except KeyboardInterrupt:
  print('interrupted in', traceback.extract_tb(sys.exc_info()[2])[-1].name, flush=True)
  loop.exit_interrupted(130)
"""


def test_exit_after_ctrl_c_during_compilation_is_clean():
  """Ctrl-C that lands in an XLA compilation: plain `sys.exit` then crashes in the
  interpreter's teardown (SIGSEGV); `exit_interrupted` ends with the given status, after
  the exit handlers."""
  import subprocess
  import sys
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  p = subprocess.run([sys.executable, '-c', _CTRL_C_IN_COMPILE], cwd=root,
                     capture_output=True, text=True, timeout=300)
  if 'compiled first' in p.stdout:
    pytest.skip('the compilation finished before the signal')
  assert 'interrupted in' in p.stdout, p.stdout + p.stderr
  assert p.returncode == 130, p.stdout + p.stderr
  assert 'Fatal Python error' not in p.stderr and 'exit handlers ran' in p.stdout


def test_training_time_is_kept_in_the_checkpoint(tmp_path):
  d = str(tmp_path / 'ck')
  first = {}
  run(6, checkpoint.Checkpointer(d, every=3), timing=first)
  again = {}
  run(6, checkpoint.Checkpointer(d, every=3), timing=again)  # already trained
  assert first['train_seconds'] > 0 and again['train_seconds'] == first['train_seconds']


def test_prepare_writes_nothing_but_the_lock(tmp_path):
  """A run refused after `prepare` (its data missing) leaves no config.json that would
  refuse the corrected command; `fit_method` records it once training starts."""
  config = ml_collections.ConfigDict({
      'train': {'steps': 2, 'log_every': 1},
      'checkpoint': {'every': 5, 'keep': 1, 'async_save': False,
                     'allow_config_mismatch': False},
      'logging': {'tensorboard': True}})
  wd = str(tmp_path / 'run')
  try:
    writer = workdir.prepare(config, wd)
    assert sorted(os.listdir(wd)) == ['workdir.lock']
    workdir.fit_method(init_state(), step_fn, Batches(), config, wd, 'm', 'task/m',
                       jax.random.key(3), writer=writer)
    writer.close()
  finally:
    lock._HELD[os.path.abspath(wd)].release()
  assert {'config.json', 'logs', 'checkpoints'} <= set(os.listdir(wd))


def test_config_guard(tmp_path):
  cfg = ml_collections.ConfigDict({'seed': 0, 'train': {'lr': 1e-3, 'log_every': 10},
                                   'modes': (4.0, -4.0)})
  assert checkpoint.check_workdir_config(str(tmp_path), cfg) == {}
  assert checkpoint.check_workdir_config(str(tmp_path), cfg) == {}  # a resume: same config
  cfg.train.log_every = 99  # logging may change on resume
  assert checkpoint.check_workdir_config(str(tmp_path), cfg) == {}
  cfg.train.lr = 0.1
  cfg.modes = (4.0, 2.0)
  with pytest.raises(checkpoint.ConfigMismatchError) as e:
    checkpoint.check_workdir_config(str(tmp_path), cfg)
  msg = str(e.value)
  assert 'train.lr: saved 0.001 != new 0.1' in msg and 'modes' in msg and 'seed' not in msg
  assert 'allow_config_mismatch' in msg
  diff = checkpoint.check_workdir_config(str(tmp_path), cfg, allow_mismatch=True)
  assert set(diff) == {'train.lr', 'modes'}
  assert checkpoint.check_workdir_config(str(tmp_path), cfg) == {}  # now recorded
  other = tmp_path / 'other'
  assert checkpoint.check_workdir_config(str(other), cfg, record=False) == {}
  assert not other.exists()


def test_failed_write_is_one_line_keeps_previous_and_resumes_exactly(tmp_path, reference,
                                                                     monkeypatch):
  """The disk fills up part-way through checkpoint 6: the state item is being written when
  the data item's write fails with ENOSPC."""
  d = str(tmp_path / 'ck')
  save = checkpoint.IteratorHandler.save

  def disk_full_at_6(self, directory, args):
    if os.path.basename(os.path.dirname(str(directory))).startswith('6.'):  # 6.<orbax tmp>
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(directory))
    return save(self, directory, args)

  monkeypatch.setattr(checkpoint.IteratorHandler, 'save', disk_full_at_6)
  ck = checkpoint.Checkpointer(d, every=3, keep=5)
  with pytest.raises(checkpoint.CheckpointWriteError) as e:
    run(10, ck)
  ck.close()  # the failure is not raised a second time
  msg = str(e.value)
  assert '\n' not in msg and f'writing checkpoint 6 to {d} failed' in msg, msg
  assert 'No space left on device' in msg and 'newest complete checkpoint is step 3' in msg
  monkeypatch.undo()
  ck = checkpoint.Checkpointer(d, every=3, keep=5)
  assert ck.all_steps() == [3]  # the partial 6 is no checkpoint; 3 is intact
  state, _ = run(10, ck)
  assert_same(state, reference)


def test_crash_after_training_does_not_train_again(tmp_path, reference, capsys):
  """Evaluation raises once after training finished: the next run restores the final
  checkpoint and runs no step (through `workdir.prepare`/`fit_method`, as every task)."""
  config = ml_collections.ConfigDict({
      'train': {'steps': 10, 'log_every': 5},
      'checkpoint': {'every': 5, 'keep': 2, 'async_save': False,
                     'allow_config_mismatch': False},
      'logging': {'tensorboard': False}})
  workdir_ = str(tmp_path / 'run')

  def task(evaluate):
    writer = workdir.prepare(config, workdir_)
    state, _, _ = workdir.fit_method(init_state(), step_fn, Batches(), config, workdir_, 'm',
                                     'task/m', jax.random.key(3), writer=writer)
    writer.close()
    return evaluate(state)

  def broken_evaluation(state):
    raise RuntimeError('evaluation failed')

  try:
    with pytest.raises(RuntimeError, match='evaluation failed'):
      task(broken_evaluation)
    assert '[task/m] step 10/10' in capsys.readouterr().out
    state = task(lambda s: s)
  finally:
    lock._HELD[os.path.abspath(workdir_)].release()  # this process took the workdir's lock
  out = capsys.readouterr().out
  assert '[task/m] already trained to step 10' in out and '[task/m] step' not in out, out
  assert_same(state, reference)
