"""cGML vs. its peers on corrupted-MNIST recovery (paper Sec. 5.1), equal step budgets:

  python -m experiments.run --config=experiments/compare_mnist.py:box --workdir=runs/cmp_box
  python -m experiments.run --config=experiments/compare_mnist.py --workdir=runs/cmp_mnist
  python -m experiments.run --config=experiments/compare_mnist.py:smoke --workdir=runs/cs

The task part is experiments/mnist_corrupted.py (same arguments: overlap, box, best, smoke;
`best`: E = L2 for every method, best-of-16 z_0 for cGML). This adds the peers' fields
(cgml_jax.tasks.image.add_comparison_fields), the method list and the representation probe
(CIFAR-10 rows as grey 28px inputs, and MNIST digits).
"""

import ml_collections

from cgml_jax import configs
from cgml_jax.tasks import image
from experiments import mnist_corrupted


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = configs.parse_arg(arg, overlap=False, box=False, smoke=False, best=False)
  c = image.add_comparison_fields(mnist_corrupted.get_config(arg))
  c.methods = ('l1', 'cgml', 'context_encoder', 'pix2pix', 'basisgan', 'mrgan',
               'pix2pix+msgan')
  c.gan.disc_features = c.model.base_channels  # D as wide as H's first block (16)
  c.mrgan.loss = 'mcmle1'      # MR_1 (no predictor); 'mlmm12' = pMR_2 (+ predictor steps)
  c.compare.target_error = 0.25  # hole L1 in [-1, 1] units, best of curve_samples
  c.compare.curve_every = 50
  c.probe.datasets = ('cifar10', 'mnist')  # mnist: train rows / official test, per class
  if a.smoke:
    c.methods = ('l1', 'cgml', 'mrgan')  # pix2pix: in compare_facades.py's smoke
    c.gan.disc_features = 8
    c.mrgan.loss = 'mlmm12'      # the predictor path
    c.mrgan.num_samples = 2
    c.mrgan.predictor_steps = 2
    c.mrgan.predictor_val_size = 8  # of the smoke's 64 training examples
    c.mrgan.norm_batches = 2
    # The smoke batch is 8: D and P read all of it, G half (the paper's 16 / 8 ratio).
    c.mrgan.disc_batch_size = c.mrgan.predictor_batch_size = 8
    c.mrgan.gen_batch_size = 4
    c.probe.datasets = ()
    c.compare.probe_size = 4
    c.compare.curve_samples = 2
    c.compare.curve_every = 2
  else:
    c.train.steps = 500        # a CPU-sized budget
  return c
