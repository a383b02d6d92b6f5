"""Regenerates every results table in README.md and docs/ from the committed result files.

  python -m experiments.report           # rewrite the tables in place
  python -m experiments.report --check   # exit 1 if any table differs from the files

Result files are the `metrics.json` of real runs, copied to
`results/<run set>/seed<k>.json` (e.g. by `python -m experiments.seeds`); each holds the
commit and config that produced it ('provenance'). A table sits between two marker lines
in a Markdown file:

  <!-- report:KIND PATTERN -->
  ...generated...
  <!-- /report -->

KIND names a table function below; PATTERN is a comma-separated list of globs of run
sets under results/ (e.g. `toy/paper_*,toy/best_*`); for `estimate` tables, of the file
names in results/estimates/ (written by `python -m experiments.estimate --out=...`).
Nothing between the markers is typed by hand.
"""

from __future__ import annotations

import argparse
import fnmatch
import glob
import json
import os
import re
import sys

import numpy as np

from cgml_jax.metrics.modes import ideal_coverage
from cgml_jax.tasks.names import display

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, 'results')
MARKER = re.compile(r'(<!-- report:(\S+)(?: (\S+))? -->\n)(.*?)(<!-- /report -->)', re.S)


def load(root: str = RESULTS) -> dict[str, dict[int, dict]]:
  """{run set: {seed: metrics}} of every results/<run set>/seed<k>.json."""
  out: dict[str, dict[int, dict]] = {}
  for path in sorted(glob.glob(os.path.join(root, '**', 'seed*.json'), recursive=True)):
    run_set = os.path.relpath(os.path.dirname(path), root)
    seed = int(re.fullmatch(r'seed(\d+)\.json', os.path.basename(path)).group(1))
    with open(path) as f:
      out.setdefault(run_set, {})[seed] = json.load(f)
  return out


def select(results: dict, pattern: str | None) -> dict:
  """The run sets matching any of the comma-separated globs of `pattern` (all if None)."""
  if pattern is None:
    return dict(results)
  globs = pattern.split(',')
  return {k: v for k, v in results.items() if any(fnmatch.fnmatch(k, g) for g in globs)}


def mean_std(values) -> str:
  """'m ± s' to 3 decimals over the finite values (`_mean_std_fmt`)."""
  return _mean_std_fmt([x for x in values if x is not None and np.isfinite(x)], '.3f')


def _config(m: dict) -> dict:
  return m.get('provenance', {}).get('config', {})


def _seconds(m: dict) -> float | None:
  if 'total_seconds' in m:
    return m['total_seconds']
  per = [r.get('train_seconds') for r in m.get('methods', {}).values()
         if isinstance(r, dict)]
  per = [p for p in per if p is not None]
  return sum(per) if per else None


def _hardware(m: dict) -> str:
  return m.get('provenance', {}).get('hardware', 'not recorded')


def _budget(m: dict) -> str:
  c = _config(m)
  t, d = c.get('train', {}), c.get('data', {})
  if not t:
    return ''
  return f"{t.get('steps')} × {d.get('batch_size')}, l = {t.get('inner_steps')}"


# ---------------------------------------------------------------------------------------
# Tables.

TOY_TARGET = (0.95, 0.05)  # coverage >= , phantom <=
TOY_ORDER = ('l1', 'cgml_no_rho', 'cgml', 'cimle')  # rows first in this order


def toy_table(results: dict) -> str:
  """Per run set of the toy: one row per method, coverage / phantom per seed and mean ±
  std, the final E (after the z steps of the last batch), and how many seeds meet
  coverage >= 0.95 and phantom <= 0.05. The header names the scales and the z step's
  beta and candidates N of the run set's config."""
  lines = []
  for run_set, seeds in results.items():
    order = sorted(seeds)
    first = next(iter(seeds.values()))
    present = set(first['methods'])
    methods = [m for m in TOY_ORDER if m in present] + sorted(present - set(TOY_ORDER))
    modes = ', '.join(f'{s:g}' for s in first['modes'])
    latent = _config(first).get('latent', {})
    step = (f"; β = {latent['step_size']:g}, N = {latent.get('init_candidates', 1)}"
            if 'step_size' in latent and present & {'cgml', 'cgml_no_rho'} else '')
    lines += [f'**{run_set}** (s = {modes}{step}; cells: coverage / phantom rate)', '',
              '| method | ' + ' | '.join(f'seed {s}' for s in order)
              + ' | coverage | phantom | final E | seeds meeting target |',
              '|---|' + '---|' * (len(order) + 4)]
    for method in methods:
      runs = [seeds[s]['methods'][method] for s in order]
      cov = [r['coverage'] for r in runs]
      ph = [r['phantom_rate'] for r in runs]
      final_e = [r['final_E'] for r in runs if 'final_E' in r]
      met = sum(c >= TOY_TARGET[0] and p <= TOY_TARGET[1] for c, p in zip(cov, ph))
      cells = ' | '.join(f'{c:.3f} / {p:.3f}' for c, p in zip(cov, ph))
      e_cell = mean_std(final_e) if len(final_e) == len(runs) else ''
      lines.append(f'| {display(method)} | {cells} | {mean_std(cov)} | '
                   f'{mean_std(ph)} | {e_cell} | {met} of {len(order)} |')
    lines.append('')
  return '\n'.join(lines).rstrip('\n')


def _field(m: dict, block: str, key: str, default: str) -> str:
  """A config field of a run's provenance; `default` for runs from before the field
  existed (its value then was the only behaviour there was)."""
  return str(_config(m).get(block, {}).get(key, default))


def z_loss_table(results: dict) -> str:
  """cGML with rho on the toy, one row per run set with its `latent.z_loss` (runs from
  before the option had the 'split' loss): coverage / phantom per seed, mean ± std, seeds
  meeting the target."""
  order = sorted({s for seeds in results.values() for s in seeds})
  lines = ['| run set | latent.z_loss | ' + ' | '.join(f'seed {s}' for s in order)
           + ' | coverage | phantom | seeds meeting target |',
           '|---|---|' + '---|' * (len(order) + 3)]
  for run_set, seeds in results.items():
    runs = {s: seeds[s]['methods']['cgml'] for s in order if s in seeds}
    cov = [r['coverage'] for r in runs.values()]
    ph = [r['phantom_rate'] for r in runs.values()]
    met = sum(c >= TOY_TARGET[0] and p <= TOY_TARGET[1] for c, p in zip(cov, ph))
    cells = [f"{runs[s]['coverage']:.3f} / {runs[s]['phantom_rate']:.3f}" if s in runs
             else '' for s in order]
    z_loss = _field(next(iter(seeds.values())), 'latent', 'z_loss', 'split')
    lines.append(f'| {run_set} | {z_loss} | ' + ' | '.join(cells)
                 + f' | {mean_std(cov)} | {mean_std(ph)} | {met} of {len(runs)} |')
  return '\n'.join(lines)


NORM_METRICS = (('E_best', 'E, best of K'), ('psnr_best', 'PSNR, best of K'),
                ('pixel_diversity', 'pixel diversity'))


def norm_table(results: dict) -> str:
  """cGML on an image task, one row per run set with its `model.norm`: per seed and mean ±
  std of the first protocol's E_best, PSNR (best of K) and pixel diversity, and of the
  task's mode coverage where it has one (`task_metrics`)."""
  order = sorted({s for seeds in results.values() for s in seeds})
  first = next(iter(next(iter(results.values())).values()))
  extra = [k for k in ('coverage',) if k in first.get('task_metrics', {}).get('cgml', {})]
  names = [f'{label} ({key})' for key, label in NORM_METRICS] + [
      f'mode coverage ({k})' for k in extra]
  lines = ['| run set | model.norm | metric | ' + ' | '.join(f'seed {s}' for s in order)
           + ' | mean ± std |', '|---|---|---|' + '---|' * (len(order) + 1)]
  for run_set, seeds in results.items():
    norm = _field(next(iter(seeds.values())), 'model', 'norm', 'none')
    for name, key in zip(names, [k for k, _ in NORM_METRICS] + extra):
      def value(m):
        if key in extra:
          return m['task_metrics']['cgml'][key]
        protocol = next(iter(m['eval']))
        return m['eval'][protocol]['cgml'][key]
      vals = {s: value(seeds[s]) for s in order if s in seeds}
      cells = [f'{vals[s]:.4f}' if s in vals else '' for s in order]
      lines.append(f'| {run_set} | {norm} | {name} | ' + ' | '.join(cells)
                   + f' | {mean_std(list(vals.values()))} |')
  return '\n'.join(lines)


IMAGE_COLUMNS = (('psnr_best', '.2f'), ('ssim_best', '.3f'), ('lpips_best', '.3f'),
                 ('diversity', '.3f'), ('colorfulness', '.2f'))


def image_table(results: dict) -> str:
  """Per run set and protocol of an image experiment (a comparison too): one row per
  method, mean ± std over seeds of the pinned metrics (docs/data.md; best of K), the
  method's training seconds, and the test accuracy of each linear probe of its frozen
  encoder (paper Table 5) where the runs have one. The untrained encoder's probe, the
  probe's reference, is a row of its own."""
  lines = []
  for run_set, seeds in results.items():
    order = sorted(seeds)
    first = seeds[order[0]]
    probes = list(first.get('probe', {}))
    for protocol, per_method in first['eval'].items():
      cols = [(c, f) for c, f in IMAGE_COLUMNS if any(c in m for m in per_method.values())]
      lines += [f'**{run_set}**, {protocol} (seeds {", ".join(map(str, order))}; '
                f'{first.get("train_steps", "?")} steps × {first.get("batch_size", "?")}, '
                f'K = {first.get("num_samples", "?")})', '',
                '| ' + ' | '.join(['method'] + [c for c, _ in cols] + ['train s']
                                  + [f'probe {p} acc' for p in probes]) + ' |',
                '|---|' + '---|' * (len(cols) + 1 + len(probes))]
      rows = list(per_method) + (['untrained_encoder'] if probes else [])
      for method in rows:
        vals = [_mean_std_fmt([seeds[s]['eval'][protocol].get(method, {}).get(c)
                               for s in order], f) for c, f in cols]
        secs = _mean_std_fmt([seeds[s].get('train', {}).get(method, {}).get('seconds')
                              for s in order], '.0f')
        accs = [_mean_std_fmt([seeds[s]['probe'][p]['results'].get(method, {})
                               .get('test_acc') for s in order], '.3f') for p in probes]
        lines.append(f'| {display(method)} | ' + ' | '.join(vals + [secs] + accs) + ' |')
      lines.append('')
  return '\n'.join(lines).rstrip('\n')


def _headline(m_by_seed: dict[int, dict]) -> str:
  first = next(iter(m_by_seed.values()))
  if 'modes' in first:  # the toy: cGML with rho, else the first method the runs have
    order = ('cgml', 'cgml_no_rho', 'l1', 'cimle')
    method = next((m for m in order if m in first['methods']), next(iter(first['methods'])))
    runs = [m['methods'][method] for m in m_by_seed.values() if method in m['methods']]
    return (f"{display(method)} coverage {mean_std([r['coverage'] for r in runs])}, "
            f"phantom {mean_std([r['phantom_rate'] for r in runs])}")
  if 'task_metrics' in first and _config(first).get('task') == 'mnist_corrupted':
    # MNIST box: every row (cGML with Eq. 4 and at T = 0), coverage and the box's share
    return '; '.join(
        f"{display(k)} coverage "
        f"{mean_std([m['task_metrics'][k]['coverage'] for m in m_by_seed.values()])}, box "
        f"share {mean_std([_first_share(m['task_metrics'][k]) for m in m_by_seed.values()])}"
        for k in first['task_metrics'])
  if 'task_metrics' in first:  # known-mode benchmarks: the cGML row, else the first one
    method = 'cgml' if 'cgml' in first['task_metrics'] else next(iter(first['task_metrics']))
    runs = [m['task_metrics'][method] for m in m_by_seed.values()]
    return (f"{display(method)} coverage "
            f"{mean_std([r['coverage'] for r in runs])}, phantom "
            f"{mean_std([r['phantom_rate'] for r in runs])}, frequency error "
            f"{mean_std([r['mode_frequency_error'] for r in runs])}")
  if 'eval' in first:
    protocol = next(iter(first['eval']))
    parts = []
    for method in ('l1', 'cgml'):
      if method in first['eval'][protocol]:
        psnr = mean_std([m['eval'][protocol][method].get('psnr_best')
                         for m in m_by_seed.values()])
        parts.append(f'{method} PSNR (best of K) {psnr}')
    return '; '.join(parts)
  return ''


DOC_OF = {'toy': 'docs/toy.md', 'colorize': 'docs/colorize.md',
          'colour_modes': 'docs/multimodality.md', 'hue_modes': 'docs/multimodality.md',
          'mnist_corrupted': 'docs/multimodality.md'}


def readme_table(results: dict) -> str:
  """One row per run set: budget, hardware, wall time per seed, headline metrics, page."""
  lines = ['| run set | seeds | budget (steps × batch) | hardware | wall time per seed | '
           'headline (mean ± std over seeds) | details |', '|---|---|---|---|---|---|---|']
  for run_set, seeds in results.items():
    first = next(iter(seeds.values()))
    task = _config(first).get('task', run_set.split('/')[0])
    secs = [_seconds(m) for m in seeds.values()]
    secs = [s for s in secs if s is not None]
    wall = f'{np.mean(secs) / 60:.1f} min' if secs else ''
    doc = DOC_OF.get(task, 'docs/experiments.md')
    lines.append(f'| {run_set} | {len(seeds)} | {_budget(first)} | {_hardware(first)} | '
                 f'{wall} | {_headline(seeds)} | [{os.path.basename(doc)}]({doc}) |')
  return '\n'.join(lines)


COLORIZE_COLUMNS = (  # (header, method, metric key, format)
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
COLORIZE_FORMS = ('none', 'per_image', 'batch', 'rebalance')


def _mean_std_fmt(values, fmt: str) -> str:
  """'m ± s' with the sample std (ddof = 1: seeds are a sample of the runs one could make),
  or 'm' for one value."""
  v = np.asarray([x for x in values if x is not None], np.float64)
  if v.size == 0:
    return ''
  if v.size == 1:
    return format(v[0], fmt)
  return f'{format(v.mean(), fmt)} ± {format(v.std(ddof=1), fmt)}'


def colorize_table(results: dict) -> str:
  """The colour-balance study: one row per run set `<form>_<lambda>_<dataset>`, mean ±
  std over seeds of L1's and cGML's scores on the evaluated split."""
  def key(run_set):
    form, lam, dataset = os.path.basename(run_set).rsplit('_', 2)
    order = COLORIZE_FORMS.index(form) if form in COLORIZE_FORMS else len(COLORIZE_FORMS)
    return dataset, order, float(lam)

  head = ['dataset', 'form', 'λ', 'seeds'] + [c[0] for c in COLORIZE_COLUMNS]
  lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  for run_set in sorted(results, key=key):
    form, lam, dataset = os.path.basename(run_set).rsplit('_', 2)
    runs = [results[run_set][s] for s in sorted(results[run_set])]
    seeds = ','.join(str(s) + ('*' if results[run_set][s]['provenance'].get('dirty', True)
                               else '') for s in sorted(results[run_set]))
    cells = [_mean_std_fmt([m['eval']['test'][method].get(k) for m in runs], fmt)
             for _, method, k, fmt in COLORIZE_COLUMNS]
    lines.append('| ' + ' | '.join([dataset, form, '' if form == 'none' else lam, seeds]
                                   + cells) + ' |')
  return '\n'.join(lines)


def load_estimates(root: str = RESULTS) -> dict[str, dict]:
  """{name: estimate} of every results/estimates/<name>.json (`experiments.estimate`)."""
  out = {}
  for path in sorted(glob.glob(os.path.join(root, 'estimates', '*.json'))):
    with open(path) as f:
      out[os.path.splitext(os.path.basename(path))[0]] = json.load(f)
  return out


def _hours(h: float) -> str:
  return f'{h * 60:.0f} min' if h < 1 else f'{h:.1f} h' if h < 100 else f'{h / 24:.0f} days'


def estimate_table(estimates: dict) -> str:
  """Training-time estimates per device type, with the assumptions they rest on."""
  first = next(iter(estimates.values()))
  names = [d['name'] for d in first['devices']]
  methods = ' + '.join(first['methods'])
  head = (f'| config | data | size, batch × steps | TFLOP per step ({methods}) | total PFLOP | '
          + ' | '.join(names) + ' |')
  lines = [head, '|' + '---|' * (5 + len(names))]
  for e in estimates.values():
    per_step = ' + '.join(f"{m['flops_per_step'] / 1e12:.2f}" for m in e['methods'].values())
    hours = {d['name']: _hours(d['hours']) for d in e['devices']}
    lines.append(f"| `{e['config']}` | {e['data']} | {e['image_size']}², {e['batch_size']} × "
                 f"{e['steps']:,}, l = {e['inner_steps']} | {per_step} | "
                 f"{e['flops_total'] / 1e15:.1f} | "
                 + ' | '.join(hours.get(n, '') for n in names) + ' |')
  lines.append('')
  lines.append('Assumed per device (peak of one device or chip × utilisation): '
               + '; '.join(f"{d['name']}: {d['peak'] / 1e12:g} TFLOP/s {d['precision']} "
                           f"× {d['utilisation']:g}" for d in first['devices']) + '.')
  lines.append(f"FLOPs: {first['flop_source']}. Counted: {first['counted']}.")
  return '\n'.join(lines)


MODES_TARGET = (0.90, 0.10, 0.10)  # coverage >=, phantom rate <=, frequency error <=
MODES_COLUMNS = (('coverage', '.3f'), ('phantom_rate', '.3f'), ('mode_frequency_error', '.3f'),
                 ('fidelity', '.4f'), ('fidelity_nearest', '.4f'))


def _first_share(r: dict) -> float:
  """The share of the samples on the first mode (the box on MNIST)."""
  return r['box_sample_rate'] if 'box_sample_rate' in r else r['mode_histogram'][0]


def _meets_modes_target(task: str, config: dict, r: dict) -> bool:
  """Colour modes (and the default): coverage >= 0.90, phantom <= 0.10, frequency error
  <= 0.10. MNIST box: coverage (both modes) >= 0.80 and the box's share of the samples
  within 0.10 of its prior (`data.box_rate`)."""
  if task == 'mnist_corrupted':
    share = _first_share(r)
    return r['coverage'] >= 0.80 and abs(share - config['data']['box_rate']) <= 0.10
  return (r['coverage'] >= MODES_TARGET[0] and r['phantom_rate'] <= MODES_TARGET[1]
          and r['mode_frequency_error'] <= MODES_TARGET[2])


def modes_table(results: dict) -> str:
  """Known-mode image benchmarks (metrics.json 'task_metrics'): per run set, one row per
  method with coverage / phantom / frequency error per seed, mean ± std of each known-mode
  metric, the share of the first mode (the box on MNIST), the method's training wall time
  in seconds, and the seeds meeting the task's target (`_meets_modes_target`)."""
  lines = []
  for run_set, seeds in results.items():
    order = sorted(seeds)
    first = seeds[order[0]]
    c = _config(first)
    task = c.get('task', '')
    target = ('coverage ≥ 0.80, first mode within 0.10 of its prior' if task == 'mnist_corrupted'
              else 'coverage ≥ 0.90, phantom ≤ 0.10, frequency error ≤ 0.10')
    lines += [f"**{run_set}** ({task}, E = {c.get('loss', {}).get('error', 'l1')}"
              f', K = {c.get("eval", {}).get("num_samples")}; cells: coverage / phantom / '
              f'frequency error; target: {target})', '',
              '| method | ' + ' | '.join(f'seed {s}' for s in order) + ' | '
              + ' | '.join(k for k, _ in MODES_COLUMNS)
              + ' | first mode share | train s | seeds meeting target |',
              '|---|' + '---|' * (len(order) + len(MODES_COLUMNS) + 3)]
    methods = list(dict.fromkeys(m for s in order for m in seeds[s]['task_metrics']))
    for method in methods:
      # A method may have run on some seeds only (cells '–'); its statistics and its
      # 'k of n' count the seeds it ran on.
      ran = [s for s in order if method in seeds[s]['task_metrics']]
      runs = [seeds[s]['task_metrics'][method] for s in ran]
      cells = ' | '.join(
          f"{r['coverage']:.3f} / {r['phantom_rate']:.3f} / {r['mode_frequency_error']:.3f}"
          if (r := seeds[s]['task_metrics'].get(method)) else '–' for s in order)
      stats = ' | '.join(_mean_std_fmt([r.get(k) if r.get(k) == r.get(k) else None
                                        for r in runs], fmt) for k, fmt in MODES_COLUMNS)
      share = _mean_std_fmt([_first_share(r) for r in runs], '.3f')
      # training wall time of the method (its cost; a T = 0 row has no training of its own)
      secs = _mean_std_fmt([seeds[s].get('train', {}).get(method, {}).get('seconds')
                            for s in ran], '.0f')
      met = sum(_meets_modes_target(task, _config(seeds[s]), r) for s, r in zip(ran, runs))
      lines.append(f'| {display(method)} | {cells} | {stats} | {share} | '
                   f'{secs} | {met} of {len(ran)} |')
    lines.append('')
  return '\n'.join(lines).rstrip('\n')


SUITE_TARGET = (0.9, 0.05, 0.10)  # coverage / ideal >=, phantom <=, frequency error <=
SUITE_PRESETS = ('default', 'default_T0', 'default_T0_redraw', 'paper', 'paper_T0',
                 'balanced', 'balanced_T0', 'balanced_T0_redraw', 'cimle')  # columns first in this order


def _suite_cell(runs: list[dict]) -> str:
  """'coverage / ideal · phantom · frequency error (k of n)', means over the seeds."""
  ratios = [r['coverage'] / ideal_coverage(r['prior'], r['num_samples']) for r in runs]
  met = sum(q >= SUITE_TARGET[0] and r['phantom_rate'] <= SUITE_TARGET[1]
            and r['mode_frequency_error'] <= SUITE_TARGET[2] for q, r in zip(ratios, runs))
  return (f"{np.mean(ratios):.2f} · {np.mean([r['phantom_rate'] for r in runs]):.3f} · "
          f"{np.mean([r['mode_frequency_error'] for r in runs]):.3f} ({met} of {len(runs)})")


def suite_table(results: dict) -> str:
  """The known-mode suite (results/modes_suite/<preset>/<variant>): one row per variant
  (data, palette, M, prior, tau (colour modes; '–' for hue modes, whose rule has none),
  the prior's ideal coverage at K), one column per preset;
  a cell is the mean over seeds of coverage / ideal, phantom rate and frequency error,
  and how many seeds meet all three targets (`SUITE_TARGET`)."""
  cells: dict[str, dict[str, list[dict]]] = {}
  about: dict[str, tuple] = {}
  for run_set, seeds in results.items():
    _, preset, variant = run_set.split('/')[-3:]
    runs = [next(iter(seeds[s]['task_metrics'].values())) for s in sorted(seeds)]
    cells.setdefault(variant, {})[preset] = runs
    d = _config(seeds[min(seeds)]).get('data', {})
    r = runs[0]
    about[variant] = (d.get('name'), len(r['prior']), ', '.join(f'{p:.2f}' for p in r['prior']),
                      r.get('tau'), ideal_coverage(r['prior'], r['num_samples']), r['num_samples'])
  presets = [p for p in SUITE_PRESETS if any(p in c for c in cells.values())]
  presets += sorted({p for c in cells.values() for p in c} - set(presets))
  lines = ['Cells: coverage / ideal · phantom rate · frequency error, means over seeds, and '
           f'the seeds meeting coverage / ideal ≥ {SUITE_TARGET[0]}, phantom ≤ '
           f'{SUITE_TARGET[1]} and frequency error ≤ {SUITE_TARGET[2]}.', '',
           '| variant | data | M | prior | τ | ideal coverage (K) | '
           + ' | '.join(presets) + ' |', '|---|' + '---|' * (5 + len(presets))]
  for variant in sorted(cells):
    name, m, prior, tau, ideal, k = about[variant]
    row = ' | '.join(_suite_cell(cells[variant][p]) if p in cells[variant] else '–'
                     for p in presets)
    tau = '–' if tau is None else f'{tau:.3f}'
    lines.append(f'| {variant} | {name} | {m} | {prior} | {tau} | {ideal:.3f} ({k}) | '
                 f'{row} |')
  return '\n'.join(lines)


TABLES = {'toy': toy_table, 'suite': suite_table, 'image': image_table, 'readme': readme_table,
          'colorize': colorize_table, 'estimate': estimate_table, 'modes': modes_table,
          'z_loss': z_loss_table, 'norm': norm_table}
# Tables that read results/estimates/*.json instead of the run sets.
ESTIMATE_TABLES = ('estimate',)


def render(text: str, results: dict, doc_path: str, estimates: dict | None = None) -> str:
  """`text` with every marked table regenerated (estimates: default `load_estimates()`)."""
  def repl(match):
    nonlocal estimates
    kind, pattern = match.group(2), match.group(3)
    if kind not in TABLES:
      raise ValueError(f'{doc_path}: unknown report table {kind!r}; expected one of '
                       f'{sorted(TABLES)}')
    if kind in ESTIMATE_TABLES and estimates is None:
      estimates = load_estimates()
    chosen = select(estimates if kind in ESTIMATE_TABLES else results, pattern)
    body = TABLES[kind](chosen) if chosen else '*No result files match yet.*'
    return match.group(1) + body + '\n' + match.group(5)
  return MARKER.sub(repl, text)


def documents() -> list[str]:
  return [os.path.join(REPO, 'README.md')] + sorted(
      glob.glob(os.path.join(REPO, 'docs', '**', '*.md'), recursive=True))


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--check', action='store_true',
                      help='exit 1 if a table differs from what the result files give')
  args = parser.parse_args(argv)
  results = load()
  stale = []
  for path in documents():
    with open(path) as f:
      text = f.read()
    new = render(text, results, path)
    if new != text:
      stale.append(os.path.relpath(path, REPO))
      if not args.check:
        with open(path, 'w') as f:
          f.write(new)
  if args.check and stale:
    print('tables out of date (run python -m experiments.report): ' + ', '.join(stale))
    return 1
  print(('updated: ' + ', '.join(stale)) if stale and not args.check else 'tables up to date')
  return 0


if __name__ == '__main__':
  sys.exit(main())
