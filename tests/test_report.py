"""The results tables in README.md and docs/ are what `experiments.report` generates from
the committed result files, and the generator itself on hand-made results; the
provenance that marks which result files may be committed."""

import subprocess

from cgml_jax import configs, train
from cgml_jax.tasks import names
from experiments import report


def test_docs_tables_match_the_committed_results():
  assert report.main(['--check']) == 0


def _toy_run(cov, phantom):
  methods = {m: {'coverage': c, 'phantom_rate': p, 'train_seconds': 10.0, 'final_E': c / 10}
             for m, c, p in (('l1', 0.0, 0.5), ('cgml', cov, phantom))}
  return {'modes': [4.0, -4.0], 'methods': methods,
          'provenance': {'config': {'task': 'toy', 'train': {'steps': 20, 'inner_steps': 2},
                                    'data': {'batch_size': 8},
                                    'latent': {'step_size': 0.3, 'init_candidates': 16}},
                         'hardware': 'cpu x1'}}


def test_tables_from_hand_made_results():
  results = {'toy/a': {0: _toy_run(1.0, 0.0), 1: _toy_run(0.9, 0.1)}}
  text = ('x\n<!-- report:toy toy/* -->\nold\n<!-- /report -->\ny\n'
          '<!-- report:readme -->\n<!-- /report -->\n<!-- report:toy other/* -->\n'
          '<!-- /report -->\n')
  out = report.render(text, results, 'doc.md')
  assert 'old' not in out and out.startswith('x\n') and '\ny\n' in out
  assert ('| cGML with ρ | 1.000 / 0.000 | 0.900 / 0.100 | 0.950 ± 0.071 | 0.050 ± 0.071 '
          '| 0.095 ± 0.007 | 1 of 2 |') in out
  assert '**toy/a** (s = 4, -4; β = 0.3, N = 16; cells' in out
  assert ('| toy/a | 2 | 20 × 8, l = 2 | cpu x1 | 0.3 min | cGML with ρ coverage '
          '0.950 ± 0.071') in out
  assert '*No result files match yet.*' in out   # a pattern with no run sets says so
  assert report.render(out, results, 'doc.md') == out   # regenerating changes nothing


def test_seed_specs_of_the_sweep_command():
  import pytest

  assert configs.parse_seeds('0-4') == [0, 1, 2, 3, 4]
  assert configs.parse_seeds('0-2,7,1') == [0, 1, 2, 7]
  for bad in ('', '3-1'):
    with pytest.raises(ValueError):
      configs.parse_seeds(bad)


def _image_run(e_best, norm, coverage=None):
  run = {'eval': {'test': {'cgml': {'E_best': e_best, 'psnr_best': 20.0,
                                    'pixel_diversity': 0.1}}},
         'provenance': {'config': {'task': 'mnist_corrupted', 'model': {'norm': norm}}}}
  if coverage is not None:
    run['task_metrics'] = {'cgml': {'coverage': coverage}}
  return run


def test_variant_tables_name_the_setting_and_give_every_seed():
  old = _toy_run(1.0, 0.0)                  # from before latent.z_loss: the 'split' form
  joint = _toy_run(0.5, 0.2)
  joint['provenance']['config']['latent'] = {'z_loss': 'joint'}
  out = report.z_loss_table({'toy/s': {0: old, 1: old}, 'toy/j': {0: joint, 2: joint}})
  assert ('| toy/s | split | 1.000 / 0.000 | 1.000 / 0.000 |  | 1.000 ± 0.000 | '
          '0.000 ± 0.000 | 2 of 2 |') in out
  assert '| toy/j | joint | 0.500 / 0.200 |  | 0.500 / 0.200 | 0.500 ± 0.000' in out
  out = report.norm_table({'m/b': {0: _image_run(0.1, 'batch', 0.5),
                                   1: _image_run(0.3, 'batch', 0.7)}})
  assert '| m/b | batch | E, best of K (E_best) | 0.1000 | 0.3000 | 0.200 ± 0.141 |' in out
  assert '| m/b | batch | mode coverage (coverage) | 0.5000 | 0.7000 | 0.600 ± 0.141 |' in out


def _modes_run(task, coverage, phantom, error, share):
  r = {'coverage': coverage, 'phantom_rate': phantom, 'mode_frequency_error': error}
  if task == 'mnist_corrupted':
    r['box_sample_rate'] = share
  else:
    r['mode_histogram'] = [share, 1 - share - phantom, 0.0]
  return {'task_metrics': {'cgml': r}, 'train': {'cgml': {'seconds': 60.0 + 20 * coverage}},
          'provenance': {'config': {'task': task, 'loss': {'error': 'l2'},
                                    'eval': {'num_samples': 16},
                                    'data': {'box_rate': 0.3}}}}


def test_modes_table_applies_each_task_target():
  results = {'cm/a': {0: _modes_run('colour_modes', 0.95, 0.0, 0.05, 0.33),
                      1: _modes_run('colour_modes', 0.95, 0.2, 0.05, 0.33)},
             'box/a': {0: _modes_run('mnist_corrupted', 0.85, 0.0, 0.06, 0.25),
                       1: _modes_run('mnist_corrupted', 0.85, 0.0, 0.06, 0.45)}}
  out = report.modes_table(results)
  rows = [line for line in out.splitlines() if line.startswith('| cGML')]
  assert rows[0].endswith('| 1 of 2 |')   # the second run's phantoms miss the target
  assert rows[1].endswith('| 1 of 2 |')   # the second run's box share is off the prior
  assert '0.950 / 0.000 / 0.050' in rows[0] and '| 0.350 ± 0.141 |' in rows[1]
  assert '| 79 ± 0 | 1 of 2 |' in rows[0]   # training seconds, mean ± std


def test_modes_table_methods_on_some_seeds():
  only = _modes_run('colour_modes', 0.95, 0.0, 0.05, 0.33)
  both = _modes_run('colour_modes', 0.5, 0.0, 0.4, 0.6)
  both['task_metrics']['cimle'] = dict(only['task_metrics']['cgml'])
  out = report.modes_table({'cm/a': {0: both, 1: only}})
  rows = {line.split(' | ')[0]: line for line in out.splitlines() if line.startswith('| ')}
  assert rows['| cIMLE'].endswith('| 1 of 1 |') and '| – |' in rows['| cIMLE']
  assert rows['| cGML with ρ'].endswith('| 1 of 2 |')
  assert '| 0.725 ± 0.318 |' in rows['| cGML with ρ']


def test_code_version_ignores_results(tmp_path):
  """A sweep copies each seed's metrics into results/: that must not mark the tree, and so
  the sweep's next seeds, as modified; a change to anything else must."""
  git = lambda *a: subprocess.run(['git', '-C', str(tmp_path), *a], check=True,  # noqa: E731
                                  capture_output=True)
  git('init', '-q')
  (tmp_path / 'results').mkdir()
  (tmp_path / 'results' / 'seed0.json').write_text('{}')
  (tmp_path / 'code.py').write_text('x = 1\n')
  git('add', '.')
  git('-c', 'user.name=t', '-c', 'user.email=t@t', 'commit', '-qm', 'init')
  assert train.code_version(str(tmp_path))['dirty'] is False
  (tmp_path / 'results' / 'seed0.json').write_text('{"a": 1}')
  assert train.code_version(str(tmp_path))['dirty'] is False
  (tmp_path / 'code.py').write_text('x = 2\n')
  assert train.code_version(str(tmp_path))['dirty'] is True


def test_readme_headline_of_mnist_box_names_every_row():
  run = _modes_run('mnist_corrupted', 0.4, 0.0, 0.1, 0.15)
  run['task_metrics']['cgml_T0'] = {'coverage': 0.96, 'phantom_rate': 0.0,
                                    'mode_frequency_error': 0.05, 'box_sample_rate': 0.33}
  out = report.readme_table({'mnist_box/a': {0: run}})
  assert ('cGML with ρ coverage 0.400, box share 0.150; cGML at T = 0 coverage 0.960, '
          'box share 0.330') in out
  out = report.readme_table({'colour_modes/a': {0: _modes_run('colour_modes', 0.9, 0.02,
                                                                0.12, 0.3)}})
  assert 'cGML with ρ coverage 0.900, phantom 0.020, frequency error 0.120' in out


def test_display_names():
  assert names.display('cgml') == 'cGML with ρ'
  assert names.display('pix2pix+msgan') == 'pix2pix+MSGAN'
  assert names.display('cgml_T0') == 'cGML at T = 0'
  assert names.display('mystery') == 'mystery' and names.display('l1+x') == 'l1+x'


def test_image_table_of_a_comparison():
  def run(psnr, acc):
    return {'train_steps': 250, 'batch_size': 8, 'num_samples': 10,
            'eval': {'test': {'l1': {'psnr_best': psnr, 'diversity': 0.0},
                              'pix2pix+msgan': {'psnr_best': psnr - 1, 'diversity': 0.2}}},
            'train': {'l1': {'seconds': 20.0}, 'pix2pix+msgan': {'seconds': 60.0}},
            'probe': {'cifar10': {'results': {'l1': {'test_acc': acc},
                                              'pix2pix+msgan': {'test_acc': acc},
                                              'untrained_encoder': {'test_acc': 0.3}}}}}
  out = report.image_table({'cmp/a': {0: run(14.0, 0.30), 1: run(16.0, 0.40)}})
  rows = {line.split(' | ')[0]: line for line in out.splitlines() if line.startswith('| ')}
  assert '**cmp/a**, test (seeds 0, 1; 250 steps × 8, K = 10)' in out
  assert rows['| method'] == '| method | psnr_best | diversity | train s | probe cifar10 acc |'
  assert rows['| L1 regression'] == ('| L1 regression | 15.00 ± 1.41 | 0.000 ± 0.000 | 20 ± 0 '
                                     '| 0.350 ± 0.071 |')
  assert rows['| pix2pix+MSGAN'].startswith('| pix2pix+MSGAN | 14.00 ± 1.41 | 0.200 ± 0.000 '
                                            '| 60 ± 0')
  assert rows['| untrained H (probe only)'] == ('| untrained H (probe only) |  |  |  '
                                                '| 0.300 ± 0.000 |')
