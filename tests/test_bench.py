"""Smoke test of benchmarks/bench.py: the real entry point at tiny sizes, one step."""

import os

from benchmarks import bench


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
