"""setup.cfg: only the library is installed, `.[test]` holds what the tests import, and the
library never imports the checkout-only packages (experiments, benchmarks)."""

import ast
import configparser
import fnmatch
import importlib.metadata
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHECKOUT_ONLY = ('experiments', 'benchmarks')


def _setup_cfg() -> configparser.ConfigParser:
  cfg = configparser.ConfigParser()
  cfg.read(os.path.join(ROOT, 'setup.cfg'))
  return cfg


def _requirements(text: str) -> set[str]:
  """Normalised distribution names of a setup.cfg requirement list."""
  names = set()
  for line in text.strip().splitlines():
    name = re.match(r'\s*([A-Za-z0-9_.\-]+)', line).group(1)
    names.add(re.sub(r'[-_.]+', '-', name).lower())
  return names


def _imports(path: str) -> set[str]:
  """Top-level module names a Python file imports (anywhere in it)."""
  with open(path) as f:
    tree = ast.parse(f.read())
  out = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      out.update(a.name.split('.')[0] for a in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      out.add(node.module.split('.')[0])
  return out


def _py_files(folder: str):
  for d, _, files in os.walk(os.path.join(ROOT, folder)):
    yield from (os.path.join(d, f) for f in files if f.endswith('.py'))


def _find_packages(include: list[str]) -> list[str]:
  """setuptools' `find:` with `include` patterns: dotted names of folders with __init__.py."""
  out = []
  for d, dirs, files in os.walk(ROOT):
    dirs[:] = [x for x in dirs if not x.startswith('.')]
    name = os.path.relpath(d, ROOT).replace(os.sep, '.')
    if '__init__.py' in files and any(fnmatch.fnmatchcase(name, p) for p in include):
      out.append(name)
  return out


def test_only_the_library_is_installed():
  find = _setup_cfg()['options.packages.find']
  packages = _find_packages(find['include'].split())
  assert packages and {p.split('.')[0] for p in packages} == {'cgml_jax'}, packages


def test_the_library_does_not_import_checkout_only_packages():
  for path in _py_files('cgml_jax'):
    assert not _imports(path) & set(CHECKOUT_ONLY), path


def test_test_extra_holds_what_the_tests_import():
  cfg = _setup_cfg()
  installed = _requirements(cfg['options']['install_requires'])
  test_extra = _requirements(cfg['options.extras_require']['test'])
  local = {os.path.splitext(f)[0] for f in os.listdir(os.path.join(ROOT, 'tests'))}
  local |= {'cgml_jax', *CHECKOUT_ONLY}
  dists = importlib.metadata.packages_distributions()
  needed = set()
  for path in _py_files('tests'):
    for mod in _imports(path) - local - set(sys.stdlib_module_names):
      # A module not installed here (an optional import) is named by its own distribution.
      for dist in dists.get(mod, [mod]):
        needed.add(re.sub(r'[-_.]+', '-', dist).lower())
  # The notebook tests run a python3 kernel: ipykernel is needed though never imported.
  needed.add('ipykernel')
  # Everything the tests need is installed by `.[test]`, and `.[test]` holds nothing else.
  assert needed - installed - test_extra == set()
  assert test_extra - needed == set()
