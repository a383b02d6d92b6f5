"""The environment for test subprocesses that run a few tiny compiled programs.

Their CPU time is XLA compilation, which LLVM's -O0 cuts by about a third (the launcher
smoke run: 47 s -> 31 s CPU). Only how fast the machine code runs changes; results agree
up to rounding (a smoke run's metrics.json: equal for l1, cgml's branch_error 2.1326332
vs 2.1326334). Tests that compare runs give every run this same environment.
"""

import os


def fast_compile_env(**extra: str) -> dict[str, str]:
  """os.environ with `--xla_backend_optimization_level=0` added to XLA_FLAGS, plus `extra`."""
  flags = (os.environ.get('XLA_FLAGS', '') + ' --xla_backend_optimization_level=0').strip()
  return {**os.environ, 'XLA_FLAGS': flags, **extra}
