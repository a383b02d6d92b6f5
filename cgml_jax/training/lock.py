"""An exclusive lock on a workdir, held for the lifetime of the run that writes it.

Two runs writing one workdir would interleave checkpoints, prune each other's steps and
overwrite each other's metrics. A run therefore takes `<workdir>/workdir.lock` before it
writes anything (in a multi-host run only process 0 does; see `workdir.prepare`):

- The lock is `fcntl.flock` on that file, held until the process exits. The kernel drops
  it when the process dies however it dies (SIGKILL, OOM kill, power loss of the host), so
  on one host a crashed run never leaves a lock behind.
- The file also holds who took it (host, pid, start time), for the refusal message, and
  its mtime is a heartbeat that the holder renews every `heartbeat_interval(timeout)`
  seconds, for holders on other hosts, whose pid cannot be checked and whose flock a
  shared filesystem may not enforce.

A second run is refused (`WorkdirLocked`, one line naming the holder) while the holder is
alive. The lock is taken over, with a message, when the recorded holder is on this host
and its flock is gone (the process died), or on another host and its heartbeat is older
than the takeover timeout: `DEFAULT_TIMEOUT` seconds, or `$CGML_LOCK_TIMEOUT`, or the
`timeout` argument.

Cross-host exclusion is only as strong as the filesystem: where flock is shared between
hosts (local disks, NFSv4, Lustre mounted with `flock`) two live runs are always kept
apart; elsewhere the heartbeat keeps a second run out once the first has written its
holder record, which it does right after starting.

This module imports nothing heavy, so that a tiny process can take or inspect a lock.
"""

from __future__ import annotations

import atexit
import datetime
import errno
import fcntl
import json
import os
import socket
import sys
import threading
import time
import uuid

LOCK_NAME = 'workdir.lock'
ENV_TIMEOUT = 'CGML_LOCK_TIMEOUT'
# A run on another host is presumed dead after this long without a heartbeat. Ten
# heartbeats fit in it, so a holder that is merely slow (a loaded NFS server, a long
# compilation holding the CPU) is not taken over.
DEFAULT_TIMEOUT = 600.0


class WorkdirError(Exception):
  """The workdir cannot be used: it cannot be created or written, or another run holds it."""


class WorkdirLocked(WorkdirError):
  """Another live run holds the workdir's lock."""


def lock_timeout(timeout: float | None = None) -> float:
  """The takeover timeout in seconds: `timeout`, else $CGML_LOCK_TIMEOUT, else the default."""
  if timeout is None:
    raw = os.environ.get(ENV_TIMEOUT, '')
    try:
      timeout = float(raw) if raw else DEFAULT_TIMEOUT
    except ValueError:
      raise WorkdirError(f'{ENV_TIMEOUT}={raw!r} is not a number of seconds') from None
  if timeout <= 0:
    raise WorkdirError(f'lock timeout must be > 0 seconds, got {timeout}')
  return float(timeout)


def heartbeat_interval(timeout: float) -> float:
  """Seconds between heartbeats: a tenth of the takeover timeout, within [0.5 s, 60 s]."""
  return min(60.0, max(0.5, timeout / 10))


def _now_text(t: float) -> str:
  return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime(
      '%Y-%m-%d %H:%M:%S UTC')


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True  # exists, owned by another user
  return True


def describe(holder: dict | None) -> str:
  """'pid 12 on host h, started <UTC time>' (or what is known of it)."""
  if not holder:
    return 'an unknown process (no holder record in the lock file)'
  return (f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}, started "
          f"{holder.get('started', '?')}")


def read_holder(path: str) -> dict | None:
  """The holder record of lock file `path`, or None if there is none (or it is unreadable)."""
  try:
    with open(path) as f:
      text = f.read()
  except OSError:
    return None
  try:
    holder = json.loads(text) if text.strip() else None
  except ValueError:
    return None  # being written right now, or garbage
  return holder if isinstance(holder, dict) else None


class WorkdirLock:
  """The lock of one workdir, held by this process. Use `acquire`, not the constructor."""

  def __init__(self, workdir: str, timeout: float, log=None):
    self.workdir = os.path.abspath(workdir)
    self.path = os.path.join(self.workdir, LOCK_NAME)
    self.timeout, self.log = timeout, log
    self.token = uuid.uuid4().hex
    self._fd: int | None = None
    self._stop = threading.Event()
    self._thread: threading.Thread | None = None
    self.took_over: dict | None = None  # the previous holder's record, if taken over

  def _say(self, msg: str):
    print(msg, file=self.log or sys.stdout, flush=True)

  def _open(self) -> int:
    try:
      return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
      raise WorkdirError(f'cannot create the lock file {self.path}: '
                         f'{e.strerror or e}') from None

  def _try_flock(self, fd: int) -> bool | None:
    """True if flock was taken, False if another process holds it, None if unsupported."""
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
      return True
    except BlockingIOError:
      return False
    except OSError as e:
      if e.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
        return None  # e.g. some FUSE filesystems; rely on the holder record alone
      raise

  def _stale_reason(self, holder: dict | None, have_flock: bool | None) -> str | None:
    """Why the recorded holder no longer holds the workdir, or None if it still does."""
    if not holder or holder.get('token') == self.token:
      return '' if have_flock is not False else None
    same_host = holder.get('host') == socket.gethostname()
    if same_host:
      if have_flock:
        return 'that process is gone'  # the kernel released its flock
      if have_flock is None and not _pid_alive(int(holder.get('pid', -1))):
        return 'that process is gone'
      return None
    try:
      age = time.time() - os.stat(self.path).st_mtime
    except OSError:
      return None
    if age > self.timeout:
      return f'no heartbeat for {age:.0f} s > the takeover timeout of {self.timeout:.0f} s'
    return None

  def acquire(self) -> 'WorkdirLock':
    """Takes the lock, or takes it over from a dead or silent holder (with a message).

    Returns:
      self, holding the lock until `release` or the end of the process.

    Raises:
      WorkdirLocked: a live holder has it.
      WorkdirError: the lock file cannot be created.
    """
    fd = self._open()
    try:
      have_flock = self._try_flock(fd)
      holder = read_holder(self.path)
      if not holder and have_flock is False:
        # The holder is between taking flock and writing its record: read once more.
        time.sleep(0.2)
        holder = read_holder(self.path)
      reason = self._stale_reason(holder, have_flock)
      if reason is None:
        since = ''
        try:
          since = f', last heartbeat {time.time() - os.stat(self.path).st_mtime:.0f} s ago'
        except OSError:
          pass
        raise WorkdirLocked(
            f'workdir {self.workdir} is in use by another run: {describe(holder)}{since}. '
            'Wait for it to end, or use another --workdir.')
      if reason:
        self.took_over = holder
        self._say(f'[workdir] taking over the lock of {self.workdir} from '
                  f'{describe(holder)}: {reason}')
      now = time.time()
      record = {'host': socket.gethostname(), 'pid': os.getpid(), 'started': _now_text(now),
                'argv': sys.argv[:8], 'token': self.token}
      os.ftruncate(fd, 0)
      os.pwrite(fd, (json.dumps(record) + '\n').encode(), 0)
      os.fsync(fd)
    except BaseException:
      os.close(fd)
      raise
    self._fd = fd
    self._thread = threading.Thread(target=self._heartbeat, name='workdir-lock-heartbeat',
                                    daemon=True)
    self._thread.start()
    return self

  def _heartbeat(self):
    while not self._stop.wait(heartbeat_interval(self.timeout)):
      try:
        os.utime(self.path)
      except OSError:
        pass  # a transient filesystem error; the next beat retries

  @property
  def held(self) -> bool:
    return self._fd is not None

  def release(self):
    """Clears the holder record (if still ours) and drops the lock."""
    if self._fd is None:
      return
    self._stop.set()
    fd, self._fd = self._fd, None
    try:
      holder = read_holder(self.path)
      if holder is None or holder.get('token') == self.token:
        os.ftruncate(fd, 0)  # a clean end: the next run takes the lock without a message
    except OSError:
      pass
    finally:
      os.close(fd)  # also drops the flock
      _HELD.pop(self.workdir, None)


# Locks held by this process, by absolute workdir: a second `acquire` of the same workdir
# in one process (a notebook running two experiments into it) reuses the lock, since
# flock would otherwise refuse the process its own workdir.
_HELD: dict[str, WorkdirLock] = {}


def acquire(workdir: str, *, timeout: float | None = None, log=None) -> WorkdirLock:
  """Takes the lock of `workdir` (which must exist) for this process, until exit or release.

  Args:
    workdir: the run's directory.
    timeout: seconds without a heartbeat after which a holder on another host is presumed
      dead (default: $CGML_LOCK_TIMEOUT or `DEFAULT_TIMEOUT`).
    log: stream for the takeover message (default stdout).

  Returns:
    The held lock (the same object on repeated calls in one process).

  Raises:
    WorkdirLocked: another live run holds it; the message names it.
    WorkdirError: the lock file cannot be created.
  """
  key = os.path.abspath(workdir)
  if key in _HELD:
    return _HELD[key]
  lock = WorkdirLock(key, lock_timeout(timeout), log).acquire()
  _HELD[key] = lock
  return lock


@atexit.register
def _release_all():
  for lock in list(_HELD.values()):
    lock.release()
