"""Representation probe with the paper's protocol (Table 5): encoders of facades completion.

  python -m experiments.run --config=experiments/probe.py --workdir=runs/probe
  python -m experiments.run --config=experiments/probe.py:cpu --workdir=runs/probe_cpu
  python -m experiments.run --config=experiments/probe.py:smoke --workdir=runs/probe_smoke

Table 5 of the paper probes the encoders H of models trained on facades *completion*
(photos with square holes, `cgml_jax.tasks.complete`), not on the MNIST recovery or the
label-map translation of compare_mnist.py and compare_facades.py. This config trains every
method on that task with equal budgets, evaluates the completions, and then runs the
linear probe of `cgml_jax.tasks.representation` on each frozen H (and an untrained one):
CIFAR-10 rows mapped to the completion input (RGB, resized, mask channel all zero:
nothing missing), a logistic regression on the bottleneck features.

The task part is experiments/complete.py (same arguments: nothing, cpu, smoke) with the
facades photos as data; the peers' and the probe's fields come from
`cgml_jax.tasks.image.add_comparison_fields`.
"""

import ml_collections

from cgml_jax import configs
from cgml_jax.tasks import image
from experiments import complete


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = configs.parse_arg(arg, cpu=False, smoke=False)
  c = image.add_comparison_fields(complete.get_config(arg))
  c.data.name = 'facades'      # the 400 facades photos (train = 360, test = the 106)
  c.data.image_key = 'target'  # the photo half of the facades pairs
  c.methods = ('l1', 'cgml', 'context_encoder', 'pix2pix', 'basisgan', 'mrgan',
               'pix2pix+msgan')
  c.gan.disc_features = c.model.base_channels  # D as wide as H's first block
  c.mrgan.loss = 'mcmle1'      # MR_1 (no predictor); 'mlmm12' = pMR_2 (+ predictor steps)
  c.compare.target_error = 0.3  # hole L1 in [-1, 1] units, best of curve_samples
  c.compare.curve_every = 50
  c.probe.datasets = ('cifar10',)  # the probe's labelled set
  c.eval.num_test = 106        # the official facades test photos
  if a.cpu:
    c.probe.train_per_class = 100  # 1000 probe-train rows, 1000 probe-test rows
  if a.smoke:
    c.methods = ('l1', 'cgml')
    c.data.train_split = 'train[:32]'
    c.eval.num_test = 8
    c.probe.train_per_class = 4  # 40 probe-train rows, 20 probe-test rows
    c.probe.test_per_class = 2
    c.probe.steps = 10
    c.probe.batch_size = 20
    c.compare.probe_size = 4
    c.compare.curve_samples = 2
    c.compare.curve_every = 2
  return c
