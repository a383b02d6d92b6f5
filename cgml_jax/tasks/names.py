"""Display names of the methods, one table for every report, plot and table.

Light on purpose (no JAX): `experiments.report` reads it to render the docs' tables.
"""

NAMES = {
    'l1': 'L1 regression',
    'cgml_no_rho': 'cGML w/o ρ',
    'cgml': 'cGML with ρ',
    'cgml_T0': 'cGML at T = 0',   # the same cGML model read out at G(h, z_0), no Eq. 4
    'context_encoder': 'Context Encoder',
    'pix2pix': 'pix2pix',
    'basisgan': 'BasisGAN',
    'mrgan': 'MR-GAN',
    'bicyclegan': 'BicycleGAN',
    'cimle': 'cIMLE',
    'untrained_encoder': 'untrained H (probe only)',
}
EXTRAS = {'dsgan': 'DSGAN', 'msgan': 'MSGAN'}  # diversity add-ons: 'pix2pix+msgan'


def display(name: str) -> str:
  """'pix2pix+msgan' -> 'pix2pix+MSGAN'; names outside the tables are returned as given."""
  base, _, extra = name.partition('+')
  if base not in NAMES or (extra and extra not in EXTRAS):
    return name
  return NAMES[base] + (f'+{EXTRAS[extra]}' if extra else '')
