"""experiments.suite end to end on smoke configs, and the report's suite table."""

import json
import os
import subprocess
import sys

import pytest

from experiments import colour_modes, hue_modes, report, suite

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_every_variant_builds_a_valid_config():
  from cgml_jax import configs
  from cgml_jax.tasks import colour_modes as task
  for variant in colour_modes.SUITE:
    for preset in suite.PRESETS:
      c = suite.config_of(preset, variant, seed=3)
      configs.validate(c)
      assert c.seed == 3 and c.methods == (suite.PRESETS[preset][1],)
      assert 0 < task.tau(c) <= 0.5 * task.min_gap(task.palette(c)) + 1e-12


def test_hue_variants_build_valid_configs_and_are_named_apart():
  from cgml_jax import configs
  from cgml_jax.tasks import hue_modes as task
  hue = [v for v in suite.VARIANTS if v.startswith(suite.HUE)]
  assert len(hue) == len(hue_modes.SUITE) and set(colour_modes.SUITE) < set(suite.VARIANTS)
  for variant in hue:
    for preset in suite.PRESETS:
      c = suite.config_of(preset, variant, seed=1)
      configs.validate(c)
      assert c.task == 'hue_modes' and c.methods == (suite.PRESETS[preset][1],)
      task.mode_rule(c)
  groups = {'all': list(colour_modes.SUITE), 'hue': hue}
  assert suite._names('all', suite.VARIANTS, 'variants', groups) == list(colour_modes.SUITE)
  assert suite._names('rgb3,hue', suite.VARIANTS, 'variants', groups) == ['rgb3'] + hue
  assert suite._dir('hue:embedded3') == 'hue-embedded3'


@pytest.mark.slow  # long; run with -m slow
def test_suite_runs_a_hue_variant(tmp_path):
  results = tmp_path / 'results'
  cmd = [sys.executable, '-m', 'experiments.suite', '--smoke', '--seeds=0',
         '--variants=hue:embedded2', '--presets=default', f'--workroot={tmp_path / "runs"}',
         f'--results={results}', '--allow_dirty']
  out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
  assert out.returncode == 0, out.stderr[-2000:]
  m = json.loads((results / 'modes_suite/default/hue-embedded2/seed0.json').read_text())
  assert m['task'] == 'hue_modes' and 'num_skipped' in m['task_metrics']['cgml']
  table = report.suite_table(report.select(report.load(str(results)), 'modes_suite/*/*'))
  assert '| hue-embedded2 |' in table


def test_suite_runs_copies_results_and_reads_out_t0(tmp_path):
  results = tmp_path / 'results'
  cmd = [sys.executable, '-m', 'experiments.suite', '--smoke', '--seeds=0', '--variants=rgb3',
         '--presets=default,cimle', f'--workroot={tmp_path / "runs"}', f'--results={results}',
         '--allow_dirty', '--read_outs=T0,T0_redraw']
  out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
  assert out.returncode == 0, out.stderr[-2000:]
  root = results / 'modes_suite'
  for name in ('default/rgb3', 'default_T0/rgb3', 'default_T0_redraw/rgb3', 'cimle/rgb3'):
    m = json.loads((root / name / 'seed0.json').read_text())
    r = next(iter(m['task_metrics'].values()))
    assert 0 <= r['coverage'] <= r['ideal_coverage'] + 1e-9 or r['coverage_ratio'] >= 0
  t0 = json.loads((root / 'default_T0/rgb3/seed0.json').read_text())
  assert t0['traverse_steps'] == 0
  redraw = json.loads((root / 'default_T0_redraw/rgb3/seed0.json').read_text())
  assert redraw['provenance']['config']['latent']['redraw_quantile'] == 0.5
  table = report.suite_table(report.select(report.load(str(results)), 'modes_suite/*/*'))
  assert '| rgb3 |' in table and 'default_T0' in table and 'cimle' in table
  bad = subprocess.run(cmd[:3] + ['--variants=nope'], cwd=REPO, capture_output=True,
                       text=True, timeout=300)
  assert bad.returncode != 0 and 'unknown variants' in bad.stderr
