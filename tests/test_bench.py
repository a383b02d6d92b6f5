"""Smoke test of benchmarks/bench.py: the real entry point at tiny sizes, one step."""

import os

import pytest

from benchmarks import bench


@pytest.mark.slow  # long; run with -m slow
def test_bench_smoke(tmp_path):
  res = bench.main(['--smoke', '--steps', '1', '--json', '--out', str(tmp_path)])
  for name in ('train', 'infer'):
    assert res[name]['images_per_s'] > 0 and res[name]['flops'] > 0
    assert res[name]['plain_flops'] > 0 and res[name]['fraction_of_matmul'] > 0
  assert [r['value'] for r in res['train_vs_l']] == [1]
  assert os.path.getsize(os.path.join(tmp_path, 'bench_scaling.png')) > 0
  assert 'torch' not in res  # smoke mode never runs the peer


def test_profile_layers_smoke():
  c = bench.get_config(smoke=True)
  shapes = bench.layer_shapes(c)
  # H: 8 -> 4 -> 2 (widths 4, 8); G mirrors it with z and skip channels on its inputs.
  assert shapes == [('down', 8, 1, 4), ('down', 4, 4, 8), ('up', 2, 8 + c.z_dim, 4),
                    ('up', 4, 8, c.out_channels)]
  # Profiled at 4 x 4 (one down and one up layer, both branches of the per-layer loop):
  # each layer costs three compiles, so this halves the test's time.
  c.image_size = 4
  shapes = bench.layer_shapes(c)
  assert [s[0] for s in shapes] == ['down', 'up']
  rows = bench.profile_layers(c, 1, impls=('auto',))
  assert len(rows) == len(shapes) * 3  # fwd, fwd+dx, fwd+dx+dk
  assert [r['mode'] for r in rows[:3]] == ['fwd', 'fwd+dx', 'fwd+dx+dk']
  assert all(r['ms'] > 0 and r['flops'] > 0 for r in rows)


def test_layer_shapes_of_the_bench_config():
  assert bench.layer_shapes(bench.get_config()) == [
      ('down', 32, 1, 32), ('down', 16, 32, 64), ('down', 8, 64, 128), ('down', 4, 128, 256),
      ('up', 2, 272, 128), ('up', 4, 256, 64), ('up', 8, 128, 32), ('up', 16, 64, 2)]


def test_alternate_gives_per_round_ratios_and_their_median():
  # Fake programs whose speed drifts between rounds, as the machine's does: each round's
  # ratio is taken within the round, and the reported ratio is their median (which here
  # differs from the ratio of the pooled medians).
  calls = []

  def timer(name, ms):
    def run(steps):
      calls.append(name)
      sec = ms[calls.count(name) - 1] / 1e3
      return {'median_s': sec, 'best_s': sec * 0.9, 'images_per_s': 64 / sec, 'flops': 1e9,
              'gflops_per_s': 1.0 / sec, 'compile_s': 1.0}
    return run

  peer_ips = iter([64.0, 8.0, 64.0])

  def peer(steps):
    calls.append('peer')
    ips = next(peer_ips)
    return {'train': {'images_per_s': ips}, 'infer': {'images_per_s': 4 * ips}}

  timers = {'train': timer('train', [1000, 2000, 500]), 'infer': timer('infer', [100, 200, 50])}
  res = bench.alternate(timers, peer, steps=1, rounds=3)
  assert calls == ['train', 'infer', 'peer'] * 3
  # Train: 64 / 64, 32 / 8, 128 / 64 images/s.
  assert [r['ratio_train'] for r in res['rounds']] == [1.0, 4.0, 2.0]
  assert res['ratio_train'] == 2.0
  # Infer: 640 / 256, 320 / 32, 1280 / 256.
  assert [r['ratio_infer'] for r in res['rounds']] == [2.5, 10.0, 5.0]
  assert res['ratio_infer'] == 5.0
  assert res['train']['median_s'] == 1.0 and res['train']['best_s'] == 0.45
  assert res['train']['images_per_s'] == 64.0
  assert res['torch']['train']['images_per_s'] == 64.0


def test_alternate_without_the_peer_runs_one_round():
  def timer(steps):
    return {'median_s': 1.0, 'best_s': 1.0, 'images_per_s': 64.0, 'flops': 1e9,
            'gflops_per_s': 1.0, 'compile_s': 1.0}

  res = bench.alternate({'train': timer}, None, steps=1, rounds=3)
  assert len(res['rounds']) == 1 and 'torch' not in res and 'ratio_train' not in res
  res = bench.alternate({'train': timer}, lambda steps: None, steps=1, rounds=3)
  assert len(res['rounds']) == 1 and 'torch' not in res
