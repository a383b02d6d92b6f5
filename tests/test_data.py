"""Tests of cgml_jax.data: sources and splits, masks, transforms, grain pipelines."""

import json

import numpy as np
import pytest
from PIL import Image

from cgml_jax import data
from cgml_jax.data import masks, sources, transforms

# ---------------------------------------------------------------------------------------
# Data folder and sources.


def test_resolve_data_dir_order(tmp_path, monkeypatch):
  monkeypatch.setenv(sources.ENV_VAR, str(tmp_path))
  assert data.resolve_data_dir() == tmp_path.resolve()
  other = tmp_path / 'other'
  other.mkdir()
  assert data.resolve_data_dir(other) == other.resolve()  # the argument wins


def test_missing_data_dir_is_one_clear_error(tmp_path, monkeypatch):
  missing = tmp_path / 'nowhere'
  monkeypatch.setenv(sources.ENV_VAR, str(missing))
  with pytest.raises(data.DataNotFoundError) as e:
    data.load_source('cifar10', 'train')
  msg = str(e.value)
  assert str(missing) in msg and 'CGML_DATA_DIR' in msg and 'data_dir' in msg


def test_missing_file_names_path(tmp_path, monkeypatch):
  monkeypatch.setenv(sources.ENV_VAR, str(tmp_path))  # exists but is empty
  with pytest.raises(data.DataNotFoundError, match='celeba64_train.npz'):
    data.load_source('celeba', 'test')
  with pytest.raises(data.DataNotFoundError, match='x.npz'):
    data.npz_source(tmp_path / 'x.npz')


@pytest.mark.parametrize('name,sizes', [
    ('mnist', {'train': 55000, 'validation': 5000, 'test': 10000}),
    ('cifar10', {'train': 8000, 'validation': 1000, 'test': 1000}),
    ('celeba', {'train': 3000, 'validation': 500, 'test': 500}),
    ('facades', {'train': 360, 'validation': 40, 'test': 106}),
])
def test_carved_splits_sizes_and_disjoint(name, sizes):
  rows = {}
  for split, n in sizes.items():
    path, idx = data.split_indices(name, split)
    assert len(idx) == n, (name, split)
    rows.setdefault(path, []).append(idx)
  for idxs in rows.values():  # within one file, splits never overlap
    allrows = np.concatenate(idxs)
    assert len(np.unique(allrows)) == len(allrows)


def test_cifar_splits_are_class_balanced_and_documented():
  src = data.load_source('cifar10', 'test')
  labels = src.arrays['label'][src.indices]
  np.testing.assert_array_equal(np.bincount(labels), [100] * 10)
  _, idx = data.split_indices('cifar10', 'test')
  # The file is sorted by class, 1000 per class: test = rows 900:1000 of each class,
  # interleaved class by class, so that every prefix is balanced.
  np.testing.assert_array_equal(np.sort(idx), np.concatenate(
      [np.arange(c * 1000 + 900, c * 1000 + 1000) for c in range(10)]))
  np.testing.assert_array_equal(idx[:10], np.arange(10) * 1000 + 900)
  src = data.load_source('cifar10', 'validation[:64]')
  counts = np.bincount(src.arrays['label'][src.indices], minlength=10)
  assert counts.min() >= 6 and counts.max() <= 7, counts


def test_local_source_examples_and_split_slice():
  src = data.load_source('facades', 'test[5:9]')
  assert len(src) == 4
  ex = src[0]
  assert set(ex) == {'input', 'target'}
  assert ex['input'].shape == (128, 128, 3) and ex['input'].dtype == np.uint8
  full = data.load_source('facades', 'test')
  np.testing.assert_array_equal(full[5]['target'], ex['target'])
  with pytest.raises(ValueError, match='splits'):
    data.load_source('facades', 'dev')


def test_npz_source_renames(tmp_path):
  path = tmp_path / 'toy.npz'
  np.savez(path, images=np.arange(24, dtype=np.uint8).reshape(3, 2, 2, 2), y=np.arange(3))
  src = data.npz_source(path, {'images': 'image'}, indices=[2, 0])
  assert len(src) == 2 and set(src[0]) == {'image'}
  np.testing.assert_array_equal(src[0]['image'], np.arange(16, 24).reshape(2, 2, 2))
  with pytest.raises(KeyError, match='labels'):
    data.npz_source(path, ['labels'])


def _write(path, arr):
  Image.fromarray(arr).save(path)


def test_image_folders_flat_and_paired(tmp_path):
  rng = np.random.default_rng(0)
  left = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
  right = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
  _write(tmp_path / 'b.png', np.concatenate([left, right], axis=1))
  _write(tmp_path / 'a.png', np.concatenate([right, left], axis=1))
  flat = data.ImageFolderSource(tmp_path)
  assert len(flat) == 2 and flat[0]['image'].shape == (8, 16, 3)
  assert str(flat[0]['filename']) == 'a.png'  # sorted by name
  pair = data.PairedImageFolderSource(tmp_path, direction='AtoB')
  np.testing.assert_array_equal(pair[1]['input'], left)
  np.testing.assert_array_equal(pair[1]['target'], right)
  swapped = data.PairedImageFolderSource(tmp_path, direction='BtoA')
  np.testing.assert_array_equal(swapped[1]['input'], right)
  # By name, with the folder relative to the data folder.
  by_name = data.load_source(f'pix2pix:{tmp_path.name}', data_dir=tmp_path.parent)
  np.testing.assert_array_equal(by_name[1]['target'], right)
  assert len(data.load_source(f'folder:{tmp_path}')) == 2
  resized = data.ImageFolderSource(tmp_path, size=(4, 6), grayscale=True)
  assert resized[0]['image'].shape == (4, 6, 1)
  with pytest.raises(data.DataNotFoundError, match='nothere'):
    data.ImageFolderSource(tmp_path / 'nothere')


def test_tfds_missing_dataset_is_one_clear_error(tmp_path):
  with pytest.raises(data.DataNotFoundError) as e:
    data.TfdsSource('mnist', 'train', data_dir=tmp_path)
  msg = str(e.value)
  assert "'mnist'" in msg and 'tfds build mnist' in msg and 'download is disabled' in msg


def test_embedded_default_needs_no_files(tmp_path, monkeypatch):
  monkeypatch.setenv(sources.ENV_VAR, str(tmp_path / 'absent'))
  a = data.load_source('embedded', 'train[:20]', size=32, seed=3)
  b = data.EmbeddedImageSource('train', num_examples=20, size=32, seed=3)
  assert len(a) == 20
  for i in (0, 7, 19):
    assert a[i]['image'].shape == (32, 32, 3) and a[i]['image'].dtype == np.uint8
    np.testing.assert_array_equal(a[i]['image'], b[i]['image'])  # deterministic
  other_seed = data.EmbeddedImageSource('train', num_examples=20, size=32, seed=4)
  assert not np.array_equal(a[0]['image'], other_seed[0]['image'])
  test = data.EmbeddedImageSource('test', num_examples=5, size=32, seed=3)
  assert set(test.names).isdisjoint(a.names)  # evaluation photos are held out
  assert a[0]['image'].std() > 1  # real image content, not blank


# ---------------------------------------------------------------------------------------
# Masks.


@pytest.mark.parametrize('fraction', masks.TABLE3_FRACTIONS)
def test_area_fraction_mask(fraction):
  rng = np.random.default_rng(0)
  m = masks.area_fraction_mask(rng, 64, 64, fraction)
  assert m.shape == (64, 64, 1) and m.dtype == np.float32
  assert set(np.unique(m)) == {0.0, 1.0}
  side = round(np.sqrt(fraction * 64 * 64))
  assert m.sum() == side * side
  assert abs(m.mean() - fraction) < 2 / 64  # up to rounding of the side


def test_center_and_random_square_masks():
  m = masks.center_mask(64, 64, 0.25)
  rows, cols = np.nonzero(m[..., 0])
  assert (rows.min(), rows.max(), cols.min(), cols.max()) == (16, 47, 16, 47)
  a = masks.random_square_mask(np.random.default_rng(1), 32, 48, 5, 9)
  b = masks.random_square_mask(np.random.default_rng(1), 32, 48, 5, 9)
  np.testing.assert_array_equal(a, b)
  side = int(np.sqrt(a.sum()))
  assert 5 <= side <= 9 and side * side == a.sum()
  with pytest.raises(ValueError, match='max_size'):
    masks.random_square_mask(np.random.default_rng(0), 8, 8, 4, 20)


def test_irregular_mask():
  rng = np.random.default_rng(0)
  m = masks.irregular_mask(rng, 64, 64, target_fraction=0.2)
  assert m.shape == (64, 64, 1) and set(np.unique(m)) <= {0.0, 1.0}
  assert 0.2 <= m.mean() < 0.9
  m1 = masks.irregular_mask(np.random.default_rng(5), 64, 64)
  m2 = masks.irregular_mask(np.random.default_rng(5), 64, 64)
  m3 = masks.irregular_mask(np.random.default_rng(6), 64, 64)
  np.testing.assert_array_equal(m1, m2)
  assert not np.array_equal(m1, m3) and m1.sum() > 0


# ---------------------------------------------------------------------------------------
# Transforms.


def test_completion_transform():
  img = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
  fn = transforms.compose(transforms.to_float(), transforms.completion(
      transforms.fraction_masks(0.25)))
  out = fn({'image': img}, np.random.default_rng(0))
  y = img.astype(np.float32) / 127.5 - 1
  np.testing.assert_allclose(out['y'], y, atol=1e-6)
  assert out['x'].shape == (16, 16, 4) and out['mask'].shape == (16, 16, 1)
  hole = out['mask'][..., 0] == 1
  assert hole.sum() == 64
  np.testing.assert_array_equal(out['x'][..., :3][hole], 0.0)
  np.testing.assert_allclose(out['x'][..., :3][~hole], y[~hole], atol=1e-6)
  np.testing.assert_array_equal(out['x'][..., 3], out['mask'][..., 0])


# ---------------------------------------------------------------------------------------
# grain pipelines.


def _toy(n=50):
  return data.ArraySource({'v': np.arange(n, dtype=np.float32)})


def _mask_transform(example, rng):
  return {'x': example['v'], 'y': example['v'], 'noise': rng.integers(0, 2**31, 4)}


def _collect(ds, num):
  it = iter(ds)
  return [next(it) for _ in range(num)]


def test_pipeline_batches_epochs_and_shuffle():
  ds = data.make_pipeline(_toy(50), batch_size=8, seed=0, transform=_mask_transform)
  steps = data.steps_per_epoch(50, 8)
  assert steps == 6
  batches = _collect(ds, 2 * steps)
  for b in batches:
    assert b['index'].dtype == np.int32 and b['index'].shape == (8,)
    assert b['x'].shape == (8,) and b['noise'].shape == (8, 4)
    np.testing.assert_array_equal(b['x'], b['index'])  # 'index' is the source row
  e0 = np.concatenate([b['index'] for b in batches[:steps]])
  e1 = np.concatenate([b['index'] for b in batches[steps:]])
  assert len(np.unique(e0)) == 48 and len(np.unique(e1)) == 48  # no repeats in an epoch
  assert not np.array_equal(e0, e1)  # reshuffled per epoch
  again = _collect(data.make_pipeline(_toy(50), batch_size=8, seed=0,
                                      transform=_mask_transform), 2 * steps)
  for a, b in zip(batches, again):  # reproducible from the seed
    np.testing.assert_array_equal(a['index'], b['index'])
    np.testing.assert_array_equal(a['noise'], b['noise'])
  other = _collect(data.make_pipeline(_toy(50), batch_size=8, seed=1), steps)
  assert not np.array_equal(e0, np.concatenate([b['index'] for b in other]))


def _noise_by_id(batches):
  out = {}
  for b in batches:
    for i, n in zip(b['index'], b['noise']):
      out[int(i)] = n
  return out


def test_transforms_fresh_per_epoch_and_independent_of_sharding():
  steps = data.steps_per_epoch(40, 4)
  ds = data.make_pipeline(_toy(40), batch_size=4, seed=7, transform=_mask_transform)
  batches = _collect(ds, 2 * steps)
  ep0, ep1 = _noise_by_id(batches[:steps]), _noise_by_id(batches[steps:])
  assert set(ep0) == set(ep1) == set(range(40))
  assert all(not np.array_equal(ep0[i], ep1[i]) for i in range(40))  # fresh each epoch
  # Process 1 of 2 sees half the ids, each with the same corruption as on one process.
  shard = data.make_pipeline(_toy(40), batch_size=4, seed=7, transform=_mask_transform,
                             process_index=1, process_count=2)
  sh0 = _noise_by_id(_collect(shard, data.steps_per_epoch(40, 4, process_count=2)))
  assert len(sh0) == 20
  for i, n in sh0.items():
    np.testing.assert_array_equal(n, ep0[i])


def test_multi_process_shards_are_disjoint_and_equal_length():
  n, count = 23, 3
  seen = []
  for p in range(count):
    ds = data.make_pipeline(_toy(n), batch_size=7, seed=0, num_epochs=1,
                            process_index=p, process_count=count)
    assert len(ds) == 1  # floor(23 / 3) = 7 rows per process, one batch
    seen.append(np.concatenate([b['index'] for b in ds]))
  allseen = np.concatenate(seen)
  assert len(allseen) == 21 and len(np.unique(allseen)) == 21


def test_eval_pipeline_keeps_order_and_remainder():
  ds = data.make_pipeline(_toy(10), batch_size=4, shuffle=False, num_epochs=1,
                          drop_remainder=False)
  idx = [b['index'] for b in ds]
  assert [len(i) for i in idx] == [4, 4, 2]
  np.testing.assert_array_equal(np.concatenate(idx), np.arange(10))


def test_iterator_checkpoint_roundtrip():
  ds = data.make_pipeline(_toy(30), batch_size=4, seed=2, transform=_mask_transform)
  it = data.make_iterator(ds, num_threads=2)
  for _ in range(9):  # across an epoch boundary (7 steps per epoch)
    next(it)
  state = data.iterator_state(it)
  assert json.loads(state) == it.get_state()
  expected = [next(it) for _ in range(3)]
  fresh = data.restore_iterator(data.make_iterator(ds), state)
  for a in expected:
    b = next(fresh)
    np.testing.assert_array_equal(a['index'], b['index'])
    np.testing.assert_array_equal(a['noise'], b['noise'])


def test_iterator_checkpoint_with_orbax(tmp_path):
  ocp = pytest.importorskip('orbax.checkpoint')
  ds = data.make_pipeline(_toy(30), batch_size=4, seed=2)
  it = iter(ds)
  for _ in range(5):
    next(it)
  with ocp.CheckpointManager(tmp_path / 'ckpt') as mngr:
    mngr.save(5, args=ocp.args.Composite(data=data.checkpoint_args(it)))
    mngr.wait_until_finished()
    want = next(it)['index']
    fresh = iter(ds)
    mngr.restore(5, args=ocp.args.Composite(data=data.checkpoint_args(fresh, restore=True)))
  np.testing.assert_array_equal(next(fresh)['index'], want)


def test_pipeline_on_real_data_completion():
  src = data.load_source('celeba', 'validation[:64]')
  fn = transforms.compose(transforms.to_float(),
                          transforms.completion(transforms.square_masks()))
  b = next(iter(data.make_pipeline(src, batch_size=16, seed=0, transform=fn)))
  assert b['x'].shape == (16, 64, 64, 4) and b['y'].shape == (16, 64, 64, 3)
  assert b['x'].dtype == np.float32 and -1 <= b['y'].min() and b['y'].max() <= 1
  frac = b['mask'].mean(axis=(1, 2, 3))
  assert np.all(frac >= (16 / 64) ** 2 - 1e-6) and np.all(frac <= (32 / 64) ** 2 + 1e-6)


def test_bad_arguments_name_values():
  with pytest.raises(ValueError, match='batch_size 64'):
    data.make_pipeline(_toy(10), batch_size=64)
  with pytest.raises(ValueError, match='process_index'):
    data.make_pipeline(_toy(10), batch_size=2, process_index=2, process_count=2)
