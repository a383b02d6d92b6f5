"""Wall-time estimate of a config's training per device type, derived from its FLOP count.

  python -m experiments.estimate --config=experiments/colorize.py:paper
  python -m experiments.estimate --config=experiments/colorize.py:paper \
      --out=results/estimates/colorize_paper.json      # the docs table reads these files

An estimate, not a measurement. For every method of `config.methods` the real training
step (`cgml_jax.tasks.methods.build`, the state and step a run trains) is lowered with
jax at batch 1 and batch 2, and XLA's count of its FLOPs is read (`Lowered.cost_analysis`;
nothing is compiled or run, so the paper sizes fit in a laptop's memory). A step's FLOPs
are a + b * batch (the layers grow with the batch; the optimiser and spectral-norm updates
do not), so the two counts give them at `data.batch_size` exactly. The step is lowered
with XLA's own convolutions (`model.impl='plain'`, what GPU and TPU run) and the inner
scan unrolled, because XLA counts a loop body once however often it runs. Then

  hours on a device = sum over methods of (FLOPs per step * train.steps)
                      / (peak FLOP/s of the device * assumed utilisation) / 3600.

Not counted: evaluation, the data pipeline, compilation, checkpoints. No data is read: the
step sees a synthetic source of the config's shapes (`offline`).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags
from ml_collections import config_flags

from cgml_jax import configs
from cgml_jax import data as data_lib
from cgml_jax.tasks import image
from cgml_jax.tasks import methods as methods_lib

FLAGS = flags.FLAGS


@dataclasses.dataclass(frozen=True)
class Device:
  """One device type of the estimate.

  Attributes:
    name: as shown in the table.
    peak: dense peak FLOP/s of one device (chip) in the precision JAX uses for float32
      matmuls and convolutions at its default precision on that device.
    precision: that precision, in words.
    utilisation: assumed fraction of `peak` a training step reaches.
  """
  name: str
  peak: float
  precision: str
  utilisation: float


# Peaks are the vendors' datasheet figures. Utilisation: on the CPU, what
# benchmarks/bench.py measured for the training step of a smaller model of the same
# family (39-42 % of the 2048^2 f32 matmul rate, docs/performance.md); on accelerators a
# round assumption for a batch-64 conv net with small layers, not a measurement.
DEVICES = (
    Device('CPU, 2 cores', 2.0e11,
           'f32 (the benchmark machine\'s measured 2048^2 matmul rate, 170-245 GFLOP/s)',
           0.4),
    Device('NVIDIA T4', 8.1e12, 'f32 (no TF32 on Turing)', 0.3),
    Device('NVIDIA V100', 15.7e12, 'f32 (no TF32 on Volta)', 0.3),
    Device('NVIDIA A100', 156e12, 'TF32 (JAX\'s default f32 precision on Ampere)', 0.3),
    Device('TPU v4, one chip', 275e12, 'bf16 passes (JAX\'s default f32 precision on TPU)',
           0.3),
    Device('TPU v5e, one chip', 197e12, 'bf16 passes (JAX\'s default f32 precision on TPU)',
           0.3),
)

_TASK_MODULES = {'colorize': 'cgml_jax.tasks.colorize', 'complete': 'cgml_jax.tasks.complete',
                 'translate': 'cgml_jax.tasks.translate'}


def synthetic_source(config, split: str, num_examples: int = 8) -> data_lib.ArraySource:
  """Random uint8 images under every key an image task reads ('image', 'input',
  'target'), at data.image_size; stands in for a dataset that is not on this machine."""
  del split
  s = int(config.data.image_size)
  rng = np.random.default_rng(int(config.seed))
  return data_lib.ArraySource({k: rng.integers(0, 256, (num_examples, s, s, 3), np.uint8)
                               for k in ('image', 'input', 'target')})


def offline(task_name: str, config: ml_collections.ConfigDict
            ) -> tuple[image.ImageTask, ml_collections.ConfigDict]:
  """The image task of `task_name` reading `synthetic_source`, and a config copy whose
  remaining data reads need no files (colorization's ab prior: a few embedded crops).

  The model, optimiser, method and batch shapes are the config's own.
  """
  module = importlib.import_module(_TASK_MODULES[task_name])
  task = (module.make_task(int(config.data.channels)) if task_name == 'complete'
          else module.TASK)
  task = dataclasses.replace(task, source=synthetic_source)
  c = config.copy_and_resolve_references()
  c.data.name = 'embedded'
  c.data.train_split, c.data.test_split = 'train', 'test'
  c.data.num_train = 16
  c.data.num_threads = 1
  if 'loss' in c and 'prior_examples' in c.loss:
    c.loss.prior_examples = 16  # the prior's values do not change the step's cost
  return task, c


def step_flops(task: image.ImageTask, config: ml_collections.ConfigDict, method: str,
               batch_sizes: tuple[int, ...] = (1, 2)) -> list[float]:
  """XLA's FLOP count of one training step of `method` at each of `batch_sizes`.

  The state is built once (its shapes do not depend on the batch); the step is lowered,
  not compiled or run.
  """
  c = config.copy_and_resolve_references()
  c.data.batch_size = max(batch_sizes)
  c.model.impl = 'plain'   # XLA's own convolutions, as 'auto' picks on GPU and TPU
  with c.ignore_type():    # unroll may hold 'auto' (a str)
    c.train.unroll = True  # a rolled scan's body would be counted once, not l times
  ctx = image.method_context(task, c)
  built = methods_lib.build(method, ctx, jax.random.key(0))
  step = jax.jit(built.step_fn)
  out = []
  for b in batch_sizes:
    batch = {k: jnp.asarray(v[:b]) for k, v in ctx.example.items()}
    cost = step.lower(built.state, batch, jax.random.key(1)).cost_analysis()
    if isinstance(cost, (list, tuple)):  # older jax: one dict per computation
      cost = cost[0]
    out.append(float(cost['flops']))
  return out


def estimate(config: ml_collections.ConfigDict, name: str = '') -> dict:
  """FLOPs per step and in total, and hours per device type (see the module docstring).

  Args:
    config: an image-task config (colorize, complete or translate).
    name: how the config was given, e.g. 'experiments/colorize.py:paper' (recorded).

  Returns:
    A JSON-serialisable dict.
  """
  configs.validate(config)
  if config.task not in _TASK_MODULES:
    raise configs.ConfigError(f'config.task = {config.task!r} is not allowed; expected one '
                              f'of {tuple(_TASK_MODULES)} (the image tasks)')
  task, c = offline(config.task, config)
  b, steps = int(config.data.batch_size), int(config.train.steps)
  per_method = {}
  for method in config.methods:
    f1, f2 = step_flops(task, c, method, (1, 2))
    per_step = f1 + (b - 1) * (f2 - f1)
    per_method[method] = {'flops_batch1': f1, 'flops_batch2': f2,
                          'flops_per_step': per_step, 'flops_total': per_step * steps}
  total = sum(m['flops_total'] for m in per_method.values())
  d = config.data
  return {
      'config': name,
      'task': config.task,
      'data': d.name,
      'image_size': int(d.image_size),
      'batch_size': b,
      'steps': steps,
      'inner_steps': int(config.train.inner_steps),
      'widths': [int(config.model.base_channels), int(config.model.max_channels)],
      'methods': per_method,
      'flops_total': total,
      'devices': [{**dataclasses.asdict(dev),
                   'hours': total / (dev.peak * dev.utilisation) / 3600.0}
                  for dev in DEVICES],
      'counted': 'training steps of every method in config.methods; not evaluation, '
                 'data loading, compilation or checkpoints',
      'flop_source': f'XLA cost_analysis of the lowered step (jax {jax.__version__}), '
                     'model.impl=plain, train.unroll=True, batch 1 and 2 extrapolated '
                     'linearly',
  }


def main(argv):
  del argv
  if FLAGS.config is None:
    raise app.UsageError('--config is required, e.g. --config=experiments/colorize.py:paper')
  name = next((a.split('=', 1)[1] for a in sys.argv
               if a.startswith('--config=')), '')
  try:
    out = estimate(FLAGS.config, name)
  except configs.ConfigError as e:
    raise SystemExit(f'error: {e}') from None
  text = json.dumps(out, indent=1)
  if FLAGS.out:
    os.makedirs(os.path.dirname(os.path.abspath(FLAGS.out)), exist_ok=True)
    with open(FLAGS.out, 'w') as f:
      f.write(text + '\n')
  print(text)


def define_flags():
  """The command's flags; defined only when it runs, so that tests can import this module
  next to other commands that also define --config."""
  config_flags.DEFINE_config_file('config', None, 'Experiment config file[:variant].',
                                  lock_config=True)
  flags.DEFINE_string('out', '', 'Write the estimate as JSON here (and print it).')


if __name__ == '__main__':
  define_flags()
  app.run(main)
