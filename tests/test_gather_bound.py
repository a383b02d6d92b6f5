"""Smoke test of benchmarks/gather_bound.py at tiny sizes."""

import pytest

from benchmarks import gather_bound


def test_gather_bound_smoke():
  res = gather_bound.main(['--smoke', '--rounds', '1', '--json'])
  # The stand-in really replaced the gathers (jax caches traces by function, so a reused
  # function would silently keep the library's), and only the gathers: main() checks that
  # every program runs the same dots and convolutions.
  assert res['free_all']['slices'] < res['free_up']['slices'] < res['library']['slices']
  assert res['dots_and_convs'] > 0
  for name in ('library', 'free_up', 'free_all'):
    assert res[name]['best_s'] > 0 and res[name]['fraction_of_matmul'] > 0
  assert res['library']['ratio_to_library'] == 1.0


def test_unknown_variant_is_named():
  with pytest.raises(ValueError, match='free_most'):
    with gather_bound.gathers('free_most'):
      pass
