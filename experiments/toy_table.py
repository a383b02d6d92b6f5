"""Markdown tables of the toy seed sweeps in results/toy/<preset>_modes<M>/seed<k>.json.

  python -m experiments.toy_table [--results=results/toy]

One table per preset and mode count; a row per method with coverage / phantom rate per
seed, their mean ± sample std (ddof 1) over seeds, and how many seeds meet both targets
(coverage >= 0.95 and phantom rate <= 0.05).
"""

import collections
import glob
import json
import os
import re

import numpy as np
from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string('results', None, 'Directory of <preset>_modes<M>/seed<k>.json '
                    '(default: <repository>/results/toy).')

METHODS = ('l1', 'cgml_no_rho', 'cgml')
NAMES = {'l1': 'L1 regression', 'cgml_no_rho': 'cGML w/o ρ', 'cgml': 'cGML with ρ'}
COVERAGE_MIN, PHANTOM_MAX = 0.95, 0.05  # the targets


def load(results_dir: str) -> dict:
  """{(preset, modes): {seed: metrics.json dict}} of every run under `results_dir`."""
  runs = collections.defaultdict(dict)
  for path in glob.glob(os.path.join(results_dir, '*', 'seed*.json')):
    m = re.fullmatch(r'(.+)_modes(\d+)', os.path.basename(os.path.dirname(path)))
    seed = re.fullmatch(r'seed(\d+)\.json', os.path.basename(path))
    if m and seed:
      with open(path) as f:
        runs[(m.group(1), int(m.group(2)))][int(seed.group(1))] = json.load(f)
  return runs


def _std(v: list[float]) -> float:
  """Sample standard deviation (ddof 1); 0 for a single seed."""
  return float(np.std(v, ddof=1)) if len(v) > 1 else 0.0


def table(runs: dict[int, dict]) -> list[str]:
  """Markdown lines for one preset x modes: a row per method present in the runs."""
  seeds = sorted(runs)
  head = ['method'] + [f'seed {s}' for s in seeds] + ['coverage', 'phantom',
                                                      'seeds meeting targets']
  lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  for method in METHODS:
    cells, cov, ph = [], [], []
    for s in seeds:
      r = runs[s]['methods'].get(method)
      if r is None:
        cells.append('—')
        continue
      cov.append(r['coverage'])
      ph.append(r['phantom_rate'])
      cells.append(f'{r["coverage"]:.3f} / {r["phantom_rate"]:.3f}')
    if not cov:
      continue
    met = sum(c >= COVERAGE_MIN and p <= PHANTOM_MAX for c, p in zip(cov, ph))
    lines.append('| ' + ' | '.join(
        [NAMES[method]] + cells +
        [f'{np.mean(cov):.3f} ± {_std(cov):.3f}', f'{np.mean(ph):.3f} ± {_std(ph):.3f}',
         f'{met} / {len(cov)}']) + ' |')
  return lines


def main(argv):
  del argv
  repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  runs = load(FLAGS.results or os.path.join(repo, 'results', 'toy'))
  # The paper's method first, then the variants, each by mode count.
  for preset, modes in sorted(runs, key=lambda k: (k[0] != 'paper', k)):
    any_run = next(iter(runs[(preset, modes)].values()))
    scales = ', '.join(f'{s:g}' for s in any_run['modes'])
    print(f'**{preset}, {modes} modes** (s = {scales}; cells: coverage / phantom rate)\n')
    print('\n'.join(table(runs[(preset, modes)])) + '\n')


if __name__ == '__main__':
  app.run(main)
