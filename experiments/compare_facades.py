"""cGML vs. its peers on facades label map -> photo (paper Sec. 5.3.1), equal budgets:

  python -m experiments.compare --config=experiments/compare_facades.py --workdir=runs/cmp_fac
  python -m experiments.compare --config=experiments/compare_facades.py:smoke --workdir=/tmp/cf

The task part is experiments/translate.py; this adds the peers' fields and the methods.
"""

import ml_collections

from cgml_jax import compare
from experiments import translate


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  c = compare.add_compare_fields(translate.get_config(arg))
  c.methods = ('l1', 'cgml', 'pix2pix', 'basisgan', 'mrgan', 'pix2pix+msgan')
  c.compare.target_error = 0.5  # L1 in [-1, 1] units, best of curve_samples
  c.compare.curve_every = 50
  if arg == 'smoke':
    c.methods = ('l1', 'pix2pix+msgan')  # cgml, mrgan: in compare_mnist.py's smoke
    c.gan.disc_features = 8
    c.compare.probe_size = 4
    c.compare.curve_samples = 2
    c.compare.curve_every = 2
  return c
