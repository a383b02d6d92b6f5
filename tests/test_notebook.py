"""notebooks/quickstart.ipynb runs top to bottom (nbclient, kernel python3) and shows images."""

import os

import nbformat
from nbclient import NotebookClient

NOTEBOOKS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                         'notebooks')


def test_quickstart_notebook_runs():
  nb = nbformat.read(os.path.join(NOTEBOOKS, 'quickstart.ipynb'), as_version=4)
  client = NotebookClient(nb, timeout=170, kernel_name='python3',
                          resources={'metadata': {'path': NOTEBOOKS}})
  client.execute()  # raises CellExecutionError naming the failing cell
  outputs = [o for c in nb.cells if c.cell_type == 'code' for o in c.get('outputs', [])]
  assert sum('image/png' in o.get('data', {}) for o in outputs) >= 2
