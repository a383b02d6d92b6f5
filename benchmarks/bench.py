r"""CPU benchmark of cGML's training step and inference, against the PyTorch peer.

Builds the `bench` configuration of ../shared/peers/torch_cgml_bench.py (colorization
32x32, L -> ab, batch 64, z_dim 16, H 32-64-128-256, U-Net G with spectral norm, Z MLP
256-256) from the library's own modules (`build_conv_models`, `cgml.train_step`,
`cgml.sample`) and reports:

  * the jitted training step (Algorithm 1, l inner steps) and inference (`cgml.sample`,
    T steps, K samples): median time, images/s, compile time;
  * XLA FLOPs per call (from the compiled program's `cost_analysis`) and achieved GFLOP/s,
    next to this machine's f32 matmul rate (a 2048^2 matmul), both for the program that
    runs ("executed") and for the same computation built from plain flax layers without
    sharing ("plain-equivalent", the work the model needs; see `plain_flops`);
  * with --layers, every H and G layer timed alone in each form (`profile_layers`);
  * when torch is installed, the peer run in the same invocation (`--json` subprocess),
    alternated with the JAX timings over `--rounds` rounds (default 3), and the JAX /
    torch ratios: per round, and their median;
  * the time per training step as l grows and per inference call as T and K grow, as a
    table and, with --out DIR, a PNG of the curves.

Timings on a shared machine are noisy: every number is the median of --steps calls after
two warm-up calls.

Usage:
  python benchmarks/bench.py [--steps N] [--rounds R] [--json] [--out DIR] [--no-torch]
      [--layers] [--smoke]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from cgml_jax import cgml
from cgml_jax.models.conv import build_conv_models

PEER = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'shared', 'peers',
                    'torch_cgml_bench.py')


def get_config(smoke: bool = False) -> ml_collections.ConfigDict:
  """The `bench` configuration: exactly the PyTorch peer's (see module docstring)."""
  c = ml_collections.ConfigDict()
  c.image_size = 32        # R: square input and output side
  c.in_channels = 1        # L channel in
  c.out_channels = 2       # ab channels out
  c.batch_size = 64        # B
  c.z_dim = 16             # n, latents on S^{n-1}
  c.base_channels = 32     # H widths 32, 64, 128, 256 (bottleneck 2x2)
  c.max_channels = 256
  c.latent_hidden = (256, 256)  # Z hidden widths
  c.step_size = 0.1        # beta of the z step
  c.alpha = 1.0            # rho = alpha * ||z' - z||
  c.learning_rate = 1e-4   # Adam, for (H, G) and for Z
  c.inner_steps = 3        # l
  c.num_steps = 10         # T of inference
  c.num_samples = 4        # K of inference
  c.impl = 'auto'          # convolution form of layers.py ('plain' = flax reference layers)
  c.matmul_size = 2048     # side of the square matmul that measures the machine's rate
  c.scan_l = (1, 2, 3, 4, 6)        # l values of the training-time curve
  c.scan_t = (1, 5, 10, 20, 40)     # T values of the inference curve (K = num_samples)
  c.scan_k = (1, 2, 4, 8, 16)       # K values of the inference curve (T = num_steps)
  if smoke:  # seconds-long run of the same code path, for tests
    c.image_size, c.batch_size, c.z_dim, c.base_channels, c.max_channels = 8, 2, 4, 4, 8
    c.latent_hidden, c.num_steps, c.num_samples, c.matmul_size = (8,), 2, 2, 64
    c.scan_l, c.scan_t, c.scan_k = (1,), (1,), (1,)
  return c


def _flops(compiled) -> float:
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):  # older jax returned one dict per device
    cost = cost[0]
  return float(cost.get('flops', float('nan'))) if cost else float('nan')


def _times(fn, steps: int) -> tuple[float, float]:
  """(median, best) seconds of `steps` calls after two warm-up calls (as the peer does)."""
  jax.block_until_ready(fn())
  jax.block_until_ready(fn())
  times = []
  for _ in range(steps):
    t = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - t)
  return float(np.median(times)), float(np.min(times))


def matmul_rate(n: int, steps: int) -> dict:
  """f32 GFLOP/s of a jitted n x n matmul, the machine's reference rate: median and best."""
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  f = jax.jit(lambda a: a @ a)
  med, best = _times(lambda: f(a), max(steps, 5))
  return {'median': 2 * n ** 3 / med / 1e9, 'best': 2 * n ** 3 / best / 1e9}


def make_state(c: ml_collections.ConfigDict, inner_steps: int | None = None):
  """The cGML state of the bench config and a random batch (x in [-1, 1], y in [-1, 1])."""
  encoder, generator, latent_net = build_conv_models(
      c.image_size, c.in_channels, c.out_channels, c.z_dim, base_channels=c.base_channels,
      max_channels=c.max_channels, latent_hidden=c.latent_hidden, impl=c.impl)
  hp = cgml.Hyper(z_dim=c.z_dim, step_size=c.step_size, alpha=c.alpha,
                  inner_steps=inner_steps or c.inner_steps)
  kx, ky, kinit = jax.random.split(jax.random.key(0), 3)
  shape = (c.batch_size, c.image_size, c.image_size)
  batch = {'x': jax.random.uniform(kx, shape + (c.in_channels,), minval=-1., maxval=1.),
           'y': jax.random.uniform(ky, shape + (c.out_channels,), minval=-1., maxval=1.)}
  state = cgml.CGMLState.create(
      kinit, batch['x'], encoder=encoder, generator=generator, latent_net=latent_net,
      tx_hg=optax.adam(c.learning_rate), tx_latent=optax.adam(c.learning_rate), hp=hp)
  return state, batch


def _timing(images: int, flops: float, compile_s: float, sec: float, best: float) -> dict:
  return {'median_s': sec, 'best_s': best, 'images_per_s': images / sec, 'flops': flops,
          'gflops_per_s': flops / sec / 1e9, 'compile_s': compile_s}


def train_timer(c, inner_steps: int | None = None):
  """Compiles `cgml.train_step`; returns `timer(steps) -> timing dict` (call it repeatedly).

  The timer carries the state from call to call, so that Adam sees a moving model, as in
  training.
  """
  state, batch = make_state(c, inner_steps)
  key = jax.random.key(1)
  t0 = time.perf_counter()
  compiled = jax.jit(cgml.train_step).lower(state, batch, key).compile()
  compile_s = time.perf_counter() - t0
  flops = _flops(compiled)
  holder = [state]

  def step():
    holder[0], metrics = compiled(holder[0], batch, key)
    return metrics['E']

  return lambda steps: _timing(c.batch_size, flops, compile_s, *_times(step, steps))


def time_train(c, steps: int, inner_steps: int | None = None) -> dict:
  """Compiles and times `cgml.train_step`; returns seconds, images/s, FLOPs, compile s."""
  return train_timer(c, inner_steps)(steps)


def plain_flops(c) -> tuple[float, float]:
  """XLA FLOPs of the train step and of inference built from the plain flax layers.

  That is the work the model needs, counted the way XLA counts a plain convolution (taps
  that fall on zero padding are not counted). The library's program differs both ways:
  the fast up-convolution evaluates an extra row and column of windows (more FLOPs), and
  the split-kernel generator skips the z step's gradient wrt the U-Net skips, computes
  the skips' and the bottleneck's contributions once per inner step for the z step and
  the (H, G) step, and runs the skips once per input at inference (fewer FLOPs). Rates
  are quoted on both counts.
  """
  c = ml_collections.ConfigDict(c.to_dict())
  c.impl = 'plain'
  state, batch = make_state(c)
  # No sharing of the h-only terms in the plain-equivalent program.
  state = state.replace(generator=state.generator.clone(shares_h_terms=False))
  train = _flops(jax.jit(cgml.train_step).lower(state, batch, jax.random.key(1)).compile())
  # The plain-equivalent inference: H once, G on h repeated K times (no sharing).
  def infer(state, x, key):
    h = cgml.repeat_batch(cgml.encode(state, x), c.num_samples)
    z0 = cgml.sample_sphere(key, (x.shape[0] * c.num_samples, c.z_dim))
    return cgml.generate(state, h, cgml.traverse_latent(state, h, z0, c.num_steps))
  infer_flops = _flops(jax.jit(infer).lower(state, batch['x'], jax.random.key(2)).compile())
  return train, infer_flops


def infer_timer(c, state=None, num_steps: int | None = None, num_samples: int | None = None):
  """Compiles `cgml.sample` (T steps, K samples); returns `timer(steps) -> timing dict`."""
  if state is None:
    state, batch = make_state(c)
  else:
    state, batch = state
  t_steps = num_steps or c.num_steps
  k = num_samples or c.num_samples
  key = jax.random.key(2)
  fn = jax.jit(cgml.sample, static_argnames=('num_samples', 'num_steps'))
  t0 = time.perf_counter()
  compiled = fn.lower(state, batch['x'], key, num_samples=k, num_steps=t_steps).compile()
  compile_s = time.perf_counter() - t0
  flops = _flops(compiled)
  return lambda steps: _timing(c.batch_size * k, flops, compile_s,
                               *_times(lambda: compiled(state, batch['x'], key), steps))


def time_infer(c, steps: int, state=None, num_steps: int | None = None,
               num_samples: int | None = None) -> dict:
  """Compiles and times `cgml.sample` (T steps, K samples); samples/s = B K / seconds."""
  return infer_timer(c, state, num_steps, num_samples)(steps)


def alternate(timers: dict, peer_fn, steps: int, rounds: int) -> dict:
  """Times each JAX program and then the peer, `rounds` times in alternation.

  The machine's speed drifts by tens of percent within minutes, so each round gives its
  own JAX / peer ratio and the reported ratio is their median.

  Args:
    timers: name -> `timer(steps) -> timing dict` (see `train_timer`, `infer_timer`).
    peer_fn: `steps -> {name: {'images_per_s': ...}}`, returning None if the peer cannot
      run (then one round only); or None to time JAX alone.
    steps: timed calls per measurement.
    rounds: number of rounds (at least 1; one round only if there is no peer).

  Returns:
    {'rounds': [...], name: pooled timing (`_pool`)}, and with the peer 'torch' (its
    median images/s per name and its rounds) and 'ratio_<name>' (median over rounds).
  """
  out_rounds = []
  for _ in range(max(rounds, 1)):
    r = {name: timer(steps) for name, timer in timers.items()}
    peer = peer_fn(steps) if peer_fn else None
    if peer:
      r['torch'] = peer
      for name in timers:
        r['ratio_' + name] = r[name]['images_per_s'] / peer[name]['images_per_s']
    out_rounds.append(r)
    if not peer:  # nothing to alternate with
      break
  res = {'rounds': out_rounds}
  for name in timers:
    res[name] = _pool([r[name] for r in out_rounds])
  peer_rounds = [r['torch'] for r in out_rounds if 'torch' in r]
  if peer_rounds:
    res['torch'] = {'rounds': peer_rounds}
    for name in timers:
      res['torch'][name] = {'images_per_s': float(np.median(
          [p[name]['images_per_s'] for p in peer_rounds]))}
      res['ratio_' + name] = float(np.median([r['ratio_' + name] for r in out_rounds]))
  return res


def _pool(timings: list[dict]) -> dict:
  """One timing from several rounds of the same program: median of medians, best of bests."""
  t0 = timings[0]
  return _timing(t0['images_per_s'] * t0['median_s'], t0['flops'], t0['compile_s'],
                 float(np.median([t['median_s'] for t in timings])),
                 min(t['best_s'] for t in timings))


def layer_shapes(c) -> list[tuple[str, int, int, int]]:
  """(kind, map side, C in, C out) of every H and G layer of the config."""
  enc, gen, _ = build_conv_models(c.image_size, c.in_channels, c.out_channels, c.z_dim,
                                  base_channels=c.base_channels, max_channels=c.max_channels,
                                  latent_hidden=c.latent_hidden)
  x = jax.ShapeDtypeStruct((1, c.image_size, c.image_size, c.in_channels), jnp.float32)
  h = jax.eval_shape(lambda x: enc.apply(enc.init(jax.random.key(0), x), x), x)
  sides = [c.image_size] + [f.shape[1] for f in h]
  chans = [c.in_channels] + [f.shape[-1] for f in h]
  rows = [('down', sides[i], chans[i], chans[i + 1]) for i in range(len(h))]
  ins = [chans[-1] + c.z_dim] + [2 * w for w in chans[-2:0:-1]]
  outs = chans[-2:0:-1] + [c.out_channels]
  return rows + [('up', sides[-1 - i], ci, co) for i, (ci, co) in enumerate(zip(ins, outs))]


def profile_layers(c, steps: int, impls=('plain', 'matmul', 'conv', 'auto')) -> list[dict]:
  """Times every layer at the bench shapes (batch B) in each form, interleaved.

  Per layer and impl: the forward, forward + input gradient (what the z step needs) and
  forward + input and kernel gradients (the (H, G) step), median ms of `steps` rounds in
  which every form runs once (so load drifts hit all forms alike), and the XLA FLOPs.
  """
  from cgml_jax.models.layers import conv4x4_down, conv4x4_up
  rows = []
  for kind, side, cin, cout in layer_shapes(c):
    fn = conv4x4_down if kind == 'down' else conv4x4_up
    kx, kk, kg = jax.random.split(jax.random.key(0), 3)
    x = jax.random.normal(kx, (c.batch_size, side, side, cin))
    k = jax.random.normal(kk, (4, 4, cin, cout)) * 0.05
    cot = jax.random.normal(kg, jax.eval_shape(lambda x, k: fn(x, k, 'plain'), x, k).shape)
    fns = {}
    for impl in impls:
      def loss(x, k, impl=impl):
        return jnp.sum(fn(x, k, impl) * cot)
      fns[impl] = {'fwd': jax.jit(lambda x, k, impl=impl: fn(x, k, impl)),
                   'fwd+dx': jax.jit(jax.grad(loss)),
                   'fwd+dx+dk': jax.jit(jax.grad(loss, argnums=(0, 1)))}
    for mode in ('fwd', 'fwd+dx', 'fwd+dx+dk'):
      compiled = {i: fns[i][mode].lower(x, k).compile() for i in impls}
      for f in compiled.values():
        jax.block_until_ready(f(x, k))
      times = {i: [] for i in impls}
      for _ in range(steps):
        for i, f in compiled.items():
          t = time.perf_counter()
          jax.block_until_ready(f(x, k))
          times[i].append(time.perf_counter() - t)
      for i in impls:
        rows.append({'layer': f'{kind} {side}x{side} {cin}->{cout}', 'impl': i, 'mode': mode,
                     'ms': 1e3 * float(np.median(times[i])), 'flops': _flops(compiled[i])})
  return rows


def run_peer(steps: int) -> dict | None:
  """Runs the PyTorch peer with --json; None when torch or the peer is missing."""
  if importlib.util.find_spec('torch') is None or not os.path.exists(PEER):
    return None
  out = subprocess.run([sys.executable, PEER, '--steps', str(steps), '--json'],
                       capture_output=True, text=True, check=True)
  return json.loads(out.stdout.strip().splitlines()[-1])


def plot(res: dict, c, path: str):
  """PNG of training time vs l and inference time vs T and vs K."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
  for ax, name, xlabel in zip(axes, ('train_vs_l', 'infer_vs_T', 'infer_vs_K'),
                              (f'inner steps l (B={c.batch_size})',
                               f'traversal steps T (K={c.num_samples})',
                               f'samples K (T={c.num_steps})')):
    xs = [r['value'] for r in res[name]]
    ax.plot(xs, [r['median_s'] * 1e3 for r in res[name]], 'o-', label='median')
    ax.plot(xs, [r['best_s'] * 1e3 for r in res[name]], 's--', label='best')
    ax.set_xlabel(xlabel)
    ax.set_ylabel('ms per call')
    ax.legend()
    ax.grid(alpha=.3)
  axes[0].set_title('cgml.train_step')
  axes[1].set_title('cgml.sample')
  axes[2].set_title('cgml.sample')
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def main(argv=None) -> dict:
  """Runs the benchmark; prints a table (or JSON) and returns the results."""
  ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  ap.add_argument('--steps', type=int, default=10, help='timed calls per measurement')
  ap.add_argument('--json', action='store_true', help='print results as one JSON object')
  ap.add_argument('--out', default=None, help='directory for bench_scaling.png')
  ap.add_argument('--no-torch', action='store_true', help='skip the PyTorch peer')
  ap.add_argument('--no-scaling', action='store_true', help='skip the l / T / K curves')
  ap.add_argument('--impl', default=None, help="override config.impl, e.g. 'plain'")
  ap.add_argument('--layers', action='store_true',
                  help='also time every layer in each form (plain, matmul, conv, auto)')
  ap.add_argument('--smoke', action='store_true', help='tiny sizes, for tests')
  ap.add_argument('--rounds', type=int, default=3,
                  help='alternate JAX and the torch peer this many times; ratios are the '
                       'median of the per-round ratios')
  a = ap.parse_args(argv)
  c = get_config(a.smoke)
  if a.impl:
    c.impl = a.impl
  steps = max(a.steps, 1)

  res = {'config': c.to_dict(), 'jax': jax.__version__, 'devices': str(jax.devices())}
  # The matmul rate is measured before and after the model (the load of a shared machine
  # drifts); the best of both is the machine's rate.
  mm = [matmul_rate(c.matmul_size, steps)]
  # The machine's speed drifts by tens of percent within minutes, so JAX and the peer are
  # timed in alternation (JAX train + infer, then the peer, `--rounds` times) and each
  # round gives its own ratio.
  timers = {'train': train_timer(c), 'infer': infer_timer(c)}
  peer_fn = None if (a.no_torch or a.smoke) else run_peer
  res.update(alternate(timers, peer_fn, steps, a.rounds))
  rounds = res['rounds']
  mm.append(matmul_rate(c.matmul_size, steps))
  res['matmul_gflops_per_s'] = max(m['best'] for m in mm)
  res['matmul_median_gflops_per_s'] = [m['median'] for m in mm]
  pf = plain_flops(c)
  for name, flops in zip(('train', 'infer'), pf):
    t = res[name]
    t['plain_flops'] = flops
    # Best-of-N against best-of-N: the least disturbed call of each.
    t['plain_gflops_per_s_best'] = flops / t['best_s'] / 1e9
    t['executed_gflops_per_s_best'] = t['flops'] / t['best_s'] / 1e9
    t['fraction_of_matmul'] = t['plain_gflops_per_s_best'] / res['matmul_gflops_per_s']
    t['executed_fraction_of_matmul'] = (t['executed_gflops_per_s_best']
                                        / res['matmul_gflops_per_s'])
  if a.layers:
    res['layers'] = profile_layers(c, steps)
  if not a.no_scaling:
    scan_steps = steps
    res['train_vs_l'] = [dict(value=l, **time_train(c, scan_steps, inner_steps=l))
                         for l in c.scan_l]
    state = make_state(c)
    res['infer_vs_T'] = [dict(value=t, **time_infer(c, scan_steps, state, num_steps=t))
                         for t in c.scan_t]
    res['infer_vs_K'] = [dict(value=k, **time_infer(c, scan_steps, state, num_samples=k))
                         for k in c.scan_k]
    if a.out:
      os.makedirs(a.out, exist_ok=True)
      res['png'] = os.path.join(a.out, 'bench_scaling.png')
      plot(res, c, res['png'])
  peer = res.get('torch')

  if a.json:
    print(json.dumps(res))
    return res
  print(f"jax {res['jax']} on {res['devices']}; impl={c.impl}; median of {steps} calls, "
        f"{len(rounds)} round(s)" + (' alternated with the torch peer' if peer else ''))
  print(f"f32 matmul {c.matmul_size}^2: best {res['matmul_gflops_per_s']:.0f} GFLOP/s, median "
        + ' / '.join(f'{m:.0f}' for m in res['matmul_median_gflops_per_s']) + ' (before / after)')
  print('| | ms/call | images/s | GFLOP/call (XLA) | GFLOP/s | compile s | torch images/s | '
        'ratio (median of rounds) |')
  print('|---|---|---|---|---|---|---|---|')
  for name in ('train', 'infer'):
    r = res[name]
    t = f"{peer[name]['images_per_s']:.1f} | {res['ratio_' + name]:.2f}x" if peer else '- | -'
    print(f"| {name} | {r['median_s'] * 1e3:.1f} | {r['images_per_s']:.1f} | "
          f"{r['flops'] / 1e9:.2f} | {r['gflops_per_s']:.1f} | {r['compile_s']:.1f} | {t} |")
  if peer:
    for name in ('train', 'infer'):
      cells = ', '.join(f"{r[name]['images_per_s']:.1f} / {r['torch'][name]['images_per_s']:.1f}"
                        f" = {r['ratio_' + name]:.2f}x" for r in rounds if 'torch' in r)
      print(f"{name} per round (jax / torch images/s): {cells}; median ratio "
            f"{res['ratio_' + name]:.2f}x")
  for name in ('train', 'infer'):
    t = res[name]
    print(f"{name}: best call {t['best_s'] * 1e3:.0f} ms; plain-equivalent "
          f"{t['plain_flops'] / 1e9:.2f} GFLOP -> {t['plain_gflops_per_s_best']:.1f} GFLOP/s = "
          f"{100 * t['fraction_of_matmul']:.0f}% of the best matmul rate; executed "
          f"{t['flops'] / 1e9:.2f} GFLOP -> {t['executed_gflops_per_s_best']:.1f} GFLOP/s = "
          f"{100 * t['executed_fraction_of_matmul']:.0f}%")
  if 'layers' in res:
    print('| layer | mode | ' + ' | '.join(f'{i} ms (GFLOP)' for i in
                                          dict.fromkeys(r['impl'] for r in res['layers'])) + ' |')
    print('|---|---|' + '---|' * len(dict.fromkeys(r['impl'] for r in res['layers'])))
    for key in dict.fromkeys((r['layer'], r['mode']) for r in res['layers']):
      cells = [f"{r['ms']:.1f} ({r['flops'] / 1e9:.2f})" for r in res['layers']
               if (r['layer'], r['mode']) == key]
      print(f'| {key[0]} | {key[1]} | ' + ' | '.join(cells) + ' |')
  for name, label in (('train_vs_l', 'l'), ('infer_vs_T', 'T'), ('infer_vs_K', 'K')):
    if name in res:
      cells = ', '.join(f"{label}={r['value']}: {r['median_s'] * 1e3:.0f} ms "
                        f"({r['compile_s']:.1f} s compile)" for r in res[name])
      print(f'{name}: {cells}')
  if 'png' in res:
    print(f"curves: {res['png']}")
  return res


if __name__ == '__main__':
  main()
