r"""Random-access data sources: local npz arrays, image folders, TFDS, and an embedded default.

Every source has `__len__` and `__getitem__(i) -> dict of numpy arrays` (grain's
`RandomAccessDataSource` protocol), so `grain.MapDataset.source(src)` accepts it. Images are
uint8 HWC, 0..255. Keys are singular ('image', 'label', 'input', 'target'), as in TFDS.

Where data lives (`resolve_data_dir`), first match wins:

  1. the `data_dir` argument (config key `data_dir`);
  2. the environment variable `CGML_DATA_DIR`;
  3. `<repo root>/../shared/data` (a checkout next to the shared data folder).

Named local datasets (`load_source(name, split)`) and the splits carved from train files
that have no test split. Index ranges refer to rows of the npz arrays, stop exclusive:

  mnist    train = mnist_train[0:55000]   validation = mnist_train[55000:60000]
           test  = mnist_test (official t10k); train_full = all 60000
  cifar10  (cifar10_train10k.npz: 1000 images per class, sorted by class then file name)
           within each class c, in array order: train = its first 800 rows,
           validation = rows 800:900, test = rows 900:1000 (8000 / 1000 / 1000, balanced)
  celeba   (celeba64_train.npz, files 000001-004000) train = [0:3000] (000001-003000),
           validation = [3000:3500] (003001-003500), test = [3500:4000] (003501-004000)
  facades  train = facades128_train[0:360], validation = facades128_train[360:400],
           test = facades128_test (official 106); train_full = all 400
  embedded random crops of scikit-image's photos (no files needed), see EmbeddedImageSource

A split name may carry a tfds-style row range applied after the carve: 'train[:512]',
'test[100:200]'.

Other sources by name: 'folder:PATH' (flat image folder), 'pix2pix:PATH' (A|B pairs side by
side; a relative PATH is taken inside the data folder), 'tfds:NAME' (a TFDS dataset already
prepared in array_record format under `tfds_data_dir`; download is never attempted).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import re
import zipfile
from typing import Any, Mapping, Sequence

import numpy as np

from cgml_jax.data import images

ENV_VAR = 'CGML_DATA_DIR'
CONFIG_KEY = 'data_dir'

Example = dict[str, np.ndarray]


class DataNotFoundError(FileNotFoundError):
  """A dataset file, folder or prepared TFDS dataset is missing."""


def _repo_root() -> pathlib.Path:
  return pathlib.Path(__file__).resolve().parents[2]


def _how_to_provide() -> str:
  return (f'Provide it by setting the environment variable {ENV_VAR}=/path/to/data, or the '
          f'config key `{CONFIG_KEY}` (the `data_dir` argument); by default the library '
          f'looks in {_repo_root().parent / "shared" / "data"}.')


def resolve_data_dir(data_dir: str | os.PathLike | None = None,
                     must_exist: bool = True) -> pathlib.Path:
  """The folder holding the offline datasets (see the module docstring for the order).

  Args:
    data_dir: explicit folder (the config key `data_dir`); None to fall back to
      $CGML_DATA_DIR, then `<repo root>/../shared/data`.
    must_exist: raise `DataNotFoundError` if the chosen folder does not exist.

  Returns:
    The absolute path of the folder.
  """
  if data_dir:
    path, origin = pathlib.Path(data_dir), f'data_dir={str(data_dir)!r}'
  elif os.environ.get(ENV_VAR):
    path, origin = pathlib.Path(os.environ[ENV_VAR]), f'${ENV_VAR}={os.environ[ENV_VAR]!r}'
  else:
    path, origin = _repo_root().parent / 'shared' / 'data', 'the default location'
  path = path.expanduser().resolve()
  if must_exist and not path.is_dir():
    raise DataNotFoundError(f'Data folder {path} (from {origin}) does not exist. '
                            + _how_to_provide())
  return path


def _require(path: pathlib.Path, what: str) -> pathlib.Path:
  if not path.exists():
    raise DataNotFoundError(f'{what} not found at {path}. ' + _how_to_provide())
  return path


# ---------------------------------------------------------------------------------------
# Array sources.


class ArraySource:
  """Rows of equally long in-memory arrays as examples.

  Args:
    arrays: name -> (N, ...) array; all must have the same N.
    indices: optional (M,) row indices, the examples of this source in order (a split).
  """

  def __init__(self, arrays: Mapping[str, np.ndarray], indices: Sequence[int] | None = None):
    if not arrays:
      raise ValueError('ArraySource needs at least one array')
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) != 1:
      raise ValueError(f'arrays must have the same length, got {lengths}')
    self.arrays = dict(arrays)
    n = next(iter(lengths.values()))
    self.indices = np.arange(n) if indices is None else np.asarray(indices, np.int64)
    if self.indices.size and (self.indices.min() < 0 or self.indices.max() >= n):
      raise IndexError(f'indices span [{self.indices.min()}, {self.indices.max()}] but the '
                       f'arrays have {n} rows')

  def __len__(self) -> int:
    return len(self.indices)

  def __getitem__(self, i: int) -> Example:
    row = self.indices[i]
    return {k: v[row] for k, v in self.arrays.items()}

  def subset(self, indices: Sequence[int]) -> 'ArraySource':
    """A source over `self[indices]` (positions within this source)."""
    return ArraySource(self.arrays, self.indices[np.asarray(indices, np.int64)])

  def __repr__(self) -> str:
    shapes = {k: v.shape[1:] for k, v in self.arrays.items()}
    return f'ArraySource(n={len(self)}, per-example shapes={shapes})'


def npz_source(path: str | os.PathLike, keys: Mapping[str, str] | Sequence[str] | None = None,
               indices: Sequence[int] | None = None) -> ArraySource:
  """Named arrays of a `.npz` file as a source (loaded into memory once).

  Args:
    path: the .npz file.
    keys: which arrays to read: a list of names, or {npz name: example key} to rename
      (e.g. {'images': 'image'}); None reads all arrays under their own names.
    indices: optional row indices (a split).

  Returns:
    An `ArraySource` whose examples are {key: row}.
  """
  path = _require(pathlib.Path(path), 'npz file')
  with np.load(path, allow_pickle=False) as f:
    if keys is None:
      keys = {k: k for k in f.files}
    elif not isinstance(keys, Mapping):
      keys = {k: k for k in keys}
    missing = [k for k in keys if k not in f.files]
    if missing:
      raise KeyError(f'{path} has no arrays {missing}; it has {f.files}')
    arrays = {out: f[name] for name, out in keys.items()}
  return ArraySource(arrays, indices)


# ---------------------------------------------------------------------------------------
# Image folders.

IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.webp', '.tif', '.tiff')


def _list_images(folder: pathlib.Path) -> list[pathlib.Path]:
  _require(folder, 'image folder')
  if not folder.is_dir():
    raise DataNotFoundError(f'{folder} is not a folder of images. ' + _how_to_provide())
  files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
  if not files:
    raise DataNotFoundError(f'{folder} contains no images with extensions '
                            f'{IMAGE_EXTENSIONS}. ' + _how_to_provide())
  return files


def _read_image(path: pathlib.Path, size: tuple[int, int] | None, grayscale: bool
                ) -> np.ndarray:
  from PIL import Image  # pillow ships with matplotlib and scikit-image.
  im = Image.fromarray(images.read_rgb(path))  # any mode (16-bit, alpha, CMYK) -> 8-bit sRGB
  if grayscale:
    im = im.convert('L')
  if size is not None and im.size != (size[1], size[0]):
    im = im.resize((size[1], size[0]), Image.BICUBIC)
  arr = np.asarray(im, np.uint8)
  return arr[..., None] if grayscale else arr


class ImageFolderSource:
  """A flat folder of images, sorted by file name, decoded on access.

  Examples are {'image': (H, W, C) uint8, 'filename': str array}.

  Args:
    folder: the folder (not searched recursively).
    size: optional (H, W) to resize to (PIL bicubic); None keeps each file's size.
    grayscale: decode to one channel instead of RGB.
  """

  def __init__(self, folder: str | os.PathLike, size: tuple[int, int] | None = None,
               grayscale: bool = False):
    self.files = _list_images(pathlib.Path(folder))
    self.size, self.grayscale = size, grayscale

  def __len__(self) -> int:
    return len(self.files)

  def __getitem__(self, i: int) -> Example:
    path = self.files[i]
    return {'image': _read_image(path, self.size, self.grayscale),
            'filename': np.asarray(path.name)}


class PairedImageFolderSource:
  """pix2pix layout: each file holds two images side by side, A on the left, B on the right.

  As released by pix2pix (facades, edges2shoes, maps, ...): for facades A is the photo and
  B the label map; for edges2shoes A is the edge map and B the photo. `direction` says
  which half is the input.

  Examples are {'input': (H, W, 3), 'target': (H, W, 3)} uint8 and 'filename'.

  Args:
    folder: the folder, e.g. `facades/train`.
    direction: 'AtoB' (input = left half) or 'BtoA' (input = right half).
    size: optional (H, W) each half is resized to (PIL bicubic).
  """

  def __init__(self, folder: str | os.PathLike, direction: str = 'AtoB',
               size: tuple[int, int] | None = None):
    if direction not in ('AtoB', 'BtoA'):
      raise ValueError(f"direction must be 'AtoB' or 'BtoA', got {direction!r}")
    self.files = _list_images(pathlib.Path(folder))
    self.direction, self.size = direction, size

  def __len__(self) -> int:
    return len(self.files)

  def __getitem__(self, i: int) -> Example:
    path = self.files[i]
    both = _read_image(path, None, grayscale=False)
    w = both.shape[1]
    if w % 2:
      raise ValueError(f'{path}: a pix2pix pair needs an even width, got shape {both.shape}')
    a, b = both[:, : w // 2], both[:, w // 2:]
    if self.size is not None:
      from PIL import Image
      a, b = (np.asarray(Image.fromarray(h).resize((self.size[1], self.size[0]),
                                                  Image.BICUBIC)) for h in (a, b))
    x, y = (a, b) if self.direction == 'AtoB' else (b, a)
    return {'input': x, 'target': y, 'filename': np.asarray(path.name)}


# ---------------------------------------------------------------------------------------
# TFDS.


class TfdsSource:
  """A prepared TFDS dataset through `tfds.data_source` (array_record; no TensorFlow).

  Download is off: the dataset must already be prepared in `data_dir` (run
  `tfds build NAME --file_format=array_record --data_dir=DIR` once, online).

  Args:
    name: TFDS name, e.g. 'mnist', 'cifar10', 'stl10', 'celeb_a'.
    split: TFDS split string, e.g. 'train', 'test[:10%]'.
    data_dir: TFDS data folder; None uses TFDS's default (~/tensorflow_datasets or
      $TFDS_DATA_DIR).
    keys: optional {tfds feature: example key} to keep and rename; None keeps all.
  """

  def __init__(self, name: str, split: str, data_dir: str | os.PathLike | None = None,
               keys: Mapping[str, str] | None = None):
    import tensorflow_datasets as tfds
    try:
      builder = tfds.builder(name, data_dir=data_dir)
    except Exception as e:  # unknown name, broken registration
      raise DataNotFoundError(f'TFDS dataset {name!r} is unknown to tensorflow-datasets: '
                              f'{e}') from e
    prepared = pathlib.Path(str(builder.data_dir))
    if not (prepared / 'dataset_info.json').exists():
      raise DataNotFoundError(
          f'TFDS dataset {name!r} (split {split!r}) is not prepared at {prepared} and '
          f'download is disabled. Prepare it once online with `tfds build {name} '
          f'--file_format=array_record --data_dir=DIR` and pass data_dir=DIR (config key '
          f'`tfds_data_dir`), or use the offline npz files under ${ENV_VAR} '
          f'(config key `{CONFIG_KEY}`).')
    self.source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    self.keys = keys

  def __len__(self) -> int:
    return len(self.source)

  def __getitem__(self, i: int) -> Example:
    ex = self.source[i]
    if self.keys is None:
      return {k: np.asarray(v) for k, v in ex.items()}
    return {out: np.asarray(ex[k]) for k, out in self.keys.items()}


# ---------------------------------------------------------------------------------------
# The embedded default: crops of scikit-image's photographs.

# Colour photographs shipped inside the scikit-image wheel (skimage/data), sizes HxW.
EMBEDDED_TRAIN_IMAGES = ('astronaut', 'coffee', 'hubble_deep_field', 'immunohistochemistry',
                         'motorcycle_left', 'retina')
# Held out: validation and test crops come only from these two photos.
EMBEDDED_EVAL_IMAGES = ('chelsea', 'rocket')
_SPLIT_IDS = {'train': 0, 'validation': 1, 'test': 2}


def _load_photo(name: str) -> np.ndarray:
  import skimage.data
  if name == 'motorcycle_left':  # the left view of skimage.data.stereo_motorcycle()
    return skimage.data.stereo_motorcycle()[0]
  if not hasattr(skimage.data, name):
    raise ValueError(f'skimage.data has no image {name!r}')
  return getattr(skimage.data, name)()


class EmbeddedImageSource:
  r"""Random square crops of scikit-image's colour photographs; needs no files or network.

  Crop i of a split is a pure function of (seed, split, i): an image chosen uniformly from
  the split's photos, a uniform random position, and a horizontal flip with probability
  1/2, drawn from `np.random.default_rng([seed, split_id, i])`. Train crops come from
  EMBEDDED_TRAIN_IMAGES; validation and test crops from the held-out
  EMBEDDED_EVAL_IMAGES (with different streams, so they differ from each other).

  Examples are {'image': (size, size, 3) uint8}.

  Args:
    split: 'train', 'validation' or 'test'.
    num_examples: how many crops the split has.
    size: crop side in pixels (<= 300, the smallest photo side).
    seed: the crop seed.
    images: override the photo names (functions of `skimage.data`).
  """

  def __init__(self, split: str = 'train', num_examples: int = 4096, size: int = 64,
               seed: int = 0, images: Sequence[str] | None = None):
    if split not in _SPLIT_IDS:
      raise ValueError(f'split must be one of {sorted(_SPLIT_IDS)}, got {split!r}')
    names = images or (EMBEDDED_TRAIN_IMAGES if split == 'train' else EMBEDDED_EVAL_IMAGES)
    self.photos = []
    for n in names:
      img = np.asarray(_load_photo(n))
      if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=-1)
      img = img[..., :3].astype(np.uint8)
      if min(img.shape[:2]) < size:
        raise ValueError(f'skimage.data.{n} has shape {img.shape}, smaller than the crop '
                         f'size {size}')
      self.photos.append(img)
    self.names, self.split, self.size, self.seed = tuple(names), split, size, seed
    self.num_examples = num_examples

  def __len__(self) -> int:
    return self.num_examples

  def __getitem__(self, i: int) -> Example:
    if not 0 <= i < self.num_examples:
      raise IndexError(f'crop {i} out of range for {self.num_examples} examples')
    rng = np.random.default_rng([self.seed, _SPLIT_IDS[self.split], int(i)])
    img = self.photos[rng.integers(len(self.photos))]
    top = rng.integers(img.shape[0] - self.size + 1)
    left = rng.integers(img.shape[1] - self.size + 1)
    crop = img[top:top + self.size, left:left + self.size]
    if rng.random() < 0.5:
      crop = crop[:, ::-1]
    return {'image': np.ascontiguousarray(crop)}


# ---------------------------------------------------------------------------------------
# Named local datasets and their splits.


@dataclasses.dataclass(frozen=True)
class _Local:
  """A local npz dataset: its files, array names and how each split picks rows.

  A split is (file id, rule, start, stop): rule 'rows' takes rows start:stop of the file;
  'per_class' takes rows start:stop of each class (labels in order, rows in array order);
  start = stop = None means all rows.
  """
  files: dict[str, str]        # file id -> path relative to the data dir
  keys: dict[str, str]         # npz array -> example key
  splits: dict[str, tuple[str, str, int | None, int | None]]


LOCAL_DATASETS: dict[str, _Local] = {
    'mnist': _Local(
        files={'train': 'mnist/mnist_train.npz', 'test': 'mnist/mnist_test.npz'},
        keys={'images': 'image', 'labels': 'label'},
        splits={'train': ('train', 'rows', 0, 55000),
                'validation': ('train', 'rows', 55000, 60000),
                'test': ('test', 'rows', None, None),
                'train_full': ('train', 'rows', None, None)}),
    'cifar10': _Local(
        files={'train': 'cifar10/cifar10_train10k.npz'},
        keys={'images': 'image', 'labels': 'label'},
        splits={'train': ('train', 'per_class', 0, 800),
                'validation': ('train', 'per_class', 800, 900),
                'test': ('train', 'per_class', 900, 1000),
                'train_full': ('train', 'rows', None, None)}),
    'celeba': _Local(
        files={'train': 'celeba/celeba64_train.npz'},
        keys={'images': 'image'},
        splits={'train': ('train', 'rows', 0, 3000),
                'validation': ('train', 'rows', 3000, 3500),
                'test': ('train', 'rows', 3500, 4000),
                'train_full': ('train', 'rows', None, None)}),
    'facades': _Local(
        files={'train': 'facades/facades128_train.npz',
               'test': 'facades/facades128_test.npz'},
        keys={'inputs': 'input', 'targets': 'target'},
        splits={'train': ('train', 'rows', 0, 360),
                'validation': ('train', 'rows', 360, 400),
                'test': ('test', 'rows', None, None),
                'train_full': ('train', 'rows', None, None)}),
}

_SPLIT_RE = re.compile(r'^(\w+)(?:\[(-?\d*):(-?\d*)\])?$')


def parse_split(split: str) -> tuple[str, slice]:
  """'train[10:20]' -> ('train', slice(10, 20)); 'test' -> ('test', slice(None))."""
  m = _SPLIT_RE.match(split.strip())
  if not m:
    raise ValueError(f"split must look like 'train' or 'train[start:stop]', got {split!r}")
  name, a, b = m.groups()
  return name, slice(int(a) if a else None, int(b) if b else None)


def split_indices(name: str, split: str, data_dir: str | os.PathLike | None = None
                  ) -> tuple[pathlib.Path, np.ndarray]:
  """The npz file and its row indices that make up `split` of the local dataset `name`.

  Args:
    name: a key of LOCAL_DATASETS.
    split: 'train', 'validation', 'test', 'train_full', optionally with '[start:stop]'.
    data_dir: see `resolve_data_dir`.

  Returns:
    (path of the npz file, (M,) int64 row indices).
  """
  if name not in LOCAL_DATASETS:
    raise ValueError(f'unknown local dataset {name!r}; known: {sorted(LOCAL_DATASETS)}')
  ds = LOCAL_DATASETS[name]
  base, sl = parse_split(split)
  if base not in ds.splits:
    raise ValueError(f'dataset {name!r} has splits {sorted(ds.splits)}, got {split!r}')
  file_id, rule, start, stop = ds.splits[base]
  rel = ds.files[file_id]
  path = _require(resolve_data_dir(data_dir) / rel, f'{name} file {rel}')
  if rule == 'per_class':
    with np.load(path) as f:
      labels = f['labels']
    # Rows [start, stop) of each class, interleaved class by class (the file is sorted
    # by class), so that any prefix of the split, e.g. 'validation[:64]', is balanced.
    per_class = [np.flatnonzero(labels == c)[start:stop] for c in np.unique(labels)]
    rank = np.concatenate([np.arange(len(r)) for r in per_class])
    rows = np.concatenate(per_class)[np.argsort(rank, kind='stable')]
  else:
    rows = np.arange(_npz_rows(path, next(iter(ds.keys))))[start:stop]
  return path, rows[sl]


def _npz_rows(path: pathlib.Path, key: str) -> int:
  """Leading dimension of one array of an npz, read from its header only."""
  with zipfile.ZipFile(path) as z, z.open(f'{key}.npy') as f:
    major, _ = np.lib.format.read_magic(f)
    read = (np.lib.format.read_array_header_1_0 if major == 1
            else np.lib.format.read_array_header_2_0)
    shape, _, _ = read(f)
  return shape[0]


def load_source(name: str | None = 'embedded', split: str = 'train',
                data_dir: str | os.PathLike | None = None, **kwargs) -> Any:
  """A source by name: a local dataset, an image folder, TFDS, or the embedded default.

  Args:
    name: one of
      'mnist', 'cifar10', 'celeba', 'facades'  npz files under the data folder;
      'embedded' (or None / '')                scikit-image crops, no files needed; kwargs
                                               go to EmbeddedImageSource;
      'folder:PATH'                            flat image folder (ImageFolderSource);
      'pix2pix:PATH'                           side-by-side pairs (PairedImageFolderSource);
                                               PATH may be relative to the data folder;
      'tfds:NAME'                              a prepared TFDS dataset (TfdsSource); pass
                                               its folder as tfds_data_dir=... (config key
                                               `tfds_data_dir`).
    split: see the module docstring; for TFDS any TFDS split string; ignored by folders.
    data_dir: folder of the local datasets (config key `data_dir`).
    **kwargs: passed to the source class.

  Returns:
    A random-access source (len, getitem -> dict of numpy arrays).
  """
  if not name or name == 'embedded':
    base, sl = parse_split(split)
    src = EmbeddedImageSource(split=base, **kwargs)
    if sl != slice(None):
      src.num_examples = len(range(src.num_examples)[sl])  # crops are i.i.d.: a prefix
    return src
  kind, _, arg = name.partition(':')
  if kind == 'tfds' and arg:
    return TfdsSource(arg, split, data_dir=kwargs.pop('tfds_data_dir', None), **kwargs)
  if kind in ('folder', 'pix2pix') and arg:
    path = pathlib.Path(arg).expanduser()
    if not path.is_absolute():
      path = resolve_data_dir(data_dir) / path
    cls = ImageFolderSource if kind == 'folder' else PairedImageFolderSource
    return cls(path, **kwargs)
  if name not in LOCAL_DATASETS:
    raise ValueError(f"unknown dataset {name!r}: use one of {sorted(LOCAL_DATASETS)}, "
                     f"'embedded', 'folder:PATH', 'pix2pix:PATH' or 'tfds:NAME'")
  path, rows = split_indices(name, split, data_dir)
  return npz_source(path, LOCAL_DATASETS[name].keys, rows)
