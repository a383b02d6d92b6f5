"""The known-mode suite: every colour-mode variant, every preset, over seeds, one command.

  python -m experiments.suite --seeds=0-4                        # everything
  python -m experiments.suite --seeds=0-2 --variants=rgb3,grey5 --presets=default,cimle
  python -m experiments.suite --seeds=0-2 --variants=hue --presets=default,paper

A variant is an entry of `experiments.colour_modes.SUITE` (shapes or MNIST glyphs, a
palette, M modes and their prior), or `hue:NAME` for an entry of
`experiments.hue_modes.SUITE` (photos whose chroma is rotated by one of M angles; `hue`
selects them all; `all` keeps to the colour-mode variants). A preset is a method with its
options (`PRESETS`): cGML as shipped, cGML as the paper writes it, cGML with the balanced
z_0 and its nearest-target flow (not in the paper), and the cIMLE peer, all with the same
backbone, budget and K. Run (preset, variant, seed) trains in
`<workroot>/<preset>/<variant>/seed<k>` (resumable; a run whose metrics.json exists is
not run again; `hue:NAME` is written `hue-NAME` in paths) and its metrics.json is copied
to `results/modes_suite/<preset>/<variant>/seed<k>.json`, unless it ran from a tree with
uncommitted changes (--allow_dirty copies it anyway). The tables of
docs/multimodality.md come from these files (`python -m experiments.report`).

With --read_outs, every finished cGML run is evaluated again from a copy of its
checkpoints, once per named read-out of `READ_OUTS` (`<preset>_<read-out>` in the
tables): 'T0' is G(h, z_0) without Eq. 4, the share of the sphere that G itself gives each
mode, against which the Eq. 4 row shows what the flow of Z does to the shares;
'T0_redraw' is the same with the half of the samples with the largest rho_hat (furthest
from rest, by Z's own estimate) redrawn from new z_0, twice (`latent.redraw_quantile`).
"""

import os
import shutil
import sys

from absl import app, flags, logging

from cgml_jax import configs, train
from cgml_jax.configs import parse_seeds
from cgml_jax.training import loop
from cgml_jax.training import workdir as workdir_lib
from experiments import colour_modes, hue_modes


def _default(c):
  return c


def _paper(c):
  c.latent.init_candidates = 1
  return c


def _balanced(c):
  c.latent.init = 'balanced'
  c.latent.init_candidates = 1
  c.latent.flow_init = 'nearest'
  return c


def _cimle(c):
  c = configs.add_cimle_fields(c)
  c.methods = ('cimle',)
  return c


# Read-outs of a trained cGML model: name -> latent fields set for the evaluation.
READ_OUTS = {'T0': {'traverse_steps': 0},
             'T0_redraw': {'traverse_steps': 0, 'redraw_quantile': 0.5, 'redraw_rounds': 2}}

# name -> (config edit, method trained). The config is colour_modes.get_config(variant),
# or hue_modes.get_config(NAME) for a variant 'hue:NAME'.
PRESETS = {'default': (_default, 'cgml'), 'paper': (_paper, 'cgml'),
           'balanced': (_balanced, 'cgml'), 'cimle': (_cimle, 'cimle')}

FLAGS = flags.FLAGS
flags.DEFINE_string('seeds', '0-4', 'Seeds: a range "0-4" and/or a list "0,2,5".')
flags.DEFINE_string('variants', 'all', 'Comma-separated names of colour_modes.SUITE or '
                    'hue:NAME of hue_modes.SUITE; all = every colour-mode variant, hue = '
                    'every hue-mode variant.')
flags.DEFINE_string('presets', ','.join(PRESETS), 'Comma-separated names of PRESETS.')
flags.DEFINE_string('workroot', 'runs/suite', 'Where the run directories go.')
flags.DEFINE_string('results', None, 'Results directory (default: <repository>/results).')
flags.DEFINE_bool('allow_dirty', False, 'Copy results of runs from a modified tree too.')
flags.DEFINE_bool('smoke', False, 'Tiny runs (the configs\' smoke variants), for tests.')
flags.DEFINE_string('read_outs', '', 'Comma-separated names of READ_OUTS: also evaluate '
                    'each cGML run so (e.g. T0: G at z_0 without Eq. 4).')


HUE = 'hue:'  # prefix of the hue-mode variants
VARIANTS = tuple(colour_modes.SUITE) + tuple(HUE + n for n in hue_modes.SUITE)


def config_of(preset: str, variant: str, seed: int, smoke: bool = False):
  """The run config of one (preset, variant, seed); `smoke` shrinks it for tests."""
  edit, method = PRESETS[preset]
  module, name = ((hue_modes, variant[len(HUE):]) if variant.startswith(HUE)
                  else (colour_modes, variant))
  c = module.get_config(f'variant={name}' + (',smoke' if smoke else ''))
  c.methods = (method,)
  c = edit(c)
  c.seed = seed
  return c


def _dir(variant: str) -> str:
  """A variant's name in paths: 'hue:NAME' -> 'hue-NAME'."""
  return variant.replace(':', '-')


def _names(spec: str, known, what: str, groups=None) -> list[str]:
  """Comma-separated names of `known`; a name of `groups` stands for its list."""
  groups = {'all': list(known), **(groups or {})}
  names = []
  for s in spec.split(','):
    s = s.strip()
    names += groups.get(s, [s] if s else [])
  bad = [n for n in names if n not in known]
  if bad or not names:
    raise app.UsageError(f'unknown {what} {bad}; expected some of {sorted(known)} or '
                         f'{" or ".join(groups)}')
  return names


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  if not FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  root = os.path.join(FLAGS.results or os.path.join(repo, 'results'), 'modes_suite')
  variants = _names(FLAGS.variants, VARIANTS, 'variants',
                    {'all': list(colour_modes.SUITE), 'hue': [HUE + n for n in hue_modes.SUITE]})
  presets = _names(FLAGS.presets, PRESETS, 'presets')
  read_outs = _names(FLAGS.read_outs, READ_OUTS, 'read-outs') if FLAGS.read_outs else []
  for seed in parse_seeds(FLAGS.seeds):
    for variant in variants:
      for preset in presets:
        name = os.path.join(preset, _dir(variant))
        workdir = os.path.join(FLAGS.workroot, name, f'seed{seed}')
        path = os.path.join(workdir, 'metrics.json')
        if not os.path.exists(path):
          try:
            train.train_and_evaluate(config_of(preset, variant, seed, FLAGS.smoke), workdir)
          except loop.Preempted as e:
            print(e, flush=True)
            sys.exit(143)
        _keep(path, root, name, seed)
        if PRESETS[preset][1] == 'cgml':
          for read_out in read_outs:
            _read_out(preset, variant, seed, workdir, read_out, root)


def _read_out(preset: str, variant: str, seed: int, workdir: str, read_out: str, root: str):
  """Evaluates a trained cGML run again with the latent fields of READ_OUTS[read_out]."""
  name = f'{preset}_{read_out}/{_dir(variant)}'
  out = os.path.join(FLAGS.workroot, name, f'seed{seed}')
  if not os.path.exists(os.path.join(out, 'metrics.json')):
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(os.path.join(workdir, 'checkpoints'), os.path.join(out, 'checkpoints'))
    c = config_of(preset, variant, seed, FLAGS.smoke)
    for k, v in READ_OUTS[read_out].items():
      c.latent[k] = v
    c.checkpoint.allow_config_mismatch = True
    train.train_and_evaluate(c, out)
  _keep(os.path.join(out, 'metrics.json'), root, name, seed)


def _keep(path: str, root: str, name: str, seed: int):
  """Copies a run's metrics.json to results (unless it ran from a modified tree)."""
  if not workdir_lib.copy_result(path, os.path.join(root, name, f'seed{seed}.json'),
                                 FLAGS.allow_dirty):
    print(f'[suite] {name} seed {seed}: run from a modified tree; not copied to results '
          '(--allow_dirty copies it)', flush=True)
    return
  print(f'[suite] {name} seed {seed} -> results/modes_suite/{name}/seed{seed}.json',
        flush=True)


if __name__ == '__main__':
  app.run(main)
