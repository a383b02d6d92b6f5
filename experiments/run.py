"""Launcher: flags -> config -> `cgml_jax.train.train_and_evaluate(config, workdir)`.

Deliberately short; everything else lives in the library so notebooks and tests call the
same function. Example:

  python -m experiments.run --config=experiments/toy.py --workdir=runs/toy \
      --config.train.steps=1000

Config overrides use ml_collections syntax; the config is locked, so an unknown key is an
error rather than a silently ignored typo.

Running the same command again resumes from the checkpoints in the workdir. While a run is
going, its workdir is locked: the same command started a second time is refused (see
`cgml_jax.training.lock`). Exit status:

  0    done
  1    the run failed and said why in one line (a non-finite value, a checkpoint write
       failure); the newest complete checkpoint is intact, so the same command resumes
  2    nothing was run: a bad flag or config, a workdir that cannot be created or written,
       or a workdir held by another run (one line naming it)
  143  preempted (SIGTERM to any one process): the state was checkpointed, run the same
       command again to resume (128 + SIGTERM, so that schedulers restart it)
"""

import ast
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from cgml_jax import train
from cgml_jax.training import checkpoint, lock, loop, workdir

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Path to a config file (get_config).',
                                lock_config=True)
flags.DEFINE_string('workdir', None, 'Directory for metrics, images and checkpoints.')
flags.DEFINE_float('lock_timeout', None,
                   'Seconds without a heartbeat after which the workdir lock of a run on '
                   f'another host is taken over (default ${lock.ENV_TIMEOUT} or '
                   f'{lock.DEFAULT_TIMEOUT:.0f}).')
flags.DEFINE_bool('traceback', False, 'Show the full traceback of errors that are otherwise '
                  'reported in one line.')
flags.mark_flags_as_required(['config', 'workdir'])

EXIT_FAILED, EXIT_USAGE, EXIT_PREEMPTED = 1, 2, 143

# Errors that name their problem and what to do in the message: a traceback adds nothing.
USAGE_ERRORS = (workdir.WorkdirError, checkpoint.ConfigMismatchError,
                checkpoint.CheckpointMismatchError)
RUN_ERRORS = (checkpoint.CheckpointWriteError, loop.NonFiniteError)


def one_line(error: BaseException) -> str:
  """The message of `error` on one line (a multi-line message's lines joined by '; ')."""
  text = str(error)
  if isinstance(error, (KeyError, AttributeError)) and text[:1] in '\'"':
    try:  # a KeyError's message is the repr of its key (ml_collections puts a hint in it)
      text = str(ast.literal_eval(text))
    except (ValueError, SyntaxError):
      pass
  if 'Traceback (most recent call last)' in text:
    # absl wraps an exception raised while loading the config file together with its
    # traceback; its last line is the exception itself.
    text = [l for l in text.splitlines() if l.strip()][-1]
  lines = [l.strip() for l in text.splitlines() if l.strip()]
  return '; '.join(lines).replace(':;', ':') or type(error).__name__


def fail(status: int, message: str):
  print(f'error: {message}', file=sys.stderr, flush=True)
  sys.exit(status)


def parse_flags(argv):
  """absl's flag parsing, with a bad flag or config override reported in one line."""
  try:
    return FLAGS(argv)
  except flags.Error as e:
    fail(EXIT_USAGE, f'{one_line(e)} (see --helpshort)')
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    # ml_collections raises these for an unknown config field or a value of the wrong
    # type, e.g. --config.train.stepz=5.
    fail(EXIT_USAGE, f'bad config override: {one_line(e)}')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if not FLAGS['verbosity'].present:
    # Orbax and JAX log every checkpoint and backend probe at INFO; the run's own progress
    # goes to stdout. --verbosity=0 shows the INFO lines again.
    logging.set_verbosity(logging.WARNING)
  if FLAGS.lock_timeout is not None:
    os.environ[lock.ENV_TIMEOUT] = str(FLAGS.lock_timeout)
  try:
    train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except loop.Preempted as e:
    print(e, flush=True)
    sys.exit(EXIT_PREEMPTED)
  except USAGE_ERRORS + RUN_ERRORS as e:
    if FLAGS.traceback:
      raise
    fail(EXIT_USAGE if isinstance(e, USAGE_ERRORS) else EXIT_FAILED, one_line(e))
  except ValueError as e:
    # The tasks check their config (modes, methods, batch sizes) with ValueError, before
    # training starts.
    if FLAGS.traceback:
      raise
    fail(EXIT_USAGE, f'{one_line(e)} (--traceback shows where)')


def launch():
  app.run(main, flags_parser=parse_flags)


if __name__ == '__main__':
  launch()
