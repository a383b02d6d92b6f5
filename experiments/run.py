"""Launcher: flags -> config -> `cgml_jax.train.train_and_evaluate(config, workdir)`.

Deliberately short; everything else lives in the library so notebooks and tests call the
same function. Example:

  python -m experiments.run --config=experiments/toy.py --workdir=runs/toy \
      --config.train.steps=1000

Config overrides use ml_collections syntax; the config is locked, so an unknown key is an
error rather than a silently ignored typo.

Running the same command again resumes from the checkpoints in the workdir. On SIGTERM
the run checkpoints and exits with status 143 (128 + SIGTERM) so that schedulers restart it.
"""

import sys

from absl import app, flags, logging
from ml_collections import config_flags

from cgml_jax import train
from cgml_jax.training import loop

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Path to a config file (get_config).',
                                lock_config=True)
flags.DEFINE_string('workdir', None, 'Directory for metrics, images and checkpoints.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if not FLAGS['verbosity'].present:
    # Orbax and JAX log every checkpoint and backend probe at INFO; the run's own progress
    # goes to stdout. --verbosity=0 shows the INFO lines again.
    logging.set_verbosity(logging.WARNING)
  try:
    train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except loop.Preempted as e:
    print(e, flush=True)
    sys.exit(143)


if __name__ == '__main__':
  app.run(main)
