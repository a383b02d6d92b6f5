"""The `:paper` configs build, compile and train: each at reduced size on CPU, 2 steps.

Reduced means smaller images, widths and batch (`tests/paper_helper.py`, run in a
subprocess with fast XLA compilation); the rest of the `:paper` structure (task, methods,
down-sampling to the same bottleneck, l, losses, optimisers) is kept. The data is
`experiments.estimate.synthetic_source`, so nothing is downloaded or read. The estimate
command is checked on a smoke config.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from compile_env import fast_compile_env

from cgml_jax import configs
from cgml_jax.tasks import image
from experiments import colorize, complete, estimate, translate

HELPER = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'paper_helper.py')

MODULES = {'colorize': colorize, 'complete': complete, 'translate': translate}


def test_paper_configs_name_the_full_datasets():
  names = {t: m.get_config('paper').data.name for t, m in MODULES.items()}
  assert names == {'colorize': 'tfds:stl10', 'complete': 'tfds:celeb_a',
                   'translate': 'pix2pix:pix2pix/facades'}
  for module in MODULES.values():
    c = module.get_config('paper')
    configs.validate(c)
    assert c.model.base_channels == 64 and c.model.max_channels == 512
    assert c.train.steps > module.get_config().train.steps  # longer than the CPU default


def test_paper_configs_train_two_steps_at_reduced_size():
  out = subprocess.run([sys.executable, HELPER, *MODULES], capture_output=True, text=True,
                       timeout=600, env=fast_compile_env())
  assert out.returncode == 0, out.stderr[-3000:]
  runs = [json.loads(line) for line in out.stdout.splitlines() if line.startswith('{')]
  expected = [(t, m) for t, module in MODULES.items() for m in module.get_config('paper').methods]
  assert [(r['task'], r['method']) for r in runs] == expected
  for r in runs:
    assert len(r['E']) == 2 and r['finite'], r
    assert r['step'] == 2, r


def test_center_crop_keeps_the_aspect_of_non_square_images():
  img = np.zeros((218, 178, 3), np.uint8)
  img[39:179, 19:159] = 255    # the centred 140x140 square
  out = image.resize(16, ('image',), center_crop=140)({'image': img}, None)['image']
  assert out.shape == (16, 16, 3) and out.min() == 255
  plain = image.resize(16, ('image',))({'image': img}, None)['image']
  assert plain.min() == 0      # without the crop the black border is squeezed in


def test_estimate_is_linear_in_the_batch_and_counts_every_method():
  c = colorize.get_config('photos,smoke')
  c.train.steps = 10
  c.data.batch_size = 4
  out = estimate.estimate(c, 'smoke')
  assert set(out['methods']) == set(c.methods)
  for m in out['methods'].values():
    f1, f2 = m['flops_batch1'], m['flops_batch2']
    assert 0 < f1 < f2
    assert m['flops_per_step'] == pytest.approx(f1 + 3 * (f2 - f1))
    assert m['flops_total'] == pytest.approx(10 * m['flops_per_step'])
  # cGML's step has l inner steps of H, G and Z; L1's one step of H and G.
  assert out['methods']['cgml']['flops_per_step'] > out['methods']['l1']['flops_per_step']
  dev = out['devices'][0]
  assert dev['hours'] == pytest.approx(out['flops_total'] / (dev['peak'] * dev['utilisation'])
                                       / 3600)
