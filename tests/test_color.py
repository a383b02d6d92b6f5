"""Tests of cgml_jax.data.color against scikit-image."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import skimage.color
import skimage.data

from cgml_jax.data import color, transforms


def _images():
  rng = np.random.default_rng(0)
  x = rng.random((3, 8, 8, 3))
  # Both sides of the sRGB and LAB knees, black, white and saturated primaries.
  x[0, 0, :6] = [[0, 0, 0], [1, 1, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1],
                 [0.04, 0.0031, 0.05]]
  return x


def test_rgb_to_lab_matches_skimage():
  x = _images()
  ref = skimage.color.rgb2lab(x)
  out = jax.jit(color.rgb_to_lab)(jnp.asarray(x, jnp.float32))
  assert out.shape == x.shape
  np.testing.assert_allclose(np.asarray(out), ref, atol=1e-3)
  photo = skimage.data.chelsea()[:64, :64] / 255.0
  np.testing.assert_allclose(np.asarray(color.rgb_to_lab(jnp.asarray(photo, jnp.float32))),
                             skimage.color.rgb2lab(photo), atol=1e-3)


def test_lab_to_rgb_matches_skimage_including_out_of_gamut():
  rng = np.random.default_rng(1)
  lab = skimage.color.rgb2lab(_images())
  lab[..., 1:] += rng.normal(0, 30, lab[..., 1:].shape)  # many out-of-gamut colours
  with warnings.catch_warnings():
    warnings.simplefilter('ignore')  # skimage warns about negative Z, which it clips
    ref = skimage.color.lab2rgb(lab)
  out = jax.jit(color.lab_to_rgb)(jnp.asarray(lab, jnp.float32))
  np.testing.assert_allclose(np.asarray(out), ref, atol=1e-4)


def test_any_leading_shape_roundtrip_and_gradients():
  x = jnp.asarray(_images().reshape(3, 4, 16, 3), jnp.float32)  # extra batch axis
  np.testing.assert_allclose(color.lab_to_rgb(color.rgb_to_lab(x)), x, atol=1e-4)
  l, ab = color.rgb_to_l_ab(x)
  assert l.shape == (3, 4, 16, 1) and ab.shape == (3, 4, 16, 2)
  assert -1 <= float(l.min()) and float(l.max()) <= 1 and float(jnp.abs(ab).max()) <= 1
  np.testing.assert_allclose(color.l_ab_to_rgb(l, ab), x, atol=1e-4)
  g1 = jax.jit(jax.grad(lambda v: color.rgb_to_lab(v).sum()))(x)
  g2 = jax.jit(jax.grad(lambda v: color.lab_to_rgb(v).sum()))(color.rgb_to_lab(x))
  assert bool(jnp.isfinite(g1).all()) and bool(jnp.isfinite(g2).all())
  with pytest.raises(ValueError, match='3 channels'):
    color.rgb_to_lab(jnp.zeros((2, 4)))


def test_numpy_transform_agrees_with_jax_split():
  img = skimage.data.astronaut()[:32, :32]
  out = transforms.colorization()({'image': img}, np.random.default_rng(0))
  l, ab = color.rgb_to_l_ab(jnp.asarray(img / 255.0, jnp.float32))
  np.testing.assert_allclose(out['x'], l, atol=1e-4)
  np.testing.assert_allclose(out['y'], ab, atol=1e-4)
