"""The colour-modes comparison's smoke config end to end through the real entry point
(`cgml_jax.train.train_and_evaluate`): L1, cGML, BicycleGAN and cIMLE train, every
optimiser still moves at the end, and metrics.json has the known-mode metrics per method."""

import json
import math
import os

from PIL import Image

from cgml_jax import train
from cgml_jax.tasks import image
from experiments import compare_modes

MODE_METRICS = ('coverage', 'phantom_rate', 'mode_frequency_error', 'fidelity',
                'fidelity_nearest', 'mode_histogram')


def test_smoke_comparison_end_to_end(tmp_path):
  config = compare_modes.get_config('smoke')
  methods = list(config.methods)
  assert {'bicyclegan', 'cimle'} <= set(methods)
  train.train_and_evaluate(config, str(tmp_path))
  with open(os.path.join(tmp_path, 'metrics.json')) as f:
    saved = json.load(f)
  assert saved['methods'] == methods
  for m in methods:
    norms = saved['train'][m]['final_update_norm']
    assert norms and min(norms.values()) > 0, (m, norms)
    scores = saved['task_metrics'][m]
    assert all(k in scores for k in MODE_METRICS), (m, scores)
    for k in ('coverage', 'phantom_rate', 'mode_frequency_error'):
      assert 0.0 <= scores[k] <= 1.0, (m, k, scores[k])
    assert scores['num_samples'] == config.eval.num_samples
    assert math.isclose(sum(scores['mode_histogram']) + scores['phantom_rate'], 1.0,
                        abs_tol=1e-4)
  assert set(saved['train']['bicyclegan']['final_update_norm']) == {
      'update_norm_d', 'update_norm_g', 'update_norm_e'}
  # samples_test.png is the tile grid (input | truth | L1's one output | K shown samples of
  # each other method), enlarged for legibility, under a header naming the columns.
  with Image.open(os.path.join(tmp_path, 'samples_test.png')) as im:
    width, height = im.size
  size, pad = config.data.image_size, 2
  scale = image._scale(config)
  shown = min(config.eval.grid_samples, config.eval.num_samples)
  ncol = 2 + sum(1 if m == 'l1' else shown for m in methods)
  nrow = min(config.eval.grid_rows, config.eval.num_test)
  assert width == scale * (ncol * (size + pad) + pad)
  assert height > scale * (nrow * (size + pad) + pad)
