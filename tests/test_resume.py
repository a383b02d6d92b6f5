"""Exact auto-resume of the real launcher after SIGKILL, SIGTERM and Ctrl-C mid-run.

Run A trains uninterrupted. Run B is the same command, killed with SIGKILL as soon as it
reports a checkpoint of the last method, cgml (no sleeps: the kill follows the process's
own report, and plenty of steps remain, so it always lands mid-run). Run B' is the same
command again: it must restore the two finished methods without retraining, resume cgml
from its checkpoint (after a further SIGTERM, which must checkpoint and exit with
status 143, and a SIGINT, Ctrl-C, which must do the same with status 130), and end with
parameters, optimiser states, spectral-norm statistics, persistent z table and iterator
position bitwise equal to run A's. Running it once more trains nothing and keeps the
recorded training times.

The runs share a persistent compilation cache (A fills it, B and B' load from it): that
cuts the test's CPU time by two thirds and cannot change results, since B and B' then run
the very executables A ran. They also compile with LLVM's -O0 (`compile_env`, as the
other launcher tests do); A, B and B' all use it, so the bitwise comparison is between
identical programs.
"""

import glob
import json
import math
import os
import signal
import subprocess
import sys
import threading

import numpy as np
import orbax.checkpoint as ocp
from compile_env import fast_compile_env

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 40  # checkpoints every 10: the kill lands at 10, SIGTERM at 20, SIGINT at 30 of 40
# The toy's default methods (l1, cgml_no_rho, cgml): run A is also the launcher smoke test
# (metrics.json, progress line) that tests/test_run.py keeps among the slow tests.
METHODS = ('l1', 'cgml_no_rho', 'cgml')
ARGS = ['--config=experiments/toy.py:smoke', f'--config.train.steps={STEPS}',
        '--config.checkpoint.every=10', '--config.latent.init=persistent']


# The launcher, with Ctrl-C handled as in a terminal: a test run from a background job of
# a shell without job control inherits SIGINT ignored, and the launcher leaves an ignored
# SIGINT alone.
LAUNCH = ('import signal\nsignal.signal(signal.SIGINT, signal.default_int_handler)\n'
          'from experiments import run\nrun.launch()')


def start(workdir, cache):
  env = fast_compile_env(JAX_COMPILATION_CACHE_DIR=str(cache),
                         JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0',
                         JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES='0')
  # stderr to a file: a full stderr pipe would block the child while we read stdout.
  err = open(f'{workdir}.stderr', 'a+')
  p = subprocess.Popen([sys.executable, '-c', LAUNCH, *ARGS, f'--workdir={workdir}'],
                       cwd=REPO, stdout=subprocess.PIPE, stderr=err, text=True, env=env)
  p.err = err
  return p


def stderr(p):
  p.err.seek(0)
  return p.err.read()


def finish(p, timeout=400):
  out, _ = p.communicate(timeout=timeout)
  assert p.returncode == 0, stderr(p)[-3000:]
  return out


def run_until(p, needle, sig=signal.SIGKILL, timeout=400):
  """Reads p's stdout until a line contains `needle`; then sends `sig`. Returns the output."""
  watchdog = threading.Timer(timeout, p.kill)
  watchdog.start()
  lines = []
  try:
    for line in p.stdout:
      lines.append(line)
      if needle in line:
        p.send_signal(sig)
        break
  finally:
    watchdog.cancel()
  out, _ = p.communicate()
  return ''.join(lines) + out


def final_checkpoint(workdir, method):
  d = os.path.join(workdir, 'checkpoints', method, str(STEPS))
  state = ocp.StandardCheckpointer().restore(os.path.join(d, 'state'))
  with open(os.path.join(d, 'data', 'process_0-of-1.json')) as f:
    data = json.load(f)
  return state, data


def flat(tree):
  import jax
  return {jax.tree_util.keystr(k): np.asarray(v)
          for k, v in jax.tree_util.tree_leaves_with_path(tree)}


def strict_json(path):
  """metrics.json, read as strict JSON: NaN and Infinity are not JSON."""
  def refuse(constant):
    raise ValueError(f'{path} holds {constant}')
  with open(path) as f:
    return json.load(f, parse_constant=refuse)


def test_sigkill_mid_run_then_resume_matches_uninterrupted(tmp_path):
  ref_dir, dir_, cache = tmp_path / 'ref', tmp_path / 'run', tmp_path / 'cache'
  out_a = finish(start(ref_dir, cache))
  # The launcher smoke checks: every default method trained, progress from the first step
  # with ETA, rho, lr, the closing table and the files written.
  ref_methods = strict_json(ref_dir / 'metrics.json')['methods']
  assert set(ref_methods) == set(METHODS)
  for m, r in ref_methods.items():   # every optimiser still moves at the last step
    assert r['final_update_norm'] and min(r['final_update_norm'].values()) > 0, m
  assert 'ETA' in out_a and 'rho=' in out_a and 'lr=' in out_a
  assert '[toy/l1] starting at step 0/40' in out_a and '[toy/l1] step 1/40 ' in out_a
  table = out_a[out_a.index('\nmethod '):].splitlines()[1:]
  assert table[0].split()[:3] == ['method', 'coverage', 'phantom_rate'], table
  assert [row.split()[0] for row in table[2:5]] == list(METHODS), table
  assert table[5] == f'wrote to {ref_dir}: config.json, metrics.json, logs/, checkpoints/'
  assert glob.glob(str(ref_dir / 'logs' / 'events.out.tfevents.*'))  # TensorBoard on
  cgml_dir = f'{dir_}/checkpoints/cgml '  # the space: not checkpoints/cgml_no_rho
  killed = start(dir_, cache)
  out_b = run_until(killed, f'saved step 10 to {cgml_dir}')
  assert killed.returncode == -signal.SIGKILL, out_b[-2000:]
  assert not os.path.exists(dir_ / 'metrics.json')  # it really died mid-run
  # Preemption: SIGTERM makes the launcher checkpoint the current step and exit with 143.
  term = start(dir_, cache)
  out_t = run_until(term, f'saved step 20 to {cgml_dir}', sig=signal.SIGTERM)
  assert term.returncode == 143, out_t[-2000:] + stderr(term)[-2000:]
  assert 'preempted (SIGTERM) after step' in out_t and 'Traceback' not in out_t
  # Ctrl-C: the same, with status 130.
  interrupted = start(dir_, cache)
  out_i = run_until(interrupted, f'saved step 30 to {cgml_dir}', sig=signal.SIGINT)
  assert interrupted.returncode == 130, out_i[-2000:] + stderr(interrupted)[-2000:]
  assert 'interrupted (Ctrl-C) after step' in out_i and 'Traceback' not in out_i
  assert 'Traceback' not in stderr(interrupted)
  out_c = finish(start(dir_, cache))

  # The finished methods were restored, not retrained; the last resumed mid-way.
  for done in METHODS[:2]:
    assert f'restored step {STEPS} from {dir_}/checkpoints/{done} ' in out_c
    assert f'[toy/{done}] already trained' in out_c and f'[toy/{done}] step' not in out_c
  resumed = [l for l in out_c.splitlines() if f'from {cgml_dir}' in l][0]
  assert 30 <= int(resumed.split('restored step ')[1].split()[0]) < STEPS, resumed

  for method in METHODS:
    (a, data_a), (b, data_b) = final_checkpoint(ref_dir, method), final_checkpoint(dir_, method)
    fa, fb = flat(a), flat(b)
    assert fa.keys() == fb.keys()
    if method != 'l1':
      assert any('z_table' in k for k in fa) and any('sigma' in k for k in fa)
    for k in fa:
      np.testing.assert_array_equal(fa[k], fb[k], err_msg=f'{method} {k}')
    assert data_a == data_b
  ma, mb = (strict_json(d / 'metrics.json')['methods'] for d in (ref_dir, dir_))
  seconds = {m: mb[m]['train_seconds'] for m in mb}
  for m in ma:
    ma[m].pop('train_seconds'), mb[m].pop('train_seconds')
  assert ma == mb

  # A rerun of the finished workdir trains nothing and keeps the recorded training times.
  out_d = finish(start(dir_, cache))
  assert '[toy/cgml] already trained' in out_d
  again = strict_json(dir_ / 'metrics.json')['methods']
  assert {m: again[m]['train_seconds'] for m in again} == seconds
  assert all(math.isfinite(s) and s > 0 for s in seconds.values())
