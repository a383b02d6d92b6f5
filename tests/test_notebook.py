"""The notebooks run top to bottom (nbclient, kernel python3) at smoke size and show images.

The kernel imports this checkout (PYTHONPATH), and CGML_NOTEBOOK_SMOKE=1 makes each
notebook pick its smoke budget, as it would on a CPU runtime with that variable set.
"""

import os
import shutil
import time

import nbformat
import pytest
from nbclient import NotebookClient

from experiments import repo_url

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
  url = repo_url.read(ROOT)
  for name in sorted(os.listdir(NOTEBOOKS)):
    if name.endswith('.ipynb'):
      nb = nbformat.read(os.path.join(NOTEBOOKS, name), as_version=4)
      first = next(c for c in nb.cells if c.cell_type == 'code').source
      assert f"REPO = '{url}'" in first and "find_spec('cgml_jax') is None" in first
      assert f'colab.research.google.com/github/{url[len("https://github.com/"):]}' \
          f'/blob/main/notebooks/{name}' in nb.cells[0].source


def test_repository_url_is_set_in_one_place(tmp_path):
  """setup.cfg's url is copied to the notebooks and the README; the command rewrites them."""
  assert repo_url.stale(ROOT) == {}
  root = tmp_path / 'checkout'
  (root / 'notebooks').mkdir(parents=True)
  for name in ['setup.cfg', 'README.md'] + [os.path.join('notebooks', n)
                                            for n in os.listdir(NOTEBOOKS)]:
    shutil.copy(os.path.join(ROOT, name), root / name)
  changed = repo_url.write('https://github.com/someone/cgml_fork', str(root))
  assert len(changed) == 2 + len(os.listdir(root / 'notebooks'))
  assert repo_url.read(str(root)) == 'https://github.com/someone/cgml_fork'
  assert repo_url.stale(str(root)) == {}
  readme = (root / 'README.md').read_text()
  assert 'colab.research.google.com/github/someone/cgml_fork/blob/main/notebooks' in readme
  (root / 'README.md').write_text(readme.replace('someone/cgml_fork', 'other/x'))
  assert set(repo_url.stale(str(root))) == {str(root / 'README.md')}
  with pytest.raises(ValueError, match='github.com/OWNER/NAME'):
    repo_url.write('https://gitlab.com/a/b', str(root))
