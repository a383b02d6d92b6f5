"""Known-mode metrics (cgml_jax.metrics.modes) on hand-built assignments and samples, and
the colour-modes task's mode rule, sources and examples."""

import math

import numpy as np
import pytest

from cgml_jax.metrics import modes
from cgml_jax.tasks import colour_modes
from experiments import colour_modes as colour_config

NO = modes.NO_MODE


def test_all_modes_in_every_row():
  a = np.array([[0, 1, 2, 0], [2, 1, 0, 1]])
  s = modes.summary(a, (1, 1, 1))
  assert s['coverage'] == 1.0 and s['phantom_rate'] == 0.0
  # histogram (3/8, 3/8, 2/8) vs uniform: TV = 1/2 (1/24 + 1/24 + 2/24) = 1/12
  assert math.isclose(s['mode_frequency_error'], 1 / 12)


def test_one_mode_only():
  a = np.zeros((5, 4), int)
  s = modes.summary(a, (1, 1, 1))
  assert s['coverage'] == 0.0 and s['phantom_rate'] == 0.0
  assert math.isclose(s['mode_frequency_error'], 2 / 3)      # 1/2 (2/3 + 1/3 + 1/3)
  assert s['mode_histogram'] == [1.0, 0.0, 0.0]


def test_phantoms_count_as_an_outcome_the_data_never_has():
  a = np.array([[0, 1, NO, NO], [1, 0, NO, NO]])
  s = modes.summary(a, (0.5, 0.5))
  assert s['coverage'] == 1.0 and s['phantom_rate'] == 0.5
  assert math.isclose(s['mode_frequency_error'], 0.5)          # 1/2 (1/4 + 1/4 + 1/2)
  assert modes.summary(np.full((3, 2), NO), (1, 1))['mode_frequency_error'] == 1.0


def test_skewed_frequencies_against_a_skewed_prior():
  a = np.array([[0] * 7 + [1] * 3])                            # 70 / 30
  assert math.isclose(modes.mode_frequency_error(a, (0.7, 0.3)), 0.0, abs_tol=1e-12)
  assert math.isclose(modes.mode_frequency_error(a, (0.5, 0.5)), 0.2)
  assert math.isclose(modes.mode_frequency_error(a, (7, 3)), 0.0, abs_tol=1e-12)  # normalised


def test_assign_nearest_within_tau():
  centres = np.array([[0.0, 0.0], [1.0, 0.0]])
  f = np.array([[[0.1, 0.0], [0.9, 0.1], [0.5, 0.0], [3.0, 3.0]]])
  assert modes.assign_nearest(f, centres, 0.3).tolist() == [[0, 1, NO, NO]]
  assert modes.assign_nearest(f, centres, np.inf).tolist() == [[0, 1, 0, 1]]
  per_input = np.array([[[5.0, 0.0], [0.0, 0.0]]])             # (N, M, D): centres swapped
  assert modes.assign_nearest(f[:, :2], per_input, 0.3).tolist() == [[1, NO]]


@pytest.mark.parametrize('prior,match', [((1, 2), 'entries'), ((-1, 1, 1), 'non-negative'),
                                         ((0, 0, 0), 'not all zero')])
def test_bad_priors_raise(prior, match):
  with pytest.raises(ValueError, match=match):
    modes.validate_prior(prior, 3)


def test_colour_mode_rule_on_hand_built_samples():
  c = colour_config.get_config('smoke')
  pal = colour_modes.palette(c)
  assert math.isclose(colour_modes.tau(c), math.sqrt(2) / 2)   # half the R-G-B gap
  g = np.zeros((1, 8, 8, 1))
  g[0, 2:6, 2:6] = 1.0
  g[0, 2, 2:6] = 0.6                                           # anti-aliased edge: still stroke
  x = 2 * g - 1
  red, green, blue = (colour_modes.render(g, pal[m]) for m in range(3))
  grey = colour_modes.render(g, np.full(3, 1 / 3))             # the L1 mean: a phantom
  shifted = red.copy()
  shifted[0, 4, 4] = 1.0                                       # one wrong pixel: red still
  samples = np.stack([red[0], green[0], blue[0], grey[0], shifted[0]])[None]
  colours = colour_modes.sample_colours(x, samples)
  np.testing.assert_allclose(colours[0, :3], pal, atol=1e-12)  # exact on the ground truth
  s = colour_modes.mode_scores(c, x, samples)
  assert s['coverage'] == 1.0 and math.isclose(s['phantom_rate'], 0.2)
  assert s['mode_histogram'] == [0.4, 0.2, 0.2]
  # fidelity: only the shifted sample has an error against its own mode's rendering
  expected = np.abs(shifted - red).mean() / 4
  assert math.isclose(s['fidelity'], expected)
  c.eval.mode_tau = 2.0                                        # an explicit tolerance
  assert colour_modes.mode_scores(c, x, samples)['phantom_rate'] == 0.0


def test_palette_prior_and_mode_count_checks():
  c = colour_config.get_config('smoke')
  c.data.num_modes = 6
  assert math.isclose(colour_modes.tau(c), 0.5)                # e.g. red - yellow = 1
  c.data.num_modes = 7
  with pytest.raises(ValueError, match='num_modes'):
    colour_modes.palette(c)
  c.data.num_modes = 2
  c.data.prior = (0.9, 0.1)
  np.testing.assert_allclose(colour_modes.prior(c), [0.9, 0.1])


def test_shapes_are_deterministic_and_examples_follow_the_prior():
  c = colour_config.get_config('smoke')
  train = colour_modes.source(c, 'train')
  again = colour_modes.source(c, 'train')
  test = colour_modes.source(c, 'test')
  assert len(train) == c.data.num_train and len(test) == c.eval.num_test
  np.testing.assert_array_equal(train[3]['image'], again[3]['image'])
  assert not np.array_equal(train[0]['image'], test[0]['image'])
  assert train[0]['image'].shape == (16, 16, 1) and train[0]['image'].dtype == np.uint8
  assert all((train[i]['image'] > 127).sum() >= 8 for i in range(20))   # visible glyphs
  c.data.prior = (0.6, 0.3, 0.1)
  fn = colour_modes.transform(c)
  rng = np.random.default_rng(0)
  ex = [fn(train[i % len(train)], rng) for i in range(3000)]
  assert ex[0]['x'].shape == (16, 16, 1) and ex[0]['y'].shape == (16, 16, 3)
  freq = np.bincount([e['mode'] for e in ex], minlength=3) / len(ex)
  np.testing.assert_allclose(freq, [0.6, 0.3, 0.1], atol=0.03)
  g = (ex[0]['x'] + 1) / 2
  colour = np.asarray(colour_modes.PALETTE)[ex[0]['mode']]
  np.testing.assert_allclose(ex[0]['y'], colour_modes.render(g, colour), atol=1e-6)


def test_mnist_box_reports_the_shared_mode_metrics():
  from cgml_jax.tasks import mnist_corrupted
  from experiments import mnist_corrupted as mnist_config
  c = mnist_config.get_config('box')                           # box_rate p = 0.3
  n, k = 2, 4
  mask = np.zeros((n, 28, 28, 1), np.float32)
  mask[:, 2:10, 4:12] = 1
  box = np.stack([mnist_corrupted.box_in(m, c.data.box_size) for m in mask])
  data = {'y': -np.ones((n, 28, 28, 1), np.float32), 'mask': mask, 'box': box}
  out = -np.ones((n, k, 28, 28, 1), np.float32)
  out[0, :1] = np.maximum(out[0, :1], 2 * box[0] - 1)          # input 0: one box of 4
  r = mnist_corrupted.mode_scores(c, data, out)                # input 1: no box at all
  assert r['coverage'] == r['both_modes_rate'] == 0.5 and r['phantom_rate'] == 0.0
  assert math.isclose(r['mode_frequency_error'], abs(1 / 8 - 0.3))


def test_a_collapsed_regression_never_counts_as_a_mode():
  # Grey among primaries: uniform over grey, red, green, blue, yellow averages to
  # (0.5, 0.5, 0.3), within half the palette gap (0.43) of grey. The tau of the rule keeps
  # that mean (and anything as close to it) off the grey mode.
  c = colour_config.get_config('variant=grey5,smoke')
  pal, p = colour_modes.palette(c), colour_modes.prior(c)
  mean = colour_modes.regression_colour(pal, p)
  np.testing.assert_allclose(mean, [0.5, 0.5, 0.3])
  assert np.linalg.norm(mean - pal[0]) < 0.5 * colour_modes.min_gap(pal)  # the old blind spot
  t = colour_modes.tau(c)
  assert t < np.linalg.norm(mean - pal[0])
  g = np.zeros((1, 8, 8, 1))
  g[0, 2:6, 2:6] = 1.0
  samples = np.stack([colour_modes.render(g, mean)[0], colour_modes.render(g, pal[0])[0]])
  s = colour_modes.mode_scores(c, 2 * g - 1, samples[None])
  assert s['phantom_rate'] == 0.5 and s['mode_histogram'][0] == 0.5   # mean: a phantom
  # A palette whose mean is one of its modes cannot tell them apart: refused.
  c.data.palette = ((0.5, 0.5, 0.5), (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 1.0, 1.0),
                    (1.0, 0.0, 1.0))
  with pytest.raises(ValueError, match='mean colour'):
    colour_modes.tau(c)
  # The primaries keep their tau: the mean grey is 0.82 from each.
  assert math.isclose(colour_modes.tau(colour_config.get_config('smoke')), math.sqrt(2) / 2)


def test_ideal_coverage_of_a_sampler_that_draws_from_the_prior():
  assert math.isclose(modes.ideal_coverage([1 / 3] * 3, 16),
                      1 - 3 * (2 / 3) ** 16 + 3 * (1 / 3) ** 16)
  assert modes.ideal_coverage([0.5, 0.5], 1) == 0.0
  rng = np.random.default_rng(0)
  p = np.array([0.4, 0.3, 0.2, 0.1])
  draws = rng.choice(4, size=(100_000, 16), p=p)
  assert abs(modes.coverage(draws, 4) - modes.ideal_coverage(p, 16)) < 0.01
  s = modes.summary(draws[:1000], p)
  assert math.isclose(s['coverage_ratio'], s['coverage'] / s['ideal_coverage'])
