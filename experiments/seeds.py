"""Seed sweep: one `train_and_evaluate` per seed, metrics.json kept in the repository.

  python -m experiments.seeds --config=experiments/toy.py:paper --seeds=0-4 \
      --name=toy/paper_modes3 --config.data.modes='(-4.,0.,4.)' --workroot=runs/seeds

Seed k runs with config.seed = k in `<workroot>/<name>/seed<k>` (resumable: a seed whose
metrics.json exists is not run again, an interrupted one resumes from its checkpoints) and
its metrics.json (with provenance: commit, dirty flag and config) is copied to
`results/<name>/seed<k>.json`. Runs from a tree with uncommitted changes are not copied
(their commit would not name the code), unless --allow_dirty.
"""

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from cgml_jax import train
from cgml_jax.configs import parse_seeds
from cgml_jax.training import loop
from cgml_jax.training import workdir as workdir_lib

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Path to a config file (get_config).',
                                lock_config=True)
flags.DEFINE_string('seeds', '0-4', 'Seeds: a range "0-4" and/or a list "0,2,5".')
flags.DEFINE_string('name', None, 'Run name, e.g. toy/paper_modes3: the subdirectory of '
                    'workroot and of results.')
flags.DEFINE_string('workroot', 'runs/seeds', 'Where the run directories go.')
flags.DEFINE_string('results', None, 'Results directory (default: <repository>/results).')
flags.DEFINE_bool('allow_dirty', False, 'Copy results of runs from a modified tree too.')
flags.mark_flags_as_required(['config', 'name'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if not FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)  # as experiments/run.py: no Orbax INFO lines
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  results = os.path.join(FLAGS.results or os.path.join(repo, 'results'), FLAGS.name)
  config = FLAGS.config
  for seed in parse_seeds(FLAGS.seeds):
    workdir = os.path.join(FLAGS.workroot, FLAGS.name, f'seed{seed}')
    path = os.path.join(workdir, 'metrics.json')
    if os.path.exists(path):
      print(f'[seeds] {FLAGS.name} seed {seed}: {path} exists, not run again', flush=True)
    else:
      config.seed = seed
      try:
        train.train_and_evaluate(config, workdir)
      except loop.Preempted as e:
        print(e, flush=True)
        sys.exit(143)
    dest = os.path.join(results, f'seed{seed}.json')
    if not workdir_lib.copy_result(path, dest, FLAGS.allow_dirty):
      print(f'[seeds] seed {seed}: run from a modified tree (or without provenance); not '
            'copied to results (--allow_dirty copies it)', flush=True)
      continue
    print(f'[seeds] seed {seed} -> {dest}', flush=True)


if __name__ == '__main__':
  app.run(main)
