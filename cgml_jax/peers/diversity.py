r"""Diversity regularisers for conditional GANs: DSGAN and MSGAN, as add-on G losses.

Both compare two outputs of the same input under two noises, y1 = G(x, z1), y2 = G(x, z2),
and reward the generator for outputs that move when z moves.

DSGAN (Yang et al., "Diversity-Sensitive Conditional GANs", ICLR 2019, Eq. 2-3):

  L_z(G) = E_{z1, z2} [ min( ||G(x, z1) - G(x, z2)|| / ||z1 - z2||, tau ) ]
  min_G max_D  L_cGAN(G, D) - lambda * L_z(G)

implemented, as its released image-to-image code does (github.com/maga33/DSGAN,
Image2ImageTranslation/code/trainer.py, errE_calculate), by minimising -lambda * ratio,
with the second output DETACHED: the code takes F.l1_loss(gen_imgs, gen_imgs_eg.detach()),
so the term reaches G through y1 only. Eq. 3 read literally differentiates through both
outputs, which pushes G about twice as hard at the same lambda; that reading is kept as
`detach_second=False`.

MSGAN (Mao et al., "Mode Seeking GANs for Diverse Image Synthesis", CVPR 2019, Eq. 3-4):

  L_ms = max_G ( d_I(G(c, z1), G(c, z2)) / d_z(z1, z2) ),  L_new = L_ori + lambda_ms L_ms

implemented, as its released pix2pix code does (github.com/HelenMao/MSGAN,
Pix2Pix-Mode-Seeking/models/pix2pix_model.py, backward_G), by minimising
1 / (ratio + eps), with gradient through both outputs.

Distances are mean absolute differences (L1 normalised by size), as in both released
codes. DSGAN's ratio is per example (its code averages ratios over the batch); MSGAN's is
one ratio of batch means (its code divides mean |y1 - y2| by mean |z1 - z2|). The DSGAN
bound tau is optional (None = no bound, the released default; the code's optional
NE_MARGIN instead clamps the loss, minus the batch-mean ratio, from above).

Channel normalisation. Here d_I is the mean over all of H x W x C. DSGAN's code sums
|y1 - y2| and divides by 3 * H * W whatever the channel count, so the two agree for
3-channel images; for C channels the value here is 3 / C times the released one (3x for
1-channel images such as MNIST), i.e. lambda here acts as lambda * 3 / C there. MSGAN's
torch.mean is the same mean as here for any C.

Cross-check: a float64 re-typing of both released loss lines agrees with `dsgan_loss` and
`msgan_loss` (values, and gradients with respect to both outputs) to within 2e-15 on
2 x 4 x 4 x 3 outputs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

KINDS = ('dsgan', 'msgan')
DSGAN_WEIGHT = 8.0   # lambda of the released DSGAN image-to-image configs
MSGAN_WEIGHT = 1.0   # lambda_ms of the released MSGAN pix2pix code
_EPS = 1e-5          # both released codes' guard


def _per_example_l1(a: jax.Array, b: jax.Array) -> jax.Array:
  d = jnp.abs(a - b)
  return d.reshape(d.shape[0], -1).mean(axis=1)


def _check(y1, y2, z1, z2):
  if y1.shape != y2.shape or z1.shape != z2.shape or y1.shape[0] != z1.shape[0]:
    raise ValueError(f'diversity terms need y1, y2 (B, ...) and z1, z2 (B, n) of matching '
                     f'shapes; got {y1.shape}, {y2.shape}, {z1.shape}, {z2.shape}')


def dsgan_ratio(y1: jax.Array, y2: jax.Array, z1: jax.Array, z2: jax.Array,
                tau: float | None = None, eps: float = _EPS) -> jax.Array:
  r"""DSGAN Eq. 2 inner term: min(||y1 - y2||_1 / ||z1 - z2||_1, tau) per example.

  Args:
    y1, y2: (B, ...) outputs for the same inputs under z1, z2.
    z1, z2: (B, n) the noises.
    tau: upper bound of the ratio, or None.
    eps: guards ||z1 - z2|| = 0.

  Returns:
    (B,) ratios (to be maximised).
  """
  _check(y1, y2, z1, z2)
  ratio = _per_example_l1(y1, y2) / (_per_example_l1(z1, z2) + eps)
  return ratio if tau is None else jnp.minimum(ratio, tau)


def dsgan_loss(y1, y2, z1, z2, weight: float = DSGAN_WEIGHT, tau: float | None = None,
               eps: float = _EPS, *, detach_second: bool = True) -> jax.Array:
  r"""DSGAN Eq. 3 as a term added to G's loss: -lambda * mean_b min(ratio_b, tau).

  Args:
    y1, y2: (B, ...) outputs for the same inputs under z1, z2.
    z1, z2: (B, n) the noises.
    weight: lambda.
    tau: upper bound of the ratio, or None.
    eps: guards ||z1 - z2|| = 0.
    detach_second: stop the gradient through y2, as the released code does (default);
      False differentiates through both outputs.

  Returns:
    Scalar loss.
  """
  if detach_second:
    y2 = jax.lax.stop_gradient(y2)
  return -weight * jnp.mean(dsgan_ratio(y1, y2, z1, z2, tau, eps))


def msgan_ratio(y1, y2, z1, z2) -> jax.Array:
  r"""MSGAN Eq. 3 ratio d_I / d_z = mean |y1 - y2| / mean |z1 - z2| over the batch. Scalar."""
  _check(y1, y2, z1, z2)
  return jnp.mean(jnp.abs(y1 - y2)) / jnp.mean(jnp.abs(z1 - z2))


def msgan_loss(y1, y2, z1, z2, weight: float = MSGAN_WEIGHT, eps: float = _EPS) -> jax.Array:
  r"""MSGAN Eq. 4 term added to G's loss: lambda_ms / (d_I / d_z + eps). Scalar."""
  return weight / (msgan_ratio(y1, y2, z1, z2) + eps)


def diversity_loss(kind: str | None, y1, y2, z1, z2, weight: float | None = None,
                   tau: float | None = None) -> jax.Array:
  """The add-on term by name ('dsgan', 'msgan' or None for 0), at its default weight."""
  if kind is None:
    return jnp.zeros((), jnp.float32)
  if kind == 'dsgan':
    return dsgan_loss(y1, y2, z1, z2, DSGAN_WEIGHT if weight is None else weight, tau)
  if kind == 'msgan':
    return msgan_loss(y1, y2, z1, z2, MSGAN_WEIGHT if weight is None else weight)
  raise ValueError(f'unknown diversity term {kind!r}; expected one of {KINDS} or None')
