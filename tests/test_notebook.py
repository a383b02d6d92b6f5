"""The notebooks run top to bottom (nbclient, kernel python3) at smoke size and show images.

The kernel imports this checkout (PYTHONPATH), and CGML_NOTEBOOK_SMOKE=1 makes each
notebook pick its smoke budget, as it would on a CPU runtime with that variable set.
"""

import os
import time

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = os.path.join(ROOT, 'notebooks')


@pytest.mark.parametrize('name,min_images,no_data', [
    ('quickstart.ipynb', 2, False), ('toy.ipynb', 2, False), ('comparison.ipynb', 2, False),
    # As on Colab: no data folder, so the shapes are generated instead of ModelNet10's.
    ('spectral3d.ipynb', 2, True)])
def test_notebook_runs(monkeypatch, tmp_path, name, min_images, no_data):
  monkeypatch.setenv('CGML_NOTEBOOK_SMOKE', '1')
  if no_data:
    monkeypatch.setenv('CGML_DATA_DIR', str(tmp_path / 'no_data_folder'))
  monkeypatch.setenv('PYTHONPATH', ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
  nb = nbformat.read(os.path.join(NOTEBOOKS, name), as_version=4)
  client = NotebookClient(nb, timeout=170, kernel_name='python3',
                          resources={'metadata': {'path': NOTEBOOKS}})
  t0 = time.perf_counter()
  client.execute()  # raises CellExecutionError naming the failing cell
  print(f'{name}: {time.perf_counter() - t0:.1f}s')
  outputs = [o for c in nb.cells if c.cell_type == 'code' for o in c.get('outputs', [])]
  assert sum('image/png' in o.get('data', {}) for o in outputs) >= min_images
  text = ''.join(o.get('text', '') for o in outputs)
  assert 'Device' in text or 'Cpu' in text  # jax.devices() printed


def test_notebooks_open_with_the_install_cell():
  for name in sorted(os.listdir(NOTEBOOKS)):
    if name.endswith('.ipynb'):
      nb = nbformat.read(os.path.join(NOTEBOOKS, name), as_version=4)
      first = next(c for c in nb.cells if c.cell_type == 'code').source
      assert "REPO = 'https://github.com/" in first and "find_spec('cgml_jax') is None" in first
