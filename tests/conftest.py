"""Tests that need the offline data folder skip, naming it, when it is absent.

The folder (MNIST, CIFAR-10, CelebA, facades, ModelNet10, LPIPS weights as .npz) is found
through $CGML_DATA_DIR or next to the repository (cgml_jax.data.resolve_data_dir). A fresh
clone has no such folder: a test that reaches for it raises DataNotFoundError, which is
turned into a skip with the reason below (so is WeightsNotFoundError for the LPIPS
weights). With the folder present the same error is a
failure, as it should be.
"""

import pytest

from cgml_jax.data import sources
from cgml_jax.metrics import lpips

DATA_DIR = sources.resolve_data_dir(must_exist=False)
DATA_AVAILABLE = DATA_DIR.is_dir()
SKIP_REASON = (f'needs the offline data folder (set {sources.ENV_VAR} to it; see '
               'docs/data.md); none found')


@pytest.fixture
def data_dir():
  """The offline data folder; skips the test when there is none."""
  if not DATA_AVAILABLE:
    pytest.skip(SKIP_REASON)
  return DATA_DIR


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
  outcome = yield
  if DATA_AVAILABLE or outcome.excinfo is None:
    return
  if issubclass(outcome.excinfo[0], (sources.DataNotFoundError, lpips.WeightsNotFoundError)):
    outcome.force_exception(pytest.skip.Exception(SKIP_REASON, _use_item_location=True))
