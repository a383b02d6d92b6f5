r"""MR-GAN: moment reconstruction losses (Lee, Ha & Kim, ICLR 2019).

"Harmonizing Maximum Likelihood with GANs for Multimodal Conditional Generation" replaces
pix2pix's L1 term, which pulls every sample to y and so collapses diversity, with losses on
the *statistics* of K samples y~_1..y~_K = G(x, z_k) of the same input:

  predictor (the paper's "proxy MR-GAN"): a twin network P(x) -> (centre, log-dispersion)
    trained by maximum likelihood on (x, y), then frozen:
      Gaussian:  1/2 [(y - mu^)^2 / sigma^2 + log sigma^2]          (mean, log-variance)
      Laplace:   |y - m^| / b^ + log b^                                (median, log-MAD)

  generator losses, per pixel and averaged. Names as in the cGML paper's comparison (the
  first version of MR-GAN); the published paper and released code call MCMLE the "MR"
  losses (MR_1, MR_2: MLE of y under the sample moments; `mle_weight` in the released
  configs) and MLMM the "proxy MR" losses (pMR_1, pMR_2: matching the predictor's moments;
  `mm_1st_weight`, `mm_2nd_weight`):
    MCMLE_1    (mu~ - y)^2                                  Monte-Carlo MLE, 1st moment only
    MCMLE_1/2  1/2 [(y - mu~)^2 / sigma~^2 + log sigma~^2]  Monte-Carlo MLE, both moments
    MLMM_1     (mu~ - mu^)^2                                matching P's 1st moment
    MLMM_1/2   (mu~ - mu^)^2 + (sigma~^2 - sigma^2)^2       matching both of P's moments
  with mu~ the sample mean and sigma~^2 the unbiased sample variance (Gaussian), or m~ the
  sample median and b~ = mean_k |y~_k - m~| the sample MAD (Laplace).

Sample median for even K (the default K = 10 is even). The released code takes
`samples.median(dim=1)`, which in PyTorch is the LOWER of the two middle values,
m~ = y~_(K/2) in 1-based order statistics; that is the default here (`median='lower'`).
numpy's convention, the mean of the two middle values, is kept as `median='mean'`. The
choice matters: b~ and its gradient are the same either way (the mean absolute deviation
is flat between the two middle values), but the detached target below moves by half the
middle gap, and where y lies between the two middle samples the MCMLE (Laplace) gradient
changes sign. For odd K the two agree.

Laplace detached target. The median passes gradient to one sample only, so the paper
(Laplace variant of the MR losses) moves the sample *mean* y~bar instead, towards the
detached target

  t = stop_gradient(y~bar + (m_target - m~))        m_target = m^ (MLMM) or y (MCMLE)

which has the same value of the loss as using m~ and a gradient that shifts all samples:
  MCMLE_1:    |y~bar - t|                  MCMLE_1/2:  |y~bar - t| / b~ + log b~
  MLMM_1:     (y~bar - t)^2                MLMM_1/2:   (y~bar - t)^2 + (b~ - b^)^2
(b~ keeps its gradient.) The released code uses exactly these forms.

Checked against the released code (github.com/soochan-lee/MR-GAN, commit 163f582:
losses.py GaussianMLELoss / LaplaceMLELoss with order 1 or 2, and
models/base.py BaseModel.sample_statistics / accumulate_mm_grad): the eight formulas,
the unbiased variance, the lower median, the mean-absolute-deviation-from-the-median
(which, as there, also passes gradient through m~), the 1e-9 guards and the Laplace
detached targets are the ones above. A float64 re-typing of those PyTorch lines agrees
with all eight losses, values and gradients with respect to the samples, to within 2e-15
for K = 4, 5 and 10 (with `median='mean'` the even-K Laplace ones differ by 5-16 % in
value and up to the sign in gradient). The predictor NLLs agree to about 2e-9: the
released log-dispersion path divides by exp(s) + 1e-9, this one multiplies by exp(-s).
The released code averages over the batch as well; the losses here return per-example
means, whose batch mean is the released scalar.

The weights differ between the released configs: MR (mle_weight) 10 everywhere; pMR 10
(Cityscapes, Gaussian), 1 (Cityscapes, Laplace), 1000 (Maps, Gaussian); lambda = 10 here
for all four.

Defaults follow the released configs: K = 10 samples, weight lambda = 10 on the MR loss and
1 on the GAN loss, AMSGrad lr 1e-4, betas (0.5, 0.999), weight decay 1e-4 (PyTorch's
L2-into-the-gradient kind) and gradient clipping at 0.5 by value.

The paper's Pix2Pix setting (App. B.2) beyond the losses lives elsewhere: spatial noise
tensors at the decoder's coarsest maps (`cgml_jax.models.conv.ConvGenerator.z_maps`), the
D / G / P batch sizes and the predictor kept at its lowest validation NLL
(`cgml_jax.peers.methods.mrgan_step`, `train_predictor`), and the per-channel input
normalisation (`channel_stats`, `normalize_inputs` below).

All losses take `samples` (B, K, ...) and return per-example means (B,).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from cgml_jax.training import optim

DISTRIBUTIONS = ('gaussian', 'laplace')
LOSSES = ('mlmm1', 'mlmm12', 'mcmle1', 'mcmle12')
PREDICTOR_LOSSES = LOSSES[:2]   # the ones that read the predictor
NUM_SAMPLES = 10                # K
# MCMLE_1/2 (MR_2) divides by the sample variance (or MAD) of K samples. For Gaussian
# samples sigma~^2 ~ sigma^2 chi^2_{K-1} / (K-1), and E[1 / chi^2_{K-1}] is finite only for
# K - 1 > 2: with K = 2 or 3 the loss is dominated by the few pixels whose samples happen to
# nearly coincide (K = 2 gave MR ~ 4e5-8e5 in a smoke run). MRHyper refuses K < 4 for it.
MIN_SAMPLES_MCMLE12 = 4
MR_WEIGHT = 10.0                # lambda
_EPS = 1e-9                     # the released code's guard on sigma~^2 and b~
MEDIANS = ('lower', 'mean')     # even-K sample median: released code's, numpy's

stop = jax.lax.stop_gradient


def _per_example_mean(a: jax.Array) -> jax.Array:
  return a.reshape(a.shape[0], -1).mean(axis=1)


def _check_samples(samples: jax.Array, ref: jax.Array, name: str):
  if samples.ndim < 2 or samples.shape[0] != ref.shape[0] or samples.shape[2:] != ref.shape[1:]:
    raise ValueError(f'samples must be (B, K, ...) matching {name} (B, ...); got '
                     f'{samples.shape} and {ref.shape}')
  if samples.shape[1] < 2:
    raise ValueError(f'moment losses need K >= 2 samples per input, got {samples.shape[1]}')


# ---------------------------------------------------------------------------------------
# Predictor (proxy MR-GAN).


def gaussian_nll(mean: jax.Array, log_var: jax.Array, y: jax.Array) -> jax.Array:
  r"""Gaussian negative log-likelihood up to a constant (MR-GAN predictor loss, Gaussian).

  1/2 [(y - mu^)^2 exp(-s) + s] with s = log sigma^2, averaged over pixels.

  Args:
    mean, log_var, y: (B, ...) predicted mean, predicted log-variance, target.

  Returns:
    (B,) per-example losses.
  """
  return _per_example_mean(0.5 * (jnp.square(y - mean) * jnp.exp(-log_var) + log_var))


def laplace_nll(median: jax.Array, log_scale: jax.Array, y: jax.Array) -> jax.Array:
  r"""Laplace negative log-likelihood up to a constant (MR-GAN predictor loss, Laplace).

  |y - m^| exp(-s) + s with s = log b^; the MLE of b is the mean absolute deviation from
  the median, which is why the generator side matches b^ with the sample MAD.

  Args:
    median, log_scale, y: (B, ...).

  Returns:
    (B,) per-example losses.
  """
  return _per_example_mean(jnp.abs(y - median) * jnp.exp(-log_scale) + log_scale)


def predictor_nll(dist: str, centre: jax.Array, log_dispersion: jax.Array,
                  y: jax.Array) -> jax.Array:
  """`gaussian_nll` or `laplace_nll` by name."""
  if dist == 'gaussian':
    return gaussian_nll(centre, log_dispersion, y)
  if dist == 'laplace':
    return laplace_nll(centre, log_dispersion, y)
  raise ValueError(f'unknown distribution {dist!r}; expected one of {DISTRIBUTIONS}')


_ACTIVATIONS = {'none': lambda a: a, 'tanh': jnp.tanh, 'sigmoid': jax.nn.sigmoid}


class Predictor(nn.Module):
  """P(x) -> (centre, log-dispersion) from the project's H and G backbones (proxy MR-GAN).

  G must be built with twice the output channels and NO output activation; it is called
  with a z of shape (B, 0), and its last axis is split into the centre (mean or median)
  and the log of the dispersion (variance or MAD). `centre_activation` ('none', 'tanh',
  'sigmoid') is applied to the centre only: the log-dispersion must stay unbounded (the
  released code predicts it with its own linear layer; a tanh on it would force
  sigma^2 >= e^-1 on images in [-1, 1]). Call as `predictor(x, train=bool)`.
  """
  encoder: nn.Module
  generator: nn.Module
  centre_activation: str = 'none'

  @nn.compact
  def __call__(self, x, *, train: bool = False):
    h = self.encoder(x, train=train)
    b = jax.tree.leaves(x)[0].shape[0]
    out = self.generator(h, jnp.zeros((b, 0), jnp.float32), train=train)
    if out.shape[-1] % 2:
      raise ValueError(f'predictor generator must output 2C channels, got {out.shape}')
    if self.centre_activation not in _ACTIVATIONS:
      raise ValueError(f'centre_activation must be one of {sorted(_ACTIVATIONS)}, '
                       f'got {self.centre_activation!r}')
    centre, log_dispersion = jnp.split(out, 2, axis=-1)
    return _ACTIVATIONS[self.centre_activation](centre), log_dispersion


# ---------------------------------------------------------------------------------------
# Sample statistics.


def gaussian_stats(samples: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(mu~, sigma~^2): sample mean and unbiased variance over axis 1 of (B, K, ...)."""
  return samples.mean(axis=1), samples.var(axis=1, ddof=1)


def sample_median(samples: jax.Array, median: str = 'lower') -> jax.Array:
  """Sample median over axis 1 of (B, K, ...), with the even-K convention by name.

  Args:
    samples: (B, K, ...).
    median: 'lower' (the released code's torch.median: the lower of the two middle values
      for even K) or 'mean' (numpy's: their average).

  Returns:
    (B, ...) medians. For 'lower' the gradient goes to the one sample at that rank.
  """
  if median == 'lower':
    return jnp.sort(samples, axis=1)[:, (samples.shape[1] - 1) // 2]
  if median == 'mean':
    return jnp.median(samples, axis=1)
  raise ValueError(f'unknown median convention {median!r}; expected one of {MEDIANS}')


def laplace_stats(samples: jax.Array, median: str = 'lower'
                  ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """(m~, b~, y~bar): sample median, mean |y~_k - m~| and sample mean over axis 1.

  Args:
    samples: (B, K, ...).
    median: even-K median convention, see `sample_median` (default: the released code's).

  Returns:
    Three (B, ...) arrays. b~ keeps its gradient through m~, as in the released code.
  """
  m = sample_median(samples, median)
  mad = jnp.abs(samples - m[:, None]).mean(axis=1)
  return m, mad, samples.mean(axis=1)


# ---------------------------------------------------------------------------------------
# Generator losses.


def mcmle1_gaussian(samples: jax.Array, y: jax.Array) -> jax.Array:
  r"""MCMLE_1 = MR_1, Gaussian: (mu~ - y)^2, the NLL with sigma fixed. Returns (B,)."""
  _check_samples(samples, y, 'y')
  return _per_example_mean(jnp.square(samples.mean(axis=1) - y))


def mcmle12_gaussian(samples: jax.Array, y: jax.Array, eps: float = _EPS) -> jax.Array:
  r"""MCMLE_1/2 = MR_2, Gaussian: 1/2 [(y - mu~)^2 / sigma~^2 + log sigma~^2].

  The Gaussian NLL of y under the sample moments; gradient flows through mu~ and sigma~^2.
  Returns (B,).
  """
  _check_samples(samples, y, 'y')
  mu, var = gaussian_stats(samples)
  return _per_example_mean(0.5 * (jnp.square(y - mu) / (var + eps) + jnp.log(var + eps)))


def mlmm1_gaussian(samples: jax.Array, pred_mean: jax.Array) -> jax.Array:
  r"""MLMM_1 = pMR_1, Gaussian: (mu~ - mu^)^2 with mu^ from the frozen predictor."""
  _check_samples(samples, pred_mean, 'pred_mean')
  return _per_example_mean(jnp.square(samples.mean(axis=1) - stop(pred_mean)))


def mlmm12_gaussian(samples: jax.Array, pred_mean: jax.Array,
                    pred_log_var: jax.Array) -> jax.Array:
  r"""MLMM_1/2 = pMR_2, Gaussian: (mu~ - mu^)^2 + (sigma~^2 - sigma^2)^2.

  sigma^2 = exp(predicted log-variance). Returns (B,).
  """
  _check_samples(samples, pred_mean, 'pred_mean')
  mu, var = gaussian_stats(samples)
  return _per_example_mean(jnp.square(mu - stop(pred_mean)) +
                           jnp.square(var - jnp.exp(stop(pred_log_var))))


def _laplace_target(samples, centre, median):
  """t = sg(y~bar + (centre - m~)) and (m~, b~, y~bar) (MR-GAN, Laplace MR losses)."""
  m, mad, mean = laplace_stats(samples, median)
  return stop(mean + (centre - m)), m, mad, mean


def mcmle1_laplace(samples: jax.Array, y: jax.Array, *, median: str = 'lower') -> jax.Array:
  r"""MCMLE_1 = MR_1, Laplace: |y~bar - t|, t = sg(y~bar + y - m~); value |y - m~|.

  Args:
    samples: (B, K, ...) generator samples.
    y: (B, ...) targets.
    median: even-K median convention ('lower' = released code, 'mean' = numpy).

  Returns:
    (B,) per-example losses.
  """
  _check_samples(samples, y, 'y')
  t, _, _, mean = _laplace_target(samples, y, median)
  return _per_example_mean(jnp.abs(mean - t))


def mcmle12_laplace(samples: jax.Array, y: jax.Array, eps: float = _EPS, *,
                    median: str = 'lower') -> jax.Array:
  r"""MCMLE_1/2 = MR_2, Laplace: |y~bar - t| / b~ + log b~, t = sg(y~bar + y - m~).

  Args:
    samples: (B, K, ...) generator samples.
    y: (B, ...) targets.
    eps: guard on b~.
    median: even-K median convention ('lower' = released code, 'mean' = numpy).

  Returns:
    (B,) per-example losses.
  """
  _check_samples(samples, y, 'y')
  t, _, mad, mean = _laplace_target(samples, y, median)
  return _per_example_mean(jnp.abs(mean - t) / (mad + eps) + jnp.log(mad + eps))


def mlmm1_laplace(samples: jax.Array, pred_median: jax.Array, *,
                  median: str = 'lower') -> jax.Array:
  r"""MLMM_1 = pMR_1, Laplace: (y~bar - t)^2, t = sg(y~bar + m^ - m~); value (m^ - m~)^2.

  Args:
    samples: (B, K, ...) generator samples.
    pred_median: (B, ...) the frozen predictor's median m^.
    median: even-K median convention ('lower' = released code, 'mean' = numpy).

  Returns:
    (B,) per-example losses.
  """
  _check_samples(samples, pred_median, 'pred_median')
  t, _, _, mean = _laplace_target(samples, stop(pred_median), median)
  return _per_example_mean(jnp.square(mean - t))


def mlmm12_laplace(samples: jax.Array, pred_median: jax.Array,
                   pred_log_scale: jax.Array, *, median: str = 'lower') -> jax.Array:
  r"""MLMM_1/2 = pMR_2, Laplace: (y~bar - t)^2 + (b~ - b^)^2, b^ = exp(predicted log-MAD).

  Args:
    samples: (B, K, ...) generator samples.
    pred_median, pred_log_scale: (B, ...) the frozen predictor's m^ and log b^.
    median: even-K median convention ('lower' = released code, 'mean' = numpy).

  Returns:
    (B,) per-example losses.
  """
  _check_samples(samples, pred_median, 'pred_median')
  t, _, mad, mean = _laplace_target(samples, stop(pred_median), median)
  return _per_example_mean(jnp.square(mean - t) +
                           jnp.square(mad - jnp.exp(stop(pred_log_scale))))


def mr_loss(name: str, dist: str, samples: jax.Array, y: jax.Array,
            prediction: tuple[jax.Array, jax.Array] | None = None, *,
            median: str = 'lower') -> jax.Array:
  """One of the eight generator losses by name.

  Args:
    name: 'mlmm1', 'mlmm12', 'mcmle1' or 'mcmle12'.
    dist: 'gaussian' or 'laplace'.
    samples: (B, K, ...) generator samples for the same inputs.
    y: (B, ...) targets (read by MCMLE only).
    prediction: (centre, log_dispersion) of the frozen predictor (MLMM only).
    median: even-K median convention of the Laplace losses ('lower' = released code,
      'mean' = numpy); the Gaussian losses ignore it.

  Returns:
    (B,) per-example losses.
  """
  if name not in LOSSES or dist not in DISTRIBUTIONS:
    raise ValueError(f'unknown MR loss ({name!r}, {dist!r}); expected one of {LOSSES} x '
                     f'{DISTRIBUTIONS}')
  if name in PREDICTOR_LOSSES and prediction is None:
    raise ValueError(f'{name} matches the predictor moments; pass prediction=(centre, '
                     'log_dispersion)')
  if median not in MEDIANS:
    raise ValueError(f'unknown median convention {median!r}; expected one of {MEDIANS}')
  gauss = dist == 'gaussian'
  kw = {} if gauss else {'median': median}
  if name == 'mcmle1':
    return (mcmle1_gaussian if gauss else mcmle1_laplace)(samples, y, **kw)
  if name == 'mcmle12':
    return (mcmle12_gaussian if gauss else mcmle12_laplace)(samples, y, **kw)
  if name == 'mlmm1':
    return (mlmm1_gaussian if gauss else mlmm1_laplace)(samples, prediction[0], **kw)
  return (mlmm12_gaussian if gauss else mlmm12_laplace)(samples, *prediction, **kw)


def optimizer(lr: float = 1e-4, b1: float = 0.5, b2: float = 0.999,
              weight_decay: float = 1e-4, clip_value: float = 0.5
              ) -> optax.GradientTransformation:
  """The released configs' optimiser for P, G and D: PyTorch Adam(amsgrad=True) + clipping.

  Order as in PyTorch: gradients clipped elementwise to [-clip, clip] (clip_grad_value_),
  then weight_decay * param added to them (Adam's L2 `weight_decay`), then AMSGrad.
  """
  return optim.make_optimizer(lr, b1=b1, b2=b2, weight_decay=weight_decay, amsgrad=True,
                              clip_value=clip_value)


# ---------------------------------------------------------------------------------------
# Input normalisation.


def channel_stats(xs, min_std: float = 1e-6) -> dict:
  """Per-channel mean and standard deviation of inputs, over examples and pixels.

  MR-GAN (Lee et al. 2019, App. B.2): "We normalize the inputs so that each channel has a
  zero-mean and a unit variance"; the released configs store such statistics per dataset.

  Args:
    xs: an iterable of (B, ..., C) input batches (e.g. a fixed sample of the training set).
    min_std: floor on the std, so a constant channel maps to 0 instead of dividing by 0.

  Returns:
    {'mean': (C,), 'std': (C,)} float32 arrays, the statistics `normalize_inputs` reads.
  """
  count, total, total_sq = 0, 0.0, 0.0
  for x in xs:
    x = np.asarray(x, np.float64)
    flat = x.reshape(-1, x.shape[-1])
    count += flat.shape[0]
    total = total + flat.sum(axis=0)
    total_sq = total_sq + np.square(flat).sum(axis=0)
  if not count:
    raise ValueError('channel_stats needs at least one non-empty batch')
  mean = total / count
  std = np.sqrt(np.maximum(total_sq / count - np.square(mean), 0.0))
  return {'mean': jnp.asarray(mean, jnp.float32),
          'std': jnp.asarray(np.maximum(std, min_std), jnp.float32)}


def normalize_inputs(x: jax.Array, stats: dict | None) -> jax.Array:
  """(x - mean) / std per channel (last axis); x unchanged for stats None."""
  if stats is None:
    return x
  if stats['mean'].shape != x.shape[-1:]:
    raise ValueError(f'normalisation statistics of {stats["mean"].shape[0]} channels for '
                     f'inputs of shape {x.shape}')
  return (x - stats['mean']) / stats['std']
