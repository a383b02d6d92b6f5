r"""What the 16-tap gathers cost the training step: a bound for issue 6 (not a model path).

Every 4x4 stride-2 layer gathers 16 taps per output pixel (`layers._stride2_patches`): the
down layers' im2col, and the g taps of the up layers' backward pass. XLA:CPU runs that
gather as strided slices at a few GB/s. This script times the bench configuration's
jitted training step, alternated in one process, in three programs:

  * `library`: the step as the library runs it;
  * `free_up`: the up layers' backward gathers replaced by a stand-in;
  * `free_all`: every gather replaced by the stand-in.

The stand-in returns a fixed random array of the gather's shape plus one element of its
input (one elementwise pass, so it stays ordered after its input), and its VJP passes the
cotangent's first elements back (one copy, so the cotangent's producers stay alive). Its
values are wrong: it only measures. Each stand-in program is checked to run the same
dots and convolutions as the library's compiled step, so the time it saves is the
gathers' own, and its time bounds what a gather at memory speed could give.

Usage:
  python benchmarks/gather_bound.py [--rounds R] [--smoke] [--json]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import functools
import json
import re
import time

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks import bench
from cgml_jax import cgml
from cgml_jax.models import layers

_DOT_OR_CONV = re.compile(r'= (\S+) (dot|convolution)\(')


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _stand_in(xp: jax.Array, ho: int, wo: int) -> jax.Array:
  b, c = xp.shape[0], xp.shape[-1]
  shape = (b, ho, wo, 16 * c)
  fixed = np.random.default_rng(int(np.prod(shape))).standard_normal(shape, np.float32)
  # An element off the zero padding, so that the stand-in depends on the data.
  return jnp.asarray(fixed) + xp[0, xp.shape[1] // 2, xp.shape[2] // 2, 0]


def _stand_in_fwd(xp, ho, wo):
  return _stand_in(xp, ho, wo), jax.ShapeDtypeStruct(xp.shape, xp.dtype)


def _stand_in_bwd(ho, wo, xp_shape, g):
  n = int(np.prod(xp_shape.shape))
  flat = g.reshape(-1)
  flat = jnp.pad(flat, (0, max(0, n - flat.size)))[:n]
  return (flat.reshape(xp_shape.shape),)


_stand_in.defvjp(_stand_in_fwd, _stand_in_bwd)


@contextlib.contextmanager
def gathers(which: str):
  """Within the block, `which` ('library', 'free_up' or 'free_all') gathers are traced."""
  original = layers._stride2_patches
  if which == 'library':
    replacement = original
  elif which == 'free_up':  # the up layers' backward gathers are the flipped ones
    def replacement(xp, ho, wo, flip=False):
      return _stand_in(xp, ho, wo) if flip else original(xp, ho, wo, flip)
  elif which == 'free_all':
    def replacement(xp, ho, wo, flip=False):
      return _stand_in(xp, ho, wo)
  else:
    raise ValueError(f"unknown gather variant {which!r}: expected 'library', 'free_up' or "
                     "'free_all'")
  layers._stride2_patches = replacement
  try:
    yield
  finally:
    layers._stride2_patches = original


def contractions(hlo: str) -> collections.Counter:
  """Output shapes of every dot and convolution in a compiled program's HLO text."""
  return collections.Counter(m.group(2) + ' ' + m.group(1) for m in _DOT_OR_CONV.finditer(hlo))


def main(argv=None) -> dict:
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('--rounds', type=int, default=20, help='alternated calls per program')
  ap.add_argument('--smoke', action='store_true', help='tiny sizes, for tests')
  ap.add_argument('--json', action='store_true', help='print results as one JSON object')
  a = ap.parse_args(argv)
  c = bench.get_config(a.smoke)
  state, batch = bench.make_state(c)
  key = jax.random.key(1)
  names = ('library', 'free_up', 'free_all')
  compiled = {}
  for name in names:
    with gathers(name):  # a new function each time: jax caches traces by function
      step = lambda state, batch, key: cgml.train_step(state, batch, key)
      compiled[name] = jax.jit(step).lower(state, batch, key).compile()
  hlo = {name: compiled[name].as_text() for name in names}
  reference = contractions(hlo['library'])
  for name in names[1:]:
    other = contractions(hlo[name])
    if other != reference:
      diff = {'only in library': dict(reference - other),
              f'only in {name}': dict(other - reference)}
      raise RuntimeError(f'{name} runs other dots or convolutions than the library step, so '
                         f'its time would not isolate the gathers: {diff}')
  holders = dict.fromkeys(names, state)
  times = {name: [] for name in names}
  for name in names:  # two warm-up calls each
    for _ in range(2):
      holders[name], m = compiled[name](holders[name], batch, key)
      jax.block_until_ready(m)
  for r in range(max(a.rounds, 1)):
    for name in (names if r % 2 == 0 else names[::-1]):
      t = time.perf_counter()
      holders[name], m = compiled[name](holders[name], batch, key)
      jax.block_until_ready(m)
      times[name].append(time.perf_counter() - t)
  matmul = bench.matmul_rate(c.matmul_size, 5)['best']
  plain = bench.plain_flops(c)[0]
  base = np.array(times['library'])
  res = {'matmul_gflops_per_s': matmul, 'plain_flops': plain,
         'dots_and_convs': sum(reference.values())}
  for name in names:
    t = np.array(times[name])
    res[name] = {'median_s': float(np.median(t)), 'best_s': float(t.min()),
                 'slices': hlo[name].count(' slice('),
                 'ratio_to_library': float(np.median(t / base)),
                 'fraction_of_matmul': plain / t.min() / 1e9 / matmul}
  if a.json:
    print(json.dumps(res))
    return res
  print(f"train step, {a.rounds} alternated calls each; {res['dots_and_convs']} dots and "
        f"convolutions in every program; best f32 matmul {matmul:.0f} GFLOP/s; "
        f"plain-equivalent {plain / 1e9:.2f} GFLOP")
  print('| program | HLO slices | median ms | best ms | time / library (median per call) | '
        'plain-equiv. % of matmul (best call) |')
  print('|---|---|---|---|---|---|')
  for name in names:
    r = res[name]
    print(f"| {name} | {r['slices']} | {1e3 * r['median_s']:.1f} | {1e3 * r['best_s']:.1f} | "
          f"{r['ratio_to_library']:.3f} | {100 * r['fraction_of_matmul']:.0f} % |")
  return res


if __name__ == '__main__':
  main()
