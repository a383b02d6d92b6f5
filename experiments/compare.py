"""Alias of experiments/run.py: a comparison is a config with more methods.

  python -m experiments.compare --config=experiments/compare_mnist.py --workdir=runs/cmp
"""

from experiments import run

if __name__ == '__main__':
  run.launch()
