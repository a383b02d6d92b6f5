"""cGML vs. its peers on facades label map -> photo (paper Sec. 5.3.1), equal budgets:

  python -m experiments.run --config=experiments/compare_facades.py --workdir=runs/cmp_fac
  python -m experiments.run --config=experiments/compare_facades.py:cpu --workdir=runs/cf
  python -m experiments.run --config=experiments/compare_facades.py:smoke --workdir=runs/cf

The task part is experiments/translate.py (same arguments: nothing, cpu, smoke); this adds
the peers' fields, the methods and the representation probe (CIFAR-10 rows resized to the
task's inputs). ':cpu': half widths, 64px, 250 steps.
"""

import ml_collections

from cgml_jax import configs
from cgml_jax.tasks import image
from experiments import translate


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  a = configs.parse_arg(arg, cpu=False, smoke=False)
  c = image.add_comparison_fields(translate.get_config(arg))
  c.methods = ('l1', 'cgml', 'context_encoder', 'pix2pix', 'basisgan', 'mrgan',
               'pix2pix+msgan')
  c.gan.disc_features = c.model.base_channels  # D as wide as H's first block
  c.mrgan.loss = 'mcmle1'      # MR_1 (no predictor); 'mlmm12' = pMR_2 (+ predictor steps)
  # translate's CPU batch is 8, not the paper's 16: D and P read all of it, G half of it
  # (the paper's 16 / 8 ratio), K = 10 samples each.
  c.mrgan.disc_batch_size = c.mrgan.predictor_batch_size = c.data.batch_size
  c.mrgan.gen_batch_size = c.data.batch_size // 2
  c.compare.target_error = 0.5  # L1 in [-1, 1] units, best of curve_samples
  c.compare.curve_every = 50
  c.probe.datasets = ('cifar10',)
  # translate.get_config(arg) has already applied `smoke` to the task part, so `cpu`'s
  # sizes are skipped under it: smoke always wins, whatever else the argument names.
  if a.cpu and not a.smoke:
    # Sized for a 2-core CPU: at 128px one step of the seven methods takes ~20 s there,
    # plus ~2 min of compilation per method; 64px and 250 steps fit a CPU budget.
    c.data.image_size = 64
    c.train.steps = 250
    c.train.log_every = 50
    c.compare.curve_every = 25
    c.probe.train_per_class = 100  # 1000 probe-train (rows 0:100 of each class), 1000 test
  if a.smoke:
    c.methods = ('l1', 'pix2pix+msgan')  # cgml, mrgan: in compare_mnist.py's smoke
    c.gan.disc_features = 8
    c.probe.datasets = ()
    c.compare.probe_size = 4
    c.compare.curve_samples = 2
    c.compare.curve_every = 2
  return c
