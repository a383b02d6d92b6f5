r"""Launcher: flags -> config -> `cgml_jax.train.train_and_evaluate(config, workdir)`.

Deliberately short; everything else lives in the library so notebooks and tests call the
same function. Example:

  python -m experiments.run --config=experiments/toy.py:smoke --workdir=runs/toy_smoke \
      --config.train.steps=1000

`--config=FILE[:VARIANT,...]` names a config file and its variants (`--help` lists both).
Config overrides use ml_collections syntax; the config is locked, so an unknown key is an
error rather than a silently ignored typo. The config, the offline data it reads
($CGML_DATA_DIR or --config.data.data_dir) and the batch size are checked before anything
is written to the workdir, so a refused command can be corrected and rerun on the same
workdir.

Running the same command again resumes from the checkpoints in the workdir. While a run is
going, its workdir is locked: the same command started a second time is refused (see
`cgml_jax.training.lock`). Errors are one line starting with `error:` (--traceback shows
the full traceback). Exit status:

  0    done (also --help)
  1    the run failed and said why in one line (a non-finite value, a checkpoint write
       failure); the newest complete checkpoint is intact, so the same command resumes
  2    nothing was run: a bad flag, a config file that cannot be loaded, a config value or
       batch size the library cannot use, missing offline data, a workdir that cannot be
       created or written, or a workdir held by another run (one line naming it)
  130  interrupted by Ctrl-C (SIGINT): the current step was checkpointed, run the same
       command again to resume; a second Ctrl-C aborts at once, keeping the newest
       complete checkpoint
  143  preempted (SIGTERM to any one process): the state was checkpointed, run the same
       command again to resume (128 + SIGTERM, so that schedulers restart it)
"""

import ast
import glob
import os
import signal
import sys
import textwrap


def _interrupted_while_starting(signum, frame):
  del signum, frame
  print('interrupted (Ctrl-C) while starting; nothing was run', flush=True)
  os._exit(128 + signal.SIGINT)


if __name__ == '__main__' and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
  # Importing JAX takes seconds. Ctrl-C in them would print the import's traceback, or be
  # lost in one of JAX's garbage-collector callbacks; nothing is written before main(),
  # which restores Python's handler.
  signal.signal(signal.SIGINT, _interrupted_while_starting)

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from cgml_jax import configs, train
from cgml_jax.data import sources
from cgml_jax.training import checkpoint, lock, loop, workdir

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Path to a config file (get_config), '
                                'optionally with variants: FILE:VARIANT,NAME=VALUE.',
                                lock_config=True)
flags.DEFINE_string('workdir', None, 'Directory for metrics, images and checkpoints.')
flags.DEFINE_float('lock_timeout', None,
                   'Seconds without a heartbeat after which the workdir lock of a run on '
                   f'another host is taken over (default ${lock.ENV_TIMEOUT} or '
                   f'{lock.DEFAULT_TIMEOUT:.0f}).')
flags.DEFINE_bool('traceback', False, 'Show the full traceback of errors that are otherwise '
                  'reported in one line.')
flags.mark_flags_as_required(['config', 'workdir'])

EXIT_FAILED, EXIT_USAGE = 1, 2
EXIT_INTERRUPTED, EXIT_PREEMPTED = 128 + signal.SIGINT, 128 + signal.SIGTERM

# Errors that name their problem and what to do in the message: a traceback adds nothing.
USAGE_ERRORS = (workdir.WorkdirError, checkpoint.ConfigMismatchError,
                checkpoint.CheckpointMismatchError, configs.ConfigError,
                sources.DataNotFoundError)
RUN_ERRORS = (checkpoint.CheckpointWriteError, loop.NonFiniteError)

EXPERIMENTS = os.path.dirname(os.path.abspath(__file__))
HELP_FLAGS = ('-h', '-help', '--help', '-?', '--helpshort')


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


def config_variants(path: str) -> list[str]:
  """The variants `get_config` of the config file at `path` accepts, read from its
  `configs.parse_arg(arg, name=default, ...)` call without running it: a bool default
  is a bare name, an empty string `name=NAME`, anything else `name=<default>`."""
  with open(path) as f:
    tree = ast.parse(f.read())
  for fn in tree.body:
    if isinstance(fn, ast.FunctionDef) and fn.name == 'get_config':
      for node in ast.walk(fn):
        callee = getattr(node, 'func', None)
        if isinstance(node, ast.Call) and getattr(callee, 'attr', getattr(
            callee, 'id', None)) == 'parse_arg':
          out = []
          for kw in node.keywords:
            default = ast.literal_eval(kw.value) if isinstance(kw.value, ast.Constant) else '?'
            out.append(kw.arg if isinstance(default, bool) else
                       f'{kw.arg}=NAME' if default == '' else f'{kw.arg}={default!r}')
          return out
  return []


def _summary_line(source: str) -> str:
  """The docstring's opening lines up to its first blank or indented line, as one short
  line."""
  lines = []
  for line in (ast.get_docstring(ast.parse(source)) or '').splitlines():
    if not line.strip() or line.startswith(' '):
      break
    lines.append(line.strip())
  return textwrap.shorten(' '.join(lines).rstrip(':'), 100, placeholder=' ...')


def list_configs() -> str:
  """One line per config file in experiments/ (a module with `get_config`): its path,
  its variants and the first line of its docstring."""
  rows = []
  for path in sorted(glob.glob(os.path.join(EXPERIMENTS, '*.py'))):
    with open(path) as f:
      source = f.read()
    if '\ndef get_config(' not in source:
      continue
    rows.append((f'experiments/{os.path.basename(path)}',
                 ', '.join(config_variants(path)) or '-', _summary_line(source)))
  width = max(len(r[0]) for r in rows)
  return '\n'.join(f'  {p.ljust(width)}  {v}\n  {"".ljust(width)}  {d}' for p, v, d in rows)


def usage(full: bool = False) -> str:
  flag_help = FLAGS.get_help() if full else FLAGS.main_module_help()
  return (f'{__doc__.strip()}\n\nConfigs (--config=FILE or FILE:VARIANT[,VARIANT...], e.g. '
          f'--config=experiments/toy.py:smoke):\n{list_configs()}\n\nFlags '
          f'(--helpfull lists every flag):\n{flag_help}\n')


def _override_named(error: Exception, args: list[str]) -> str:
  """' --config.a.b=v' for the one override whose field the error quotes, else ''.

  ml_collections names only the field ('stepz'), which is ambiguous among several
  overrides.
  """
  text = one_line(error)
  named = [a for a in args if a.startswith('--config.')
           and any(f"'{part}'" in text for part in a.split('=', 1)[0].split('.')[1:])]
  return f' {named[0]}' if len(named) == 1 else ''


def parse_flags(argv):
  """absl's flag parsing, with --help on stdout (status 0) and a bad flag, config file or
  config override reported in one line (status 2)."""
  args = argv[1:]
  if any(a in HELP_FLAGS or a == '--helpfull' for a in args):
    print(usage(full='--helpfull' in args), end='', flush=True)
    sys.exit(0)
  try:
    argv = FLAGS(argv)
  except flags.Error as e:
    fail(EXIT_USAGE, f'{one_line(e)} (see --help)')
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    # ml_collections raises these for an unknown config field or a value of the wrong
    # type, e.g. --config.train.stepz=5.
    fail(EXIT_USAGE, f'bad config override{_override_named(e, args)}: {one_line(e)}')
  try:
    FLAGS.config.get('task')  # ml_collections defers a file it could not load to here
  except OSError as e:
    path = config_flags.get_config_filename(FLAGS['config'])
    if not os.path.isfile(path):
      fail(EXIT_USAGE, f'config file {path!r} not found; use one of experiments/*.py, e.g. '
           '--config=experiments/toy.py:smoke (--help lists them)')
    fail(EXIT_USAGE, f'cannot load config file {path!r}: {one_line(e.__cause__ or e)}')
  return argv


def main(argv):
  if signal.getsignal(signal.SIGINT) is _interrupted_while_starting:
    signal.signal(signal.SIGINT, signal.default_int_handler)
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if not FLAGS['verbosity'].present:
    # Orbax and JAX log every checkpoint and backend probe at INFO; the run's own progress
    # goes to stdout. --verbosity=0 shows the INFO lines again.
    logging.set_verbosity(logging.WARNING)
  if FLAGS.lock_timeout is not None:
    os.environ[lock.ENV_TIMEOUT] = str(FLAGS.lock_timeout)
  try:
    metrics = train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except loop.Preempted as e:
    print(e, flush=True)
    sys.exit(128 + e.signum)
  except KeyboardInterrupt:
    # A second Ctrl-C during training, or one outside it (loading data, evaluating).
    if FLAGS.traceback:
      raise
    print('interrupted (Ctrl-C); the newest complete checkpoint is intact. Run the same '
          'command again to resume.', flush=True)
    loop.exit_interrupted(EXIT_INTERRUPTED)
  except USAGE_ERRORS + RUN_ERRORS as e:
    if FLAGS.traceback:
      raise
    prefix = 'missing data: ' if isinstance(e, sources.DataNotFoundError) else ''
    fail(EXIT_USAGE if isinstance(e, USAGE_ERRORS) else EXIT_FAILED, prefix + one_line(e))
  except ValueError as e:
    # The tasks check their config (modes, methods, batch sizes) with ValueError, before
    # training starts.
    if FLAGS.traceback:
      raise
    fail(EXIT_USAGE, f'{one_line(e)} (--traceback shows where)')
  if jax.process_index() == 0 and isinstance(metrics, dict) and os.path.isdir(FLAGS.workdir):
    print(train.summary(metrics, os.path.abspath(FLAGS.workdir)), flush=True)


def launch():
  app.run(main, flags_parser=parse_flags)


if __name__ == '__main__':
  launch()
