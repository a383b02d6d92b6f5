"""Hue modes (cgml_jax.tasks.hue_modes): the rotation-fit mode rule on hand-built samples,
grey inputs left out, the examples and splits, and the smoke config end to end through
`cgml_jax.train.train_and_evaluate` (CIFAR-10 cases skip without the data folder)."""

import json
import math
import os

import numpy as np
import pytest

from cgml_jax import train
from cgml_jax.data import load_source, transforms
from cgml_jax.data import sources as sources_lib
from cgml_jax.metrics import modes
from cgml_jax.tasks import hue_modes, image
from experiments import hue_modes as hue_config

NO = modes.NO_MODE
MODE_METRICS = ('coverage', 'ideal_coverage', 'coverage_ratio', 'phantom_rate',
                'mode_frequency_error', 'mode_histogram', 'fidelity', 'fidelity_nearest',
                'psnr_mode_best', 'psnr_nearest_best', 'num_inputs', 'num_skipped')


def _config(variant='smoke'):
  return hue_config.get_config(variant)


@pytest.fixture(scope='module')
def test_set():
  """The smoke config's 8 embedded test crops (16 px), transformed for evaluation."""
  return image.load_eval_set(hue_modes.TASK, _config(), 'test')


def _rotations(rule, ab):
  """(N, M, S, S, 2): the truth in every mode."""
  return np.stack([hue_modes.rotate(ab, t) for t in rule.theta], axis=1)


def test_the_truth_gets_its_own_mode_exactly(test_set):
  rule = hue_modes.mode_rule(_config())
  ab = test_set['ab']
  assert not hue_modes.grey_inputs(rule, ab).any()   # the test crops are all chromatic
  a = hue_modes.sample_modes(rule, ab, test_set['y'][:, None])
  np.testing.assert_array_equal(a[:, 0], test_set['mode'])
  assert len(set(test_set['mode'].tolist())) > 1       # the modes drawn differ
  every = _rotations(rule, ab)
  assert hue_modes.sample_modes(rule, ab, every).tolist() == [[0, 1, 2]] * len(ab)
  fit = hue_modes.fit_rotation(ab, every, rule.pixel_chroma)
  np.testing.assert_allclose(fit['scale'], 1.0, atol=1e-6)
  np.testing.assert_allclose(fit['residual'], 0.0, atol=1e-6)
  np.testing.assert_allclose(hue_modes.circular_distance(fit['angle'], rule.theta), 0.0,
                             atol=1e-6)


def test_desaturated_noise_and_between_mode_samples_are_phantoms(test_set):
  rule = hue_modes.mode_rule(_config())
  ab, n = test_set['ab'], len(test_set['ab'])
  truth = hue_modes.rotate(ab, rule.theta[1])
  rng = np.random.default_rng(0)
  noise = rng.normal(size=ab.shape) * np.abs(ab).mean()
  samples = np.stack([
      0.3 * truth,                                   # desaturated: s = 0.3 < 0.5
      0.7 * truth,                                   # paler but kept: s = 0.7
      noise,                                         # no rotation of the truth fits
      truth + 2.0 * noise,                           # the right angle, a bad fit
      hue_modes.rotate(ab, np.deg2rad(65.0)),        # just past the middle: mode 1
      0.0 * truth,                                   # grey: no chroma at all
  ], axis=1)
  a = hue_modes.sample_modes(rule, ab, samples)
  assert a.tolist() == [[NO, 1, NO, NO, 1, NO]] * n
  # Uneven angles leave arcs nearer no mode than half the smallest gap (45 degrees here).
  c = _config()
  c.data.num_modes, c.data.angles = 2, (0.0, 90.0)
  rule = hue_modes.mode_rule(c)
  turned = np.stack([hue_modes.rotate(ab, np.deg2rad(d)) for d in (30, 60, 180, 300)], 1)
  assert hue_modes.sample_modes(rule, ab, turned).tolist() == [[0, 1, NO, NO]] * n


@pytest.mark.parametrize('num_modes,prior', [(2, ()), (3, ()), (3, (0.6, 0.3, 0.1)),
                                             (4, ())])
def test_the_regression_collapse_is_a_phantom(test_set, num_modes, prior):
  c = _config()
  c.data.num_modes, c.data.prior = num_modes, prior
  rule = hue_modes.mode_rule(c)
  ab = test_set['ab']
  mean = np.einsum('m,nm...->n...', rule.prior, _rotations(rule, ab))[:, None]
  factor = hue_modes.regression_factor(rule.theta, rule.prior)
  fit = hue_modes.fit_rotation(ab, mean, rule.pixel_chroma)
  np.testing.assert_allclose(fit['scale'], abs(factor), atol=1e-6)
  assert abs(factor) < rule.min_scale                  # 0, or 0.44 for the skewed prior
  assert (hue_modes.sample_modes(rule, ab, mean) == NO).all()


def test_a_rule_that_counts_the_regression_as_a_mode_is_refused():
  c = _config()
  c.data.num_modes, c.data.prior = 2, (0.8, 0.2)       # mean = 0.6 x mode 0
  with pytest.raises(ValueError, match='counts as a mode'):
    hue_modes.mode_rule(c)
  c.eval.min_scale = 0.7
  hue_modes.mode_rule(c)
  c.data.angles = (0.0, 0.0)
  with pytest.raises(ValueError, match='distinct'):
    hue_modes.angles(c)
  c.data.angles = (0.0, 90.0)
  assert math.isclose(math.degrees(hue_modes.half_gap(hue_modes.angles(c))), 45.0)


def test_grey_inputs_are_skipped_and_counted(test_set):
  c = _config()
  rule = hue_modes.mode_rule(c)
  ab = test_set['ab'].copy()
  ab[0] *= 0.01                                        # a nearly grey photo
  ab[1, : ab.shape[1] - 1] = 0.0                       # colour in one row of 16: 6 %
  grey = hue_modes.grey_inputs(rule, ab)
  assert grey.tolist() == [True, True] + [False] * (len(ab) - 2)
  every = _rotations(rule, ab)                         # K = M samples: one per mode
  s = hue_modes.mode_scores(c, test_set['x'], ab, every)
  assert s['num_skipped'] == 2 and s['num_inputs'] == len(ab) - 2
  assert s['coverage'] == 1.0 and s['phantom_rate'] == 0.0
  assert s['mode_frequency_error'] < 1e-12             # uniform prior, one sample each
  assert math.isclose(s['ideal_coverage'], modes.ideal_coverage(rule.prior, 3))
  assert math.isclose(s['ideal_coverage'], 2 / 9)       # 3! / 3^3
  assert s['fidelity'] < 1e-10 and s['psnr_mode_best'] == math.inf
  all_grey = hue_modes.mode_scores(c, test_set['x'], 0.0 * ab, every)
  assert all_grey['num_inputs'] == 0 and all_grey['num_skipped'] == len(ab)


def test_a_regression_scores_no_mode_but_a_psnr_against_its_nearest_truth(test_set):
  c = _config()
  c.eval.num_samples = 4
  rule = hue_modes.mode_rule(c)
  ab = test_set['ab']
  mean = np.einsum('m,nm...->n...', rule.prior, _rotations(rule, ab))
  copies = np.repeat(mean[:, None], 4, axis=1)
  s = hue_modes.mode_scores(c, test_set['x'], ab, copies)
  assert s['coverage'] == 0.0 and s['phantom_rate'] == 1.0
  assert s['mode_frequency_error'] == 1.0
  assert math.isnan(s['fidelity']) and math.isnan(s['psnr_mode_best'])
  assert 5.0 < s['psnr_nearest_best'] < 60.0
  assert s['fidelity_nearest'] > 0


def test_examples_rotate_the_photo_and_only_evaluation_keeps_its_ab():
  c = _config()
  src = image.default_source(c, 'train')
  lab = transforms.compose(image.resize(c.data.image_size), transforms.colorization())(
      src[0], None)
  theta = hue_modes.angles(c)
  train_ex = hue_modes.transform(c)(src[0], np.random.default_rng(3))
  assert set(train_ex) == {'x', 'y', 'mode'}
  np.testing.assert_allclose(train_ex['x'], lab['x'])
  np.testing.assert_allclose(train_ex['y'], hue_modes.rotate(lab['y'], theta[train_ex['mode']]),
                             atol=1e-6)
  ev = hue_modes.transform(c, 'test')(src[0], np.random.default_rng(3))
  np.testing.assert_allclose(ev['ab'], lab['y'])
  # Chroma is kept: every mode is as colourful as the photo.
  np.testing.assert_allclose(np.linalg.norm(ev['y'], axis=-1), np.linalg.norm(lab['y'], axis=-1),
                             atol=1e-6)


def test_embedded_test_crops_come_from_photos_the_training_split_never_sees():
  c = _config()
  train_src, test_src = (image.default_source(c, s) for s in ('train', 'test'))
  assert set(train_src.names).isdisjoint(test_src.names)
  assert set(test_src.names) == set(sources_lib.EMBEDDED_EVAL_IMAGES)


def test_cifar_evaluation_images_span_every_class(data_dir):
  c = _config('cifar,smoke')
  c.data.data_dir = str(data_dir)
  c.eval.num_test = 30
  src = load_source('cifar10', c.data.test_split, data_dir=c.data.data_dir)
  labels = [int(src[i]['label']) for i in range(c.eval.num_test)]
  assert sorted(set(labels)) == list(range(10))
  test_rows = set(sources_lib.split_indices('cifar10', 'test', data_dir)[1].tolist())
  train_rows = set(sources_lib.split_indices('cifar10', 'train', data_dir)[1].tolist())
  assert test_rows.isdisjoint(train_rows)


def _run(config, workdir):
  train.train_and_evaluate(config, str(workdir))
  with open(os.path.join(workdir, 'metrics.json')) as f:
    return json.load(f)


def _check_task_metrics(saved, config):
  assert saved['methods'] == ['l1', 'cgml']
  for m in saved['methods']:
    scores = saved['task_metrics'][m]
    assert all(k in scores for k in MODE_METRICS), (m, scores)
    for k in ('coverage', 'phantom_rate', 'mode_frequency_error'):
      assert 0.0 <= scores[k] <= 1.0, (m, k, scores[k])
    assert scores['num_samples'] == config.eval.num_samples
    assert scores['num_inputs'] + scores['num_skipped'] == config.eval.num_test
    assert math.isclose(sum(scores['mode_histogram']) + scores['phantom_rate'], 1.0,
                        abs_tol=1e-4)
  assert saved['task_metrics']['l1']['coverage'] == 0.0   # K copies of one output


def test_smoke_end_to_end(tmp_path):
  config = _config()
  assert tuple(config.methods) == ('l1', 'cgml')
  assert config.latent.init_candidates == 16
  assert _config('paper,smoke').latent.init_candidates == 1
  _check_task_metrics(_run(config, tmp_path), config)


@pytest.mark.slow  # long; run with -m slow
def test_cifar_smoke_end_to_end(tmp_path, data_dir):
  config = _config('variant=cifar3_skew,smoke')
  config.data.data_dir = str(data_dir)
  saved = _run(config, tmp_path)
  _check_task_metrics(saved, config)
  assert saved['task_metrics']['cgml']['prior'] == [0.6, 0.3, 0.1]
