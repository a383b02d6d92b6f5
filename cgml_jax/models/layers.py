r"""Fast forms of the 4x4 stride-2 (transposed) convolutions of the conv H and G.

The paper's conv networks (Context-Encoder / pix2pix style, Sec. 5) are built from two
layers:

  down:  nn.Conv(features, (4, 4), strides=2, padding=1)            H x W -> H/2 x W/2
  up:    nn.ConvTranspose(features, (4, 4), strides=2, padding=2)   H x W -> 2H x 2W
         (flax padding ((2, 2), (2, 2)) is PyTorch's ConvTranspose2d(4, 2, padding=1))

On XLA:CPU both are slow in the places cGML spends its time. A transposed convolution is
an input-dilated convolution, which XLA:CPU runs on a generic loop (~2-8 GFLOP/s), and the
backward pass of any stride-2 convolution wrt its input is again such a convolution.
Convolutions on 2x2 or 4x4 maps are slow as well. cGML's training step differentiates G
twice per inner step (once wrt z, once wrt its weights), so these dominate.

The layers here compute exactly the same function with stride-1 ops and matmuls, whose
gradients are stride-1 ops and matmuls too:

  down: pad 1, then every output pixel reads the 4x4 window at (2i, 2j). Gathering those
    16 strided slices gives an (B*H/2*W/2, 16 C) patch matrix ("im2col"), times the
    kernel reshaped to (16 C, O). No FLOP is wasted; the gradient wrt x is the patches'
    gradient summed back (pads and adds), the kernel gradient patches^T times g.

  up, forward: output pixel (2i+a, 2j+b) only sees the 2x2 input window starting at
    (i+a, j+b) of the 1-padded input, through the taps w[2t+a, 2u+b] (t, u in {0, 1}).
    So one stride-1 2x2 convolution of the padded input to 4*O channels (one block of O
    per parity (a, b)) evaluated on the (H+1) x (W+1) windows, followed by picking for
    each parity its shifted window, is the transposed convolution. The only extra work
    is the one extra row and column of windows, a factor (H+1)(W+1)/(HW).

  up, backward (a custom VJP): input pixel (i, j) reaches output pixel
    (2i + 2 - kh, 2j + 2 - kw) through tap (kh, kw). Gathering g at those 16 pixels (the
    16 strided slices of the down layer, on g padded by 1) gives a (B*H*W, 16 O) matrix
    T (columns in the kernel's (kh, kw) order); then dx = T times the kernel contracted
    over (kh, kw, O) (a stride-2 convolution of g, as one dot)
    and dkernel = x^T T. Both have exactly the plain layer's FLOPs. Autodiff of the
    forward instead multiplies the zero-padded (H+1) x (W+1) x 4 O gradient through the
    2x2 form (2.25x the FLOPs on 2x2 maps), and XLA:CPU's own kernel-gradient
    convolutions run at ~2 GFLOP/s on these shapes; this VJP made the bench train step
    1.25x faster. The custom VJP means `jax.jvp` (forward mode) does not go through the
    fast up layer; use impl='plain' for that.

Both are parametrised by the ORIGINAL 4x4 kernel (same names, shapes, initialisers as
`nn.Conv` / `nn.ConvTranspose`), so `SpectralNorm` (which flattens the kernel to
(16 C, O)), checkpoints and initial values are those of the plain layer.

The up layer also takes its input as channel parts [x_1, ..., x_m] (the U-Net's
concat(decoder feature, skip, z map)) and sums the parts' convolutions with the matching
slices of the one kernel: the same function and parameters, without the concatenated copy,
with no gradient computed for parts that do not need one (cGML's z step differentiates G
wrt z only, so the skip halves get none), and with parts of a smaller batch broadcast
(G's skips of B inputs are convolved once for K samples each at inference). A part's
contribution can also be computed once (`conv4x4_up_terms`) and passed back to later calls
(cGML's z step and (H, G) step share G's skip contributions this way).

`impl` picks how the stride-1 part of the forward pass runs: 'matmul' (explicit patches
and one dot) or 'conv' (an XLA convolution). 'plain' is the reference flax layer's op,
XLA's own (transposed) convolution. 'auto' depends on the backend (`platform()`):

  * CPU: the fast forms above, 'matmul' for the down layer up to 16x16 inputs and 'conv'
    above, and 'conv' for the up layer at every size (measured on the bench shapes, see
    the constants below);
  * GPU and TPU: 'plain'. cuDNN and the TPU compiler have fast kernels for strided and
    transposed convolutions and their gradients; the workarounds above were measured
    only against XLA:CPU and would add gathers and interleaves there.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

IMPLS = ('auto', 'matmul', 'conv', 'plain')
_DN = ('NHWC', 'HWIO', 'NHWC')

# 'auto' takes the 'matmul' form up to this many input pixels. Down layer: the dot beats
# space-to-depth + XLA's convolution up to 16x16 inputs (bench train step 0.954 and 0.966
# of its time, alternated in one process; inference unchanged). Up layer: with the custom
# VJP, XLA's 2x2 convolution forward beat patches + dot on every bench map (train step
# 0.96-1.0 of the time with 2x2 and 4x4 maps as 'matmul', inference 0.93).
_DOWN_MATMUL_MAX_PIXELS = 256
_UP_MATMUL_MAX_PIXELS = 0


def _patches2x2(x: jax.Array, ho: int, wo: int) -> jax.Array:
  """The ho x wo 2x2 windows of x (B, >= ho + 1, >= wo + 1, C): (B, ho, wo, 4 C), taps (t, u)."""
  return jnp.concatenate([x[:, t:t + ho, u:u + wo] for t in range(2) for u in range(2)], -1)


def _space_to_depth(xp: jax.Array) -> jax.Array:
  """(B, 2M, 2N, C) -> (B, M, N, 4 C): block (m, n) holds xp[2m + r, 2n + s] at channel
  (r, s, c)."""
  b, h2, w2, c = xp.shape
  return xp.reshape(b, h2 // 2, 2, w2 // 2, 2, c).transpose(0, 1, 3, 2, 4, 5).reshape(
      b, h2 // 2, w2 // 2, 4 * c)


def _stride2_patches(xp: jax.Array, ho: int, wo: int, flip: bool = False) -> jax.Array:
  """The 4x4 windows at (2i, 2j) of xp (B, >= 2 ho + 2, >= 2 wo + 2, C): (B, ho, wo, 16 C).

  Channel (k, l, c) holds window tap (k, l), i.e. xp[2i + k, 2j + l, c], so the patches
  meet `kernel.reshape(16 C, O)` without reordering the kernel; with `flip`, tap
  (3 - k, 3 - l). 16 strided slices (space-to-depth and 4 shifted slices instead made the
  bench train step 4 % slower).
  """
  b, _, _, c = xp.shape
  offsets = [(3 - k, 3 - l) if flip else (k, l) for k in range(4) for l in range(4)]
  cols = [lax.slice(xp, (0, k, l, 0), (b, k + 2 * ho - 1, l + 2 * wo - 1, c), (1, 2, 2, 1))
          for k, l in offsets]
  return jnp.stack(cols, axis=3).reshape(b, ho, wo, 16 * c)


def _stride2_kernel(kernel: jax.Array) -> jax.Array:
  """(4, 4, C, O) -> (16 C, O), rows in the channel order (t, u, r, s, c) of
  `_space_to_depth` followed by `_patches2x2`: tap (2t + r, 2u + s)."""
  c, o = kernel.shape[2:]
  return kernel.reshape(2, 2, 2, 2, c, o).transpose(0, 2, 1, 3, 4, 5).reshape(16 * c, o)


def _conv2x2(x: jax.Array, k: jax.Array) -> jax.Array:
  return lax.conv_general_dilated(x, k, (1, 1), 'VALID', dimension_numbers=_DN)


def _check_nhwc(x: jax.Array, name: str):
  if x.ndim != 4:
    raise ValueError(f'{name} expects NHWC input (B, H, W, C), got shape {x.shape}')


def platform() -> str:
  """The platform the layers (and `train.unroll='auto'`) are tuned for: 'cpu', 'gpu', 'tpu'.

  JAX's default backend, read when a layer is traced. One function, so that tests can
  force a platform by patching it.
  """
  return jax.default_backend()


def _resolve(impl: str, x: jax.Array, matmul_max_pixels: int) -> str:
  if impl not in IMPLS:
    raise ValueError(f'impl must be one of {IMPLS}, got {impl!r}')
  if impl != 'auto':
    return impl
  if platform() != 'cpu':
    return 'plain'  # XLA's own convolutions on GPU and TPU (see the module docstring)
  return 'matmul' if x.shape[1] * x.shape[2] <= matmul_max_pixels else 'conv'


def resolve_impl(impl: str, x_shape: tuple[int, ...], up: bool = False) -> str:
  """The form `impl` stands for on this platform for an input of shape `x_shape`.

  Args:
    impl: one of IMPLS.
    x_shape: (B, H, W, C) of the layer's input.
    up: the transposed (up) layer instead of the down layer.

  Returns:
    'matmul', 'conv' or 'plain'.
  """
  limit = _UP_MATMUL_MAX_PIXELS if up else _DOWN_MATMUL_MAX_PIXELS
  return _resolve(impl, jax.ShapeDtypeStruct(tuple(x_shape), jnp.float32), limit)


def conv4x4_down(x: jax.Array, kernel: jax.Array, impl: str = 'auto') -> jax.Array:
  r"""4x4 convolution, stride 2, padding 1, without bias: (B, H, W, C) -> (B, H/2, W/2, O).

  Same function as `lax.conv_general_dilated(x, kernel, (2, 2), ((1, 1), (1, 1)))`.

  Args:
    x: (B, H, W, C) with H, W even.
    kernel: (4, 4, C, O), HWIO as in `nn.Conv`.
    impl: 'auto', 'matmul', 'conv' or 'plain' (see module docstring).

  Returns:
    (B, H/2, W/2, O).
  """
  _check_nhwc(x, 'conv4x4_down')
  b, h, w, c = x.shape
  if h % 2 or w % 2:
    raise ValueError(f'conv4x4_down needs even height and width, got input shape {x.shape}')
  if kernel.shape[:3] != (4, 4, c):
    raise ValueError(f'conv4x4_down needs a (4, 4, {c}, O) kernel for input {x.shape}, '
                     f'got {kernel.shape}')
  impl = _resolve(impl, x, _DOWN_MATMUL_MAX_PIXELS)
  o = kernel.shape[-1]
  if impl == 'plain':
    return lax.conv_general_dilated(x, kernel, (2, 2), ((1, 1), (1, 1)), dimension_numbers=_DN)
  ho, wo = h // 2, w // 2
  xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  if impl == 'matmul':
    return jnp.dot(_stride2_patches(xp, ho, wo), kernel.reshape(16 * c, o))
  # 'conv': space-to-depth turns the stride-2 4x4 window into a stride-1 2x2 window of
  # 2x2 blocks; block (m, n) holds xp[2m + r, 2n + s] at channel (r, s, c).
  k2 = _stride2_kernel(kernel).reshape(2, 2, 4 * c, o)
  return _conv2x2(_space_to_depth(xp), k2)


def _as_parts(x) -> list:
  return [x] if hasattr(x, 'ndim') else list(x)


def _check_parts(parts: list, kernel: jax.Array, name: str) -> tuple[int, list[int]]:
  """Validates channel parts of one input; returns the broadcast batch and their widths."""
  if not parts:
    raise ValueError(f'{name} needs at least one input')
  for p in parts:
    _check_nhwc(p, name)
  spatial = {p.shape[1:3] for p in parts}
  if len(spatial) > 1:
    raise ValueError(f'{name}: input parts must share H and W, got shapes '
                     f'{[p.shape for p in parts]}')
  b = max(p.shape[0] for p in parts)
  if any(b % p.shape[0] for p in parts):
    raise ValueError(f'{name}: every part\'s batch must divide the largest one ({b}), got '
                     f'shapes {[p.shape for p in parts]}')
  widths = [p.shape[-1] for p in parts]
  if kernel.ndim != 4 or kernel.shape[:3] != (4, 4, sum(widths)):
    shapes = [p.shape for p in parts]
    raise ValueError(f'{name} needs a (4, 4, {sum(widths)}, O) kernel for input '
                     f'{shapes[0] if len(shapes) == 1 else shapes}, got {kernel.shape}')
  return b, widths


def _broadcast_batch(a: jax.Array, b: int) -> jax.Array:
  """(b', ...) -> (b, ...), row r reading row r // (b / b') (i.e. `jnp.repeat(a, b / b')`)."""
  if a.shape[0] == b:
    return a
  m = b // a.shape[0]
  return jnp.broadcast_to(a[:, None], (a.shape[0], m) + a.shape[1:]).reshape((b,) + a.shape[1:])


def _sum_parts(terms: list) -> jax.Array:
  b = max(t.shape[0] for t in terms)
  out = _broadcast_batch(terms[0], b)
  for t in terms[1:]:
    out = out + _broadcast_batch(t, b)
  return out


def _kernel_parts(kernel: jax.Array, widths: list[int]) -> list:
  offsets = [sum(widths[:i]) for i in range(len(widths))]
  return [kernel[:, :, o:o + c] for o, c in zip(offsets, widths)]


def _interleave(r: jax.Array, h: int, w: int) -> jax.Array:
  """(B, H+1, W+1, 2, 2, O) windows x parities -> (B, 2H, 2W, O)."""
  # Output (2i + a, 2j + b) is window (i + a, j + b), channel block (a, b).
  y = jnp.stack([jnp.stack([r[:, a:a + h, p:p + w, a, p] for p in range(2)], axis=3)
                 for a in range(2)], axis=2)  # (B, H, 2, W, 2, O)
  return y.reshape(r.shape[0], 2 * h, 2 * w, r.shape[-1])


def _up_taps(g: jax.Array) -> jax.Array:
  """(B, 2H, 2W, O) -> (B, H, W, 16 O): for input pixel (i, j), g at the output pixel of
  each kernel tap (kh, kw), which is (2i + 2 - kh, 2j + 2 - kw) (zero outside); channel
  (kh, kw, o), the kernel's own order.

  That pixel is (2i + 3 - kh, 2j + 3 - kw) of g padded by 1: the flipped
  `_stride2_patches` of padded g.
  """
  _, h2, w2, _ = g.shape
  gp = jnp.pad(g, ((0, 0), (1, 1), (1, 1), (0, 0)))
  return _stride2_patches(gp, h2 // 2, w2 // 2, flip=True)


def _up_sum(parts: tuple, kernels: tuple, form: str) -> jax.Array:
  """sum_i up(parts[i], kernels[i]) (parts of a smaller batch broadcast), one interleave."""
  b, h, w, _ = max(parts, key=lambda p: p.shape[0]).shape
  o = kernels[0].shape[-1]
  rs = []
  for x, k in zip(parts, kernels):
    c = x.shape[-1]
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    # Tap (t, u) of parity (a, b) is kernel[2t + a, 2u + b]: regroup the 4x4 kernel into
    # a 2x2 kernel with output channels (a, b, o).
    k2 = k.reshape(2, 2, 2, 2, c, o).transpose(0, 2, 4, 1, 3, 5)  # (t, u, c, a, b, o)
    if form == 'matmul':
      rs.append(jnp.dot(_patches2x2(xp, h + 1, w + 1), k2.reshape(4 * c, 4 * o)))
    else:
      rs.append(_conv2x2(xp, k2.reshape(2, 2, c, 4 * o)))
  r = _sum_parts(rs)
  return _interleave(r.reshape(b, h + 1, w + 1, 2, 2, o), h, w)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _up_layer(parts: tuple, kernels: tuple, form: str) -> jax.Array:
  """`_up_sum` with a VJP of exact FLOPs (see the module docstring)."""
  return _up_sum(parts, kernels, form)


def _up_layer_fwd(parts, kernels, form):
  return _up_sum(parts, kernels, form), (parts, kernels)


def _up_layer_bwd(form, res, g):
  del form
  parts, kernels = res
  b, _, _, o = g.shape
  taps = _up_taps(g)  # once for all parts
  dxs, dks = [], []
  for x, k in zip(parts, kernels):
    c = x.shape[-1]
    t = taps
    if x.shape[0] != b:  # a broadcast part: its rows' taps summed over their repeats
      t = taps.reshape((x.shape[0], b // x.shape[0]) + taps.shape[1:]).sum(1)
    t = t.reshape(-1, 16, o)
    # dx[i, j] = sum over taps of g(tap's output pixel) k[tap]^T: a stride-2 4x4
    # convolution of g, as one dot; dk[tap] = sum over pixels of x^T g(tap's output pixel).
    dx = lax.dot_general(t, k.reshape(16, c, o), (((1, 2), (0, 2)), ((), ())))
    dxs.append(dx.reshape(x.shape))
    dk = lax.dot_general(x.reshape(-1, c), t, (((0,), (0,)), ((), ())))  # (C, 16, O)
    dks.append(dk.transpose(1, 0, 2).reshape(4, 4, c, o))
  return tuple(dxs), tuple(dks)


_up_layer.defvjp(_up_layer_fwd, _up_layer_bwd)


def _up_convolve(parts: list, kernels: list, impl: str, b: int) -> jax.Array:
  """sum_i up(parts[i], kernels[i]) by `impl` (a resolved impl), broadcast to batch >= b.

  Empty parts (the L1 baseline's z map of width 0) contribute nothing; with no other part
  the result is zeros of batch b. The fast forms go through one `_up_layer`, whose VJP
  gathers g's taps once for all the parts.
  """
  _, h, w, _ = parts[0].shape
  live = [(p, k) for p, k in zip(parts, kernels) if p.shape[-1] > 0]
  if not live:
    return jnp.zeros((b, 2 * h, 2 * w, kernels[0].shape[-1]), parts[0].dtype)
  if impl == 'plain':
    return _sum_parts([lax.conv_transpose(p, k, (2, 2), ((2, 2), (2, 2)), dimension_numbers=_DN)
                       for p, k in live])
  return _up_layer(tuple(p for p, _ in live), tuple(k for _, k in live), impl)


def _up_terms(parts: list, kernel: jax.Array, widths: list[int], impl: str,
              which: list[bool]) -> list:
  """Each selected part's transposed convolution (B_i, 2H, 2W, O) (None for the others)."""
  return [_up_convolve([p], [kp], impl, p.shape[0]) if sel else None
          for p, kp, sel in zip(parts, _kernel_parts(kernel, widths), which)]


def conv4x4_up_terms(x, kernel: jax.Array, which, impl: str = 'auto') -> list:
  r"""The contributions of some channel parts to `conv4x4_up(x, kernel, impl)`, to reuse.

  By linearity the layer's output is a sum over its channel parts. This computes the
  terms of the parts selected by `which`, so that a caller that needs the layer several
  times with those parts unchanged (cGML's z step and (H, G) step both read the U-Net
  skips of the same h at the same parameters) computes them once and passes them back as
  `conv4x4_up(x, kernel, impl, terms=...)`. Gradients flow through the terms as usual.
  A term is the part's transposed convolution (B_i, 2H, 2W, O), the same array whichever
  impl computed it.

  Args:
    x: the channel parts, as for `conv4x4_up`; unselected parts only give their shapes.
    kernel: (4, 4, C, O), the whole layer's kernel.
    which: one bool per part: compute its term.
    impl: as for `conv4x4_up`.

  Returns:
    A list with one entry per part: its term (an array) if selected, else None.
  """
  parts = _as_parts(x)
  _, widths = _check_parts(parts, kernel, 'conv4x4_up_terms')
  which = list(which)
  if len(which) != len(parts):
    raise ValueError(f'conv4x4_up_terms: which has {len(which)} entries for {len(parts)} '
                     'input parts')
  return _up_terms(parts, kernel, widths, _resolve(impl, parts[0], _UP_MATMUL_MAX_PIXELS), which)


def conv4x4_up(x, kernel: jax.Array, impl: str = 'auto', terms=None) -> jax.Array:
  r"""4x4 transposed convolution, stride 2 (PyTorch padding 1): (B, H, W, C) -> (B, 2H, 2W, O).

  Same function as `lax.conv_transpose(x, kernel, (2, 2), ((2, 2), (2, 2)))`, i.e.
  `nn.ConvTranspose(O, (4, 4), (2, 2), padding=((2, 2), (2, 2)))` without bias.

  `x` may also be a sequence of channel parts [x_1, ..., x_m] of one input
  concat(x_1, ..., x_m). By linearity the layer is then the sum of the parts' convolutions
  with the matching input-channel slices of the one kernel, so no concatenated copy is
  built, the gradient with respect to a part only flows through its own slice, and the
  parts may have different batch sizes: a part of batch B' < B (B the largest) stands for
  `jnp.repeat(x_i, B / B', axis=0)` and is convolved once per distinct row (used to run
  the U-Net skips of B inputs once for K samples each).

  Args:
    x: (B, H, W, C), or a sequence of (B_i, H, W, C_i) with every B_i dividing B.
    kernel: (4, 4, C, O) (C = sum of C_i), as in `nn.ConvTranspose` (transpose_kernel=False).
    impl: 'auto', 'matmul', 'conv' or 'plain' (see module docstring).
    terms: optional, one entry per part: None, or that part's term from
      `conv4x4_up_terms` (same parts and kernel), used instead of convolving the part
      again (the part then only gives its shape).

  Returns:
    (B, 2H, 2W, O).
  """
  parts = _as_parts(x)
  b, widths = _check_parts(parts, kernel, 'conv4x4_up')
  _, h, w, _ = parts[0].shape
  impl = _resolve(impl, parts[0], _UP_MATMUL_MAX_PIXELS)
  o = kernel.shape[-1]
  terms = [None] * len(parts) if terms is None else list(terms)
  if len(terms) != len(parts):
    raise ValueError(f'conv4x4_up: terms has {len(terms)} entries for {len(parts)} input parts')
  if impl == 'plain' and all(t is None for t in terms):
    xc = jnp.concatenate([_broadcast_batch(p, b) for p in parts], axis=-1)
    return lax.conv_transpose(xc, kernel, (2, 2), ((2, 2), (2, 2)), dimension_numbers=_DN)
  tail = (2 * h, 2 * w, o)
  for p, t in zip(parts, terms):
    if t is not None and tuple(t.shape) != (p.shape[0],) + tail:
      raise ValueError(f'conv4x4_up: a given term of shape {t.shape} does not fit part '
                       f'{p.shape} (expected {(p.shape[0],) + tail})')
  todo = [(p, kp) for p, kp, t in zip(parts, _kernel_parts(kernel, widths), terms) if t is None]
  given = [t for t in terms if t is not None]
  if todo:
    given.append(_up_convolve([p for p, _ in todo], [k for _, k in todo], impl, b))
  return _sum_parts(given)


class _Conv4x4(nn.Module):
  """Shared parameters of the two layers: a (4, 4, C, O) kernel and an (O,) bias."""
  features: int
  use_bias: bool = True
  impl: str = 'auto'
  kernel_init: Any = nn.initializers.lecun_normal()
  bias_init: Any = nn.initializers.zeros_init()
  param_dtype: Any = jnp.float32

  def _params(self, in_channels: int):
    # Created in nn.Conv's order and with its names and shapes, so the same key gives the
    # same initial values and SpectralNorm treats the kernel the same way.
    kernel = self.param('kernel', self.kernel_init, (4, 4, in_channels, self.features),
                        self.param_dtype)
    bias = self.param('bias', self.bias_init, (self.features,),
                      self.param_dtype) if self.use_bias else None
    return kernel, bias


class Conv4x4Down(_Conv4x4):
  """Drop-in for `nn.Conv(features, (4, 4), strides=(2, 2), padding=((1, 1), (1, 1)))`.

  Attributes:
    features: output channels O.
    use_bias: add a bias of shape (O,).
    impl: see `conv4x4_down`.
  """

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """(B, H, W, C) -> (B, H/2, W/2, O); H and W must be even."""
    _check_nhwc(x, type(self).__name__)
    kernel, bias = self._params(x.shape[-1])
    y = conv4x4_down(x, kernel.astype(x.dtype), self.impl)
    return y if bias is None else y + bias.astype(x.dtype)


class ConvTranspose4x4Up(_Conv4x4):
  """Drop-in for `nn.ConvTranspose(features, (4, 4), strides=(2, 2), padding=((2, 2), (2, 2)))`.

  That is PyTorch's `ConvTranspose2d(C, O, 4, stride=2, padding=1)` up to the kernel
  layout (flax does not flip the kernel).

  Attributes:
    features: output channels O.
    use_bias: add a bias of shape (O,).
    impl: see `conv4x4_up`.
  """

  @nn.compact
  def __call__(self, x, terms=None, terms_of=None):
    """(B, H, W, C) -> (B, 2H, 2W, O).

    `x` may be a sequence of channel parts of one input (see `conv4x4_up`): the layer then
    has the parameters of the concatenated input and computes its function.

    Args:
      x: the input, or its channel parts.
      terms: optional per-part terms from an earlier call with `terms_of`, passed to
        `conv4x4_up` (the output is the same).
      terms_of: optional, one bool per part: return `conv4x4_up_terms` of those parts
        (a list, no bias added) instead of the output.
    """
    parts = _as_parts(x)
    for p in parts:
      _check_nhwc(p, type(self).__name__)
    kernel, bias = self._params(sum(p.shape[-1] for p in parts))
    dtype = parts[0].dtype
    if terms_of is not None:
      return conv4x4_up_terms(parts, kernel.astype(dtype), terms_of, self.impl)
    y = conv4x4_up(parts, kernel.astype(dtype), self.impl, terms)
    return y if bias is None else y + bias.astype(dtype)
