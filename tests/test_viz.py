"""Labelled grids: which texts go over which columns, and where the cells end up."""

import numpy as np
import pytest

from cgml_jax.tasks import names, viz


def _cells(n, k, size=8):
  return np.linspace(-1, 1, n * k * size * size * 3, dtype=np.float32).reshape(
      n, k, size, size, 3)


def test_samples_labels_name_input_truth_and_methods_in_order():
  labels = viz.samples_labels({'l1': 1, 'cgml': 3, 'pix2pix+msgan': 2})
  assert [t for t, _ in labels.groups] == [
      'input', 'ground truth', names.display('l1'), names.display('cgml'),
      names.display('pix2pix+msgan')]
  assert [t for t, _ in labels.groups][2:] == ['L1 regression', 'cGML with ρ', 'pix2pix+MSGAN']
  assert [n for _, n in labels.groups] == [1, 1, 1, 3, 2]
  assert labels.columns == ('', '', '', 'k = 1', 'k = 2', 'k = 3', 'k = 1', 'k = 2')
  assert labels.rows == ()


def test_samples_labels_without_truth_or_sample_columns():
  labels = viz.samples_labels({'cimle': 4}, truth=False)
  assert labels.groups == (('input', 1), ('cIMLE', 4))
  assert labels.columns == ('', 'k = 1', 'k = 2', 'k = 3', 'k = 4')
  only_one = viz.samples_labels({'l1': 1, 'context_encoder': 1})
  assert only_one.columns == ()   # no sample index to show: no second header row
  with pytest.raises(ValueError, match="'cgml'.*0"):
    viz.samples_labels({'cgml': 0})


def test_trajectory_labels_name_the_frames_and_starts():
  labels = viz.trajectory_labels([0, 2, 5], starts=2)
  assert labels.groups == (('input', 1), ('cGML with ρ: G(h, z_t)', 3))
  assert labels.columns == ('', 't = 0', 't = 2', 't = 5')
  assert labels.rows == ('z₀ #1', 'z₀ #2')


def test_labelled_grid_is_the_enlarged_grid_under_a_header():
  rows = [list(r) for r in _cells(3, 4)]
  bare = viz.grid(rows)
  scale = 3
  labels = viz.Labels(groups=(('input', 1), ('cGML with ρ', 3)),
                      columns=('', 'k = 1', 'k = 2', 'k = 3'))
  out = viz.labelled_grid(rows, labels, scale=scale)
  big = bare.repeat(scale, 0).repeat(scale, 1)
  assert out.dtype == np.uint8 and out.shape[1] == big.shape[1]   # no row labels: same width
  top = out.shape[0] - big.shape[0]
  assert 2 * viz.FONT_PX <= top <= 4 * viz.FONT_PX                # two lines of text
  np.testing.assert_array_equal(out[top:], big)
  assert (out[:top] < 128).any()                                  # some text was drawn
  with_rows = viz.labelled_grid(rows, viz.Labels(rows=('a', 'b', 'c')), scale=scale)
  assert with_rows.shape[0] == big.shape[0] and with_rows.shape[1] > big.shape[1]
  np.testing.assert_array_equal(with_rows[:, -big.shape[1]:], big)


def test_labelled_grid_wraps_a_label_wider_than_its_cell():
  rows = [list(_cells(1, 2)[0])]
  short = viz.labelled_grid(rows, viz.Labels(groups=(('a', 1), ('b', 1))), scale=1)
  long = viz.labelled_grid(rows, viz.Labels(groups=(('a', 1), ('two words', 1))), scale=1)
  assert long.shape[1] == short.shape[1] and long.shape[0] > short.shape[0]


def test_labelled_grid_refuses_labels_that_do_not_fit_the_grid():
  rows = [list(r) for r in _cells(2, 3)]
  with pytest.raises(ValueError, match='span 2 columns, the grid has 3'):
    viz.labelled_grid(rows, viz.Labels(groups=(('input', 1), ('x', 1))))
  with pytest.raises(ValueError, match='2 column labels for 3 columns'):
    viz.labelled_grid(rows, viz.Labels(columns=('a', 'b')))
  with pytest.raises(ValueError, match='1 row labels for 2 rows'):
    viz.labelled_grid(rows, viz.Labels(rows=('a',)))


def test_samples_grid_labelled_by_default_and_bare_on_request():
  n, k, size = 2, 3, 16
  x = _cells(n, 1, size)[:, 0]
  cols = {'l1': _cells(n, 1, size), 'cgml': _cells(n, k, size)}
  bare = viz.samples_grid(x, x, cols, labelled=False)
  assert bare.shape == (n * (size + 2) + 2, (2 + 1 + k) * (size + 2) + 2, 3)
  scale = viz.legible_scale(size)
  assert scale == viz.CELL_PX // size
  out = viz.samples_grid(x, x, cols)
  big = bare.repeat(scale, 0).repeat(scale, 1)
  assert out.shape[1] == big.shape[1] and out.shape[0] > big.shape[0]
  np.testing.assert_array_equal(out[-big.shape[0]:], big)
  no_truth = viz.samples_grid(x, None, cols, scale=1)
  assert no_truth.shape[1] == bare.shape[1] - (size + 2)
