"""Point-cloud loaders: shared ModelNet10 npz, ModelNet `.off` folders, `.npz` / `.h5` files.

Every loader returns `(points, labels, class_names)`: points (num_shapes, N, 3) float32,
labels (num_shapes,) int32, class_names a list of str. Nothing is downloaded. Clouds from
meshes are centred on their mean and scaled so the farthest point is at distance 1, the
convention of the shared ModelNet10 files (their MANIFEST.md), which the spectral maps
assume (shapes inside the unit ball).
"""

from __future__ import annotations

import glob
import os
import pathlib
import zlib
from typing import Sequence

import numpy as np

from cgml_jax.data import sources

DATA_ENV = sources.ENV_VAR
SPLITS = ('train', 'test')


def data_dir(path: str | os.PathLike | None = None) -> pathlib.Path:
  """The data root: `path`, else $CGML_DATA_DIR, else <repo>/../shared/data
  (`cgml_jax.data.resolve_data_dir`)."""
  return sources.resolve_data_dir(path, must_exist=False)


def _require(path: pathlib.Path, what: str) -> pathlib.Path:
  if not path.exists():
    raise sources.DataNotFoundError(f'{what} not found: {path}')
  return path


def _check_split(split: str):
  if split not in SPLITS:
    raise ValueError(f'split must be one of {SPLITS}, got {split!r}')


def normalize_points(points: np.ndarray) -> np.ndarray:
  """Centres clouds on their mean and scales the farthest point to distance 1.

  Args:
    points: (..., N, 3).

  Returns:
    float32 array of the same shape.
  """
  points = np.asarray(points, np.float64)
  points = points - points.mean(-2, keepdims=True)
  scale = np.linalg.norm(points, axis=-1).max(-1)[..., None, None]
  return (points / np.where(scale > 0, scale, 1.0)).astype(np.float32)


def load_modelnet10(split: str = 'train', root: str | os.PathLike | None = None):
  """The shared ModelNet10 clouds (1024 points, official split, unit-ball normalised).

  Args:
    split: 'train' (3991 shapes) or 'test' (908).
    root: data root holding `modelnet/modelnet10_<split>.npz` (default `data_dir()`); a
      folder that holds the npz directly also works.

  Returns:
    points (S, 1024, 3) float32, labels (S,) int32, class_names (10 str).
  """
  _check_split(split)
  base = data_dir(root)
  name = f'modelnet10_{split}.npz'
  path = base / 'modelnet' / name
  if not path.exists() and (base / name).exists():
    path = base / name
  return load_npz(_require(path, 'ModelNet10 file'))


def load_npz(path: str | os.PathLike, points_key: str = 'points', labels_key: str = 'labels'):
  """A point-cloud `.npz` (no pickle): `points` (S, N, 3), `labels`, optional `class_names`.

  Returns:
    points (S, N, 3) float32, labels (S,) int32, class_names (list of str; the label
    numbers as strings when the file has none).
  """
  path = _require(pathlib.Path(path), 'npz file')
  with np.load(path, allow_pickle=False) as f:
    for key in (points_key, labels_key):
      if key not in f:
        raise KeyError(f'{path} has no array {key!r}; it has {sorted(f.files)}')
    points = np.asarray(f[points_key], np.float32)
    labels = np.asarray(f[labels_key]).astype(np.int32).reshape(-1)
    names = [str(c) for c in f['class_names']] if 'class_names' in f else None
  _check_points(points, path)
  if names is None:
    names = [str(i) for i in range(int(labels.max()) + 1 if labels.size else 0)]
  return points, labels, names


def load_h5(paths: str | os.PathLike | Sequence[str | os.PathLike], points_key: str = 'data',
            labels_key: str = 'label', class_names: Sequence[str] | None = None):
  """PointNet-style `.h5` point clouds (e.g. modelnet40_ply_hdf5_2048, ShapeNet part h5).

  Args:
    paths: one file, a list, or a glob pattern; parts are concatenated in sorted order.
    points_key, labels_key: dataset names (PointNet uses 'data' and 'label').
    class_names: names for the labels (e.g. from shape_names.txt); default '0', '1', ...

  Returns:
    points (S, N, 3) float32, labels (S,) int32, class_names.
  """
  try:
    import h5py  # pylint: disable=import-outside-toplevel
  except ImportError as e:
    raise ImportError('reading .h5 point clouds needs h5py: pip install h5py') from e
  if isinstance(paths, (str, os.PathLike)):
    pattern = str(paths)
    files = sorted(glob.glob(pattern)) if any(c in pattern for c in '*?[') else [pattern]
  else:
    files = [str(p) for p in paths]
  if not files:
    raise FileNotFoundError(f'h5 files not found: {paths}')
  pts, lab = [], []
  for fname in files:
    with h5py.File(_require(pathlib.Path(fname), 'h5 file'), 'r') as f:
      pts.append(np.asarray(f[points_key], np.float32)[..., :3])
      lab.append(np.asarray(f[labels_key]).astype(np.int32).reshape(-1))
  points, labels = np.concatenate(pts), np.concatenate(lab)
  _check_points(points, files[0])
  names = list(class_names) if class_names else [str(i) for i in range(int(labels.max()) + 1)]
  return points, labels, names


def _check_points(points: np.ndarray, path):
  if points.ndim != 3 or points.shape[-1] != 3:
    raise ValueError(f'{path}: expected points of shape (S, N, 3), got {points.shape}')


def read_off(path: str | os.PathLike):
  """Reads an OFF mesh; polygons are fan-triangulated.

  Accepts ModelNet's malformed header where the counts follow 'OFF' on the same line
  ('OFF490 518 0'), and '#' comments.

  Returns:
    vertices (V, 3) float64, faces (F, 3) int64.
  """
  path = _require(pathlib.Path(path), 'OFF file')
  with open(path, 'r', encoding='ascii', errors='replace') as f:
    tokens = [ln.split('#', 1)[0].strip() for ln in f]
  lines = [ln for ln in tokens if ln]
  if not lines or not lines[0].upper().startswith('OFF'):
    raise ValueError(f'{path}: not an OFF file (first line {lines[:1]})')
  head = lines[0][3:].split()
  body = lines[1:]
  if not head:
    head, body = body[0].split(), body[1:]
  n_v, n_f = int(head[0]), int(head[1])
  if len(body) < n_v + n_f:
    raise ValueError(f'{path}: header promises {n_v} vertices and {n_f} faces, file has '
                     f'{len(body)} lines')
  vertices = np.array([ln.split()[:3] for ln in body[:n_v]], np.float64).reshape(n_v, 3)
  face_lines = [ln.split() for ln in body[n_v:n_v + n_f]]
  if all(len(t) >= 4 and t[0] == '3' for t in face_lines):
    # All triangles (most ModelNet meshes): one vectorised conversion, no Python loop.
    faces = np.array([t[1:4] for t in face_lines], np.int64).reshape(-1, 3)
  else:
    tris = []
    for t in face_lines:
      idx = [int(v) for v in t]
      k, poly = idx[0], idx[1:idx[0] + 1]
      if k < 3 or len(poly) < k:
        raise ValueError(f'{path}: bad face line {" ".join(t)!r}')
      tris += [(poly[0], poly[j], poly[j + 1]) for j in range(1, k - 1)]
    faces = np.array(tris, np.int64).reshape(-1, 3)
  if faces.size and (faces.min() < 0 or faces.max() >= n_v):
    raise ValueError(f'{path}: face index out of range [0, {n_v})')
  return vertices, faces


def sample_mesh(vertices: np.ndarray, faces: np.ndarray, n_points: int,
                seed: int | Sequence[int] = 0) -> np.ndarray:
  """Uniform (area-weighted) i.i.d. samples of a triangle-mesh surface.

  A triangle is drawn with probability proportional to its area, then a point uniformly in
  it: with u, v ~ U(0, 1), x = (1 - sqrt(u)) a + sqrt(u)(1 - v) b + sqrt(u) v c.

  Args:
    vertices: (V, 3).
    faces: (F, 3) vertex indices.
    n_points: N.
    seed: seed (or seed sequence) of numpy's default_rng.

  Returns:
    (N, 3) float64 points.
  """
  tri = np.asarray(vertices, np.float64)[np.asarray(faces)]
  area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=-1)
  if tri.shape[0] == 0 or area.sum() <= 0:
    raise ValueError(f'mesh has no surface area ({tri.shape[0]} faces)')
  rng = np.random.default_rng(seed)
  pick = rng.choice(tri.shape[0], size=n_points, p=area / area.sum())
  u, v = rng.random((2, n_points, 1))
  su = np.sqrt(u)
  t = tri[pick]
  return (1 - su) * t[:, 0] + su * (1 - v) * t[:, 1] + su * v * t[:, 2]


def load_off_folder(root: str | os.PathLike, split: str = 'train', n_points: int = 1024,
                    seed: int = 0, classes: Sequence[str] | None = None, normalize: bool = True):
  """ModelNet-layout mesh folders, `<root>/<class>/{train,test}/<name>.off` (ModelNet10/40).

  Each mesh gives n_points area-weighted samples with a seed derived from `seed` and the
  file name, so a shape's cloud does not depend on which other files are present.

  Args:
    root: dataset root (e.g. .../ModelNet40).
    split: 'train' or 'test'.
    n_points: points per shape.
    seed: base seed.
    classes: class folders to read (default: every sub-folder of root, sorted).
    normalize: centre and scale into the unit ball (`normalize_points`).

  Returns:
    points (S, n_points, 3) float32, labels (S,) int32 indexing class_names, class_names.
  """
  _check_split(split)
  root = _require(pathlib.Path(root), 'ModelNet folder')
  if classes is None:
    names = sorted(p.name for p in root.iterdir() if p.is_dir())
  else:
    names = list(classes)
  pts, labels = [], []
  for label, cls in enumerate(names):
    folder = _require(root / cls / split, 'class split folder')
    for off in sorted(folder.glob('*.off')):
      v, f = read_off(off)
      pts.append(sample_mesh(v, f, n_points, seed=[seed, zlib.crc32(off.stem.encode())]))
      labels.append(label)
  if not pts:
    raise FileNotFoundError(f'no .off files under {root}/<class>/{split}/')
  points = np.stack(pts)
  points = normalize_points(points) if normalize else points.astype(np.float32)
  return points, np.asarray(labels, np.int32), names
