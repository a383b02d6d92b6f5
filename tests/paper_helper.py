"""Trains each `:paper` config at reduced size for 2 steps; prints one JSON line per run.

Run by tests/test_paper_configs.py in a subprocess, so that XLA compiles with the fast
settings of `compile_env` (its CPU time is almost all compilation).

  python tests/paper_helper.py colorize complete translate
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from cgml_jax import configs  # noqa: E402
from cgml_jax.tasks import image  # noqa: E402
from cgml_jax.tasks import methods as methods_lib  # noqa: E402
from experiments import colorize, complete, estimate, translate  # noqa: E402

MODULES = {'colorize': colorize, 'complete': complete, 'translate': translate}


def reduced(task: str):
  """The task's `:paper` config with small images, widths and batch, 2 steps."""
  c = MODULES[task].get_config('paper')
  # Two stride-2 blocks down to the :paper bottleneck (12, 4, 4 px instead of 96, 128,
  # 256): the test must stay fast on a CPU.
  c.data.image_size = 4 * c.model.bottleneck_size
  c.data.batch_size = 2 * jax.device_count()
  c.model.base_channels = 4
  c.model.max_channels = 8
  c.model.z_dim = 4
  c.model.latent_hidden = (8,)
  c.train.steps = 2
  c.train.log_every = 1
  return c


def main(tasks):
  for task in tasks:
    task_obj, c = estimate.offline(task, reduced(task))
    configs.validate(c)
    ctx = image.method_context(task_obj, c)
    for i, method in enumerate(c.methods):
      trained = methods_lib.train(method, ctx, jax.random.key(i))
      errors = [float(h['E']) for h in trained.history]
      print(json.dumps({'task': task, 'method': method, 'E': errors,
                        'finite': bool(np.all(np.isfinite(errors))),
                        'step': int(trained.state.step),
                        'image_size': int(c.data.image_size)}), flush=True)


if __name__ == '__main__':
  main(sys.argv[1:])
