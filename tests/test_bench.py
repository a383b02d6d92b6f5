"""Smoke test of benchmarks/bench.py: the real entry point at tiny sizes, one step."""

import os

from benchmarks import bench


def test_bench_smoke(tmp_path):
  res = bench.main(['--smoke', '--steps', '1', '--json', '--out', str(tmp_path)])
  for name in ('train', 'infer'):
    assert res[name]['images_per_s'] > 0 and res[name]['flops'] > 0
  assert [r['value'] for r in res['train_vs_l']] == [1]
  assert os.path.getsize(os.path.join(tmp_path, 'bench_scaling.png')) > 0
  assert 'torch' not in res  # smoke mode never runs the peer
