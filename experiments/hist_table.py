"""Markdown table of the colour-balance runs of the colorization (docs/colorize.md).

  python -m experiments.hist_table [--root=results/colorize_hist]

Reads `<root>/<form>_<lambda>_<dataset>/seed<k>.json` (the metrics.json of
`python -m experiments.run --config=experiments/colorize.py ...`, with their provenance) and
prints one row per folder: mean +- std over its seeds of L1's and cGML's scores on the
evaluated split. Runs whose provenance says the tree was dirty are flagged with '*'.
"""

from __future__ import annotations

import glob
import json
import os

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string('root', 'results/colorize_hist', 'Folder of <form>_<lambda>_<dataset>/.')

# (header, method, metric key, format)
COLUMNS = (
    ('L1 PSNR', 'l1', 'psnr_mean', '.2f'),
    ('L1 SSIM', 'l1', 'ssim_mean', '.3f'),
    ('L1 colourf.', 'l1', 'colorfulness', '.2f'),
    ('cGML PSNR mean', 'cgml', 'psnr_mean', '.2f'),
    ('cGML PSNR best', 'cgml', 'psnr_best', '.2f'),
    ('cGML SSIM best', 'cgml', 'ssim_best', '.3f'),
    ('cGML LPIPS best', 'cgml', 'lpips_best', '.3f'),
    ('cGML LPIPS div.', 'cgml', 'diversity', '.4f'),
    ('cGML colourf.', 'cgml', 'colorfulness', '.2f'),
)
FORM_ORDER = ('none', 'per_image', 'batch', 'rebalance')


def _mean_std(values: list[float], fmt: str) -> str:
  """'m ± s' (sample std, ddof = 1) or just 'm' for a single value."""
  n = len(values)
  if n == 0:
    return ''
  m = sum(values) / n
  if n == 1:
    return format(m, fmt)
  s = (sum((v - m) ** 2 for v in values) / (n - 1)) ** 0.5
  return f'{format(m, fmt)} ± {format(s, fmt)}'


def load(root: str) -> dict[str, list[dict]]:
  """Folder name -> its runs' metrics.json contents, in seed order."""
  runs = {}
  for folder in sorted(glob.glob(os.path.join(root, '*'))):
    files = sorted(glob.glob(os.path.join(folder, 'seed*.json')))
    if files:
      runs[os.path.basename(folder)] = [json.load(open(f)) for f in files]
  return runs


def _sort_key(name: str):
  form, lam, dataset = name.rsplit('_', 2)
  order = FORM_ORDER.index(form) if form in FORM_ORDER else len(FORM_ORDER)
  return dataset, order, float(lam)


def table(runs: dict[str, list[dict]]) -> str:
  """The Markdown table: one row per <form>_<lambda>_<dataset> folder."""
  head = ['dataset', 'form', 'λ', 'seeds'] + [c[0] for c in COLUMNS]
  lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  for name in sorted(runs, key=_sort_key):
    form, lam, dataset = name.rsplit('_', 2)
    ms = runs[name]
    seeds = ','.join(str(m['provenance']['config']['seed']) +
                     ('*' if m['provenance'].get('dirty', True) else '') for m in ms)
    cells = []
    for _, method, key, fmt in COLUMNS:
      vals = [m['eval']['test'][method][key] for m in ms if key in m['eval']['test'][method]]
      cells.append(_mean_std(vals, fmt))
    lam_cell = '' if form == 'none' else lam
    lines.append('| ' + ' | '.join([dataset, form, lam_cell, seeds] + cells) + ' |')
  return '\n'.join(lines)


def main(argv):
  del argv
  print(table(load(FLAGS.root)))


if __name__ == '__main__':
  app.run(main)
