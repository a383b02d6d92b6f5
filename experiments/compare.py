"""Launcher: flags -> config -> `cgml_jax.compare.compare(config, workdir)`.

Deliberately short, like experiments/run.py. Trains every method of `config.methods` with
the same step budget on one image task and writes compare.md / compare.csv / compare.json,
curves.png and compare_<protocol>.png. Example:

  python -m experiments.compare --config=experiments/compare_mnist.py --workdir=runs/cmp_mnist
  python -m experiments.compare --config=experiments/compare_mnist.py:smoke --workdir=/tmp/c \
      --config.methods="('l1','cgml','pix2pix+msgan')"

Running the same command again resumes each method from its checkpoints. On SIGTERM the
run checkpoints and exits with status 143.
"""

import sys

from absl import app, flags
from ml_collections import config_flags

from cgml_jax import compare
from cgml_jax.training import loop

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Path to a comparison config (get_config).',
                                lock_config=True)
flags.DEFINE_string('workdir', None, 'Directory for tables, images and checkpoints.')
flags.mark_flags_as_required(['config', 'workdir'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  try:
    compare.compare(FLAGS.config, FLAGS.workdir)
  except loop.Preempted as e:
    print(e, flush=True)
    sys.exit(143)


if __name__ == '__main__':
  app.run(main)
