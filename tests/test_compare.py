"""cgml_jax.compare: method names, tables, and each comparison config's smoke mode end to
end through the real `compare(config, workdir)` (tiny images, 2-3 methods, 4 steps)."""

import csv
import importlib
import json
import os

import jax
import numpy as np
import pytest

from cgml_jax import compare
from cgml_jax.tasks import image


def test_parse_method_and_variants():
  assert compare.parse_method('cgml') == ('cgml', None)
  assert compare.parse_method('pix2pix+msgan') == ('pix2pix', 'msgan')
  assert compare.parse_method('mrgan+dsgan') == ('mrgan', 'dsgan')
  for bad in ('vae', 'l1+msgan', 'pix2pix+foo'):
    with pytest.raises(ValueError):
      compare.parse_method(bad)


def test_markdown_and_rows_from_a_hand_made_result():
  results = {'task': 't', 'dataset': 'd', 'image_size': 8, 'num_samples': 2,
             'train_steps': 10, 'batch_size': 4, 'target_error': 0.5, 'probe_size': 2,
             'curve_samples': 2, 'curve_every': 5,
             'train': {'l1': {'seconds': 1.0, 'steps': 10, 'steps_to_target': 5,
                              'final_probe_E': 0.4},
                       'mrgan': {'seconds': 2.0, 'steps': '10+3', 'steps_to_target': '',
                                 'final_probe_E': 0.7}},
             'eval': {'test': {'l1': {'psnr_mean': 20.0, 'E_best': 0.1},
                               'mrgan': {'psnr_mean': 18.0, 'E_best': 0.2}}}}
  table = compare.rows(results)
  assert [r['method'] for r in table] == ['l1', 'mrgan']
  assert table[1]['steps'] == '10+3' and table[0]['lpips_mean'] == ''
  md = compare.markdown(results)
  assert '| l1 | 20 | 0.1 | 1 | 10 | 5 | 0.4 |' in md
  assert 'lpips_mean' not in md            # columns nobody has are left out


@pytest.mark.parametrize('name', ['compare_mnist', 'compare_facades'])
def test_smoke_comparison_end_to_end(name, tmp_path):
  config = importlib.import_module(f'experiments.{name}').get_config('smoke')
  workdir = str(tmp_path)
  results = compare.compare(config, workdir)
  methods = list(config.methods)
  for f in ('compare.json', 'compare.md', 'compare.csv', 'curves.png', 'compare_test.png'):
    assert os.path.getsize(os.path.join(workdir, f)) > 0, f
  with open(os.path.join(workdir, 'compare.csv')) as f:
    table = list(csv.DictReader(f))
  assert [r['method'] for r in table] == methods
  for r in table:
    for col in ('psnr_mean', 'E_best', 'pixel_diversity', 'seconds', 'final_probe_E'):
      assert float(r[col]) == float(r[col]), (r['method'], col)   # present, not NaN
  for m in methods:
    t = results['train'][m]
    assert t['curve']['step'] == [2, 4] and len(t['curve']['probe_E']) == 2
    assert os.path.isdir(os.path.join(workdir, 'checkpoints', m.replace('+', '_')))
    # every optimiser of every method still moves at the last step
    assert t['final_update_norm'] and min(t['final_update_norm'].values()) > 0, m
  ev = results['eval']['test']
  assert ev['l1']['pixel_diversity'] == 0.0
  stochastic = [m for m in methods if m != 'l1']
  assert all(ev[m]['num_samples'] == config.eval.num_samples for m in stochastic)
  if 'mrgan' in methods:
    assert results['train']['mrgan']['steps'] == f'{config.train.steps}+2'
  with open(os.path.join(workdir, 'compare.json')) as f:
    assert json.load(f)['methods'] == methods


def test_probe_preprocess_maps_images_to_the_task_inputs():
  rgb = np.zeros((2, 32, 32, 3), np.uint8)
  rgb[..., 0] = 255                                        # pure red
  x = np.asarray(compare.probe_preprocess(28, 2)(rgb))     # mnist_corrupted: grey + mask
  assert x.shape == (2, 28, 28, 2)
  np.testing.assert_allclose(x[..., 0], 0.299 * 2 - 1, atol=1e-5)
  assert np.all(x[..., 1] == 0)                             # empty mask: nothing missing
  x = np.asarray(compare.probe_preprocess(64, 3)(rgb))     # translate: RGB, resized
  assert x.shape == (2, 64, 64, 3)
  np.testing.assert_allclose(x[0, 5, 5], [1, -1, -1], atol=1e-5)


def test_representation_probe_rows_and_table(tmp_path):
  config = importlib.import_module('experiments.compare_mnist').get_config('smoke')
  config.probe.datasets = ('cifar10',)
  config.probe.train_per_class, config.probe.test_per_class = 6, 3
  config.probe.steps, config.probe.batch_size = 10, 16
  task = compare.get_task(config)
  first = next(image._Numeric(image.train_iterator(task, config)))  # noqa: SLF001
  state = compare.make_method('l1', task, config, first, jax.random.key(0))[0]
  out = compare.representation_probe(task, config, {'l1': state}, jax.random.key(1))['cifar10']
  assert set(out['results']) == {'l1', 'untrained_encoder'}
  for r in out['results'].values():
    assert r['num_train'] == 60 and r['num_test'] == 30 and 0.0 <= r['test_acc'] <= 1.0
  assert "split 'train': first 6 of each class (60 images, 10 classes)" in out['train_rows']
  # Trained and untrained H give different features, so the probes are not copies.
  assert out['results']['l1'] != out['results']['untrained_encoder']
  results = {'task': 't', 'dataset': 'd', 'image_size': 8, 'num_samples': 2,
             'train_steps': 10, 'batch_size': 4, 'target_error': 0.5, 'probe_size': 2,
             'curve_samples': 2, 'curve_every': 5,
             'train': {'l1': {'seconds': 1.0, 'steps': 10}},
             'eval': {'test': {'l1': {'psnr_mean': 20.0}}}, 'probe': {'cifar10': out}}
  assert compare.rows(results)[0]['probe_cifar10'] == out['results']['l1']['test_acc']
  md = compare.markdown(results)
  assert 'probe_cifar10' in md and '| untrained_encoder |' in md
