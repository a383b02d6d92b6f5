"""docs/fidelity.md names real code: every function, config key and config file in the
"where in the code" column exists, and every deviation gives a reason."""

import glob
import importlib
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(ROOT, 'docs', 'fidelity.md')
HEADER = ['paper detail', 'where in the code', 'faithful / deviates', 'reason']


def rows(text: str) -> list[list[str]]:
  """The body rows of every table whose header is HEADER, as lists of cells."""
  out, in_table = [], False
  for line in text.splitlines():
    if not line.startswith('|'):
      in_table = False
      continue
    cells = [c.strip() for c in line.strip().strip('|').split('|')]
    if cells == HEADER:
      in_table = True
    elif in_table and not set(''.join(cells)) <= set('-: '):
      assert len(cells) == len(HEADER), line
      out.append(cells)
  return out


def names(cell: str) -> list[str]:
  return re.findall(r'`([^`]+)`', cell)


def resolve(dotted: str):
  """The object of 'package.module.attr.attr': the longest importable module prefix, then
  attributes."""
  parts = dotted.split('.')
  for i in range(len(parts), 0, -1):
    try:
      obj = importlib.import_module('.'.join(parts[:i]))
    except ImportError:
      continue
    for attr in parts[i:]:
      obj = getattr(obj, attr)
    return obj
  raise ImportError(dotted)


def flat_keys(config, prefix='') -> set[str]:
  out = set()
  for k, v in config.items():
    name = f'{prefix}{k}'
    out.add(name)
    if hasattr(v, 'items'):
      out |= flat_keys(v, name + '.')
  return out


@pytest.fixture(scope='module')
def config_keys() -> set[str]:
  """Every field of every experiments/*.py config (default variant)."""
  keys = set()
  for path in sorted(glob.glob(os.path.join(ROOT, 'experiments', '*.py'))):
    if '\ndef get_config(' not in open(path).read():
      continue  # launchers define absl flags on import; configs do not
    module = importlib.import_module(f'experiments.{os.path.basename(path)[:-3]}')
    keys |= flat_keys(module.get_config())
  return keys


def test_table_has_rows_for_every_seed_paper():
  text = open(DOC).read()
  headings = re.findall(r'^## (.*)$', text, re.M)
  for paper in ('cGML', 'MR-GAN', 'BasisGAN', 'pix2pix', 'Context Encoder', 'DSGAN',
                'MSGAN', 'BicycleGAN', 'IMLE'):
    assert any(paper in h for h in headings), paper
  assert len(rows(text)) >= 40


def test_every_named_function_config_key_and_file_exists(config_keys):
  checked = 0
  for detail, where, verdict, reason in rows(open(DOC).read()):
    for name in names(where):
      if name.startswith('cgml_jax.'):
        resolve(name)  # raises ImportError or AttributeError on a wrong name
      elif name.startswith('experiments/'):
        assert os.path.exists(os.path.join(ROOT, name)), name
      else:
        assert re.fullmatch(r'[a-z0-9_]+(\.[a-z0-9_]+)+', name), f'unknown name form {name!r}'
        assert name in config_keys, f'{name!r} (row {detail!r}) is in no experiments config'
      checked += 1
    if verdict.startswith('deviates'):
      assert reason, f'deviation without a reason: {detail!r}'
  assert checked >= 60


def test_the_checker_catches_a_wrong_name(config_keys):
  with pytest.raises(AttributeError):
    resolve('cgml_jax.cgml.z_stepp')
  with pytest.raises(ImportError):
    resolve('nonexistent_package.f')
  assert 'latent.z_loss' in config_keys and 'latent.z_losss' not in config_keys
