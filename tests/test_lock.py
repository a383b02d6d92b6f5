"""The workdir lock: a second run is refused naming the holder; dead or silent holders are
taken over; an unusable workdir is one line, not a traceback.

The holders are real processes: a tiny `python -c` that takes the lock (the lock module
imports nothing heavy) and sleeps; the refused run is the real launcher.
"""

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
from compile_env import fast_compile_env

from cgml_jax.training import lock

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOLD = ('import sys, time; from cgml_jax.training import lock; lock.acquire(sys.argv[1]); '
        'print("locked", flush=True); time.sleep(600)')


def hold(workdir):
  """A process that holds `workdir`'s lock until killed; returns once it holds it."""
  p = subprocess.Popen([sys.executable, '-c', HOLD, str(workdir)], cwd=REPO,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  assert p.stdout.readline().strip() == 'locked', p.stderr.read()
  return p


def launch(workdir, *extra):
  return subprocess.Popen([sys.executable, '-m', 'experiments.run',
                           '--config=experiments/toy.py:smoke', f'--workdir={workdir}', *extra],
                          cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          env=fast_compile_env())


def error_lines(p, timeout=300):
  out, err = p.communicate(timeout=timeout)
  assert 'Traceback' not in out + err, err[-3000:]
  return [l for l in (out + err).splitlines() if l.startswith('error:')], out + err


def test_second_run_is_refused_then_a_dead_holder_is_taken_over(tmp_path, capsys):
  workdir, blocker = tmp_path / 'run', tmp_path / 'file'
  workdir.mkdir()
  blocker.write_text('a file where a directory should be')
  holder = hold(workdir)
  try:
    # Both launches run at once: the refused one, and one whose workdir cannot exist.
    refused, uncreatable = launch(workdir), launch(blocker / 'run')
    lines, out = error_lines(refused)
    assert refused.returncode == 2, out[-3000:]
    assert len(lines) == 1, out[-3000:]
    assert (f'workdir {workdir} is in use by another run: pid {holder.pid} on host '
            f'{socket.gethostname()}, started ') in lines[0]
    assert not (workdir / 'config.json').exists()  # refused before writing anything
    lines, out = error_lines(uncreatable)
    assert uncreatable.returncode == 2, out[-3000:]
    assert lines == [f'error: cannot create workdir {blocker}/run: Not a directory'], out
  finally:
    holder.send_signal(signal.SIGKILL)
    holder.wait()
  # SIGKILL left the holder record behind; the kernel dropped the flock with the process.
  assert f'"pid": {holder.pid}' in (workdir / lock.LOCK_NAME).read_text()
  taken = lock.acquire(str(workdir))
  try:
    assert taken.took_over['pid'] == holder.pid
    assert (f'taking over the lock of {workdir} from pid {holder.pid} on host '
            f'{socket.gethostname()}') in capsys.readouterr().out
    assert lock.acquire(str(workdir)) is taken  # re-entrant within one process
  finally:
    taken.release()
  assert (workdir / lock.LOCK_NAME).read_text() == ''  # a clean release leaves no record


def test_holder_on_another_host_is_taken_over_only_after_the_timeout(tmp_path, capsys):
  path = tmp_path / lock.LOCK_NAME
  path.write_text('{"host": "elsewhere", "pid": 1, "started": "earlier", "token": "t"}\n')
  # A fresh heartbeat: refused, although no process on this host holds the flock.
  with pytest.raises(lock.WorkdirLocked, match='pid 1 on host elsewhere, started earlier'):
    lock.WorkdirLock(str(tmp_path), timeout=60).acquire()
  old = time.time() - 120
  os.utime(path, (old, old))
  with pytest.raises(lock.WorkdirLocked):
    lock.WorkdirLock(str(tmp_path), timeout=600).acquire()
  os.environ[lock.ENV_TIMEOUT] = '60'  # the timeout is configurable
  try:
    taken = lock.acquire(str(tmp_path))
  finally:
    del os.environ[lock.ENV_TIMEOUT]
  try:
    assert taken.timeout == 60 and taken.took_over['host'] == 'elsewhere'
    assert 'no heartbeat for 120 s > the takeover timeout of 60 s' in capsys.readouterr().out
  finally:
    taken.release()
