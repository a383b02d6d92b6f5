"""cgml_jax.metrics.probe: the linear probe on synthetic features, and bottleneck features of a
frozen conv encoder."""

import jax
import numpy as np
import pytest

from cgml_jax.metrics import probe
from cgml_jax.models.conv import build_conv_models


def _blobs(rng, n, centres, noise=1.0):
  y = rng.integers(0, len(centres), n)
  return centres[y] + noise * rng.normal(size=(n, centres.shape[1])), y


def test_separable_features_are_classified():
  rng = np.random.default_rng(0)
  centres = rng.normal(size=(4, 16)) * 4
  f_tr, y_tr = _blobs(rng, 400, centres)
  f_te, y_te = _blobs(rng, 200, centres)
  out = probe.fit_linear_probe(f_tr, y_tr, f_te, y_te, steps=50)
  assert out['test_acc'] > 0.95 and out['train_acc'] > 0.95
  assert out['dim'] == 16 and out['num_train'] == 400 and out['num_test'] == 200
  assert out['l2'] in (1e-4, 1e-3, 1e-2, 1e-1)


def test_random_labels_give_chance():
  rng = np.random.default_rng(1)
  f_tr, f_te = rng.normal(size=(1000, 32)), rng.normal(size=(1000, 32))
  y_tr, y_te = rng.integers(0, 10, 1000), rng.integers(0, 10, 1000)
  out = probe.fit_linear_probe(f_tr, y_tr, f_te, y_te, steps=50)
  # 10 balanced classes: chance 0.1; 1000 test rows give a std of about 0.01.
  assert abs(out['test_acc'] - 0.1) < 0.04, out
  assert out['chance'] < 0.13


def test_bad_inputs_raise():
  f = np.zeros((10, 3))
  y = np.zeros(10, int)
  with pytest.raises(ValueError, match='features'):
    probe.fit_linear_probe(f, y, np.zeros((5, 4)), np.zeros(5, int))
  with pytest.raises(ValueError, match='labels'):
    probe.fit_linear_probe(f, y[:9], f, y)
  with pytest.raises(ValueError, match='val_frac'):
    probe.fit_linear_probe(f, y, f, y, val_frac=1.0)


def test_features_are_the_flattened_bottleneck():
  enc, _, _ = build_conv_models(16, 2, 1, 4, base_channels=8, max_channels=16,
                                bottleneck_size=4, latent_hidden=(8,))
  x = np.random.default_rng(0).normal(size=(5, 16, 16, 2)).astype(np.float32)
  variables = jax.jit(enc.init)(jax.random.key(0), x[:1])
  f = probe.features(enc, variables, x, batch_size=2)   # chunks of 2, last one padded
  h = enc.apply(variables, x, train=False)
  np.testing.assert_allclose(f, np.asarray(h[-1]).reshape(5, -1), rtol=1e-5, atol=1e-6)
  assert f.shape == (5, 4 * 4 * 16)


def test_table5_protocol_config_probes_encoders_of_facades_completion(tmp_path):
  """experiments/probe.py: the paper's Table 5 protocol, H trained on facades completion,
  then the CIFAR-10 probe of every frozen H and of an untrained one."""
  import json

  from cgml_jax import train
  from experiments import probe as probe_config
  config = probe_config.get_config('smoke')
  assert (config.task, config.data.name, config.data.image_key) == ('complete', 'facades',
                                                                    'target')
  assert probe_config.get_config().probe.datasets == ('cifar10',)
  train.train_and_evaluate(config, str(tmp_path))
  out = json.load(open(tmp_path / 'metrics.json'))
  results = out['probe']['cifar10']['results']
  assert set(results) == {'l1', 'cgml', 'untrained_encoder'}
  for r in results.values():
    assert r['num_train'] == 40 and r['num_test'] == 20 and 0 <= r['test_acc'] <= 1
    assert r['dim'] > 0
