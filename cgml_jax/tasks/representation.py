"""Representation probe (paper Table 5): linear-probe accuracy of frozen encoders.

Each trained method's H maps a labelled image set (CIFAR-10, MNIST, ...), mapped onto the
task's input format by `probe_preprocess`, to bottleneck features; a multinomial logistic
regression (`cgml_jax.metrics.probe.linear_probe`) is fitted on probe-train and scored on
probe-test. An untrained H of the same architecture gives the floor.
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

from cgml_jax import data as data_lib
from cgml_jax.metrics import probe as probe_lib
from cgml_jax.tasks import image
from cgml_jax.tasks import methods as methods_lib


@functools.lru_cache(maxsize=None)
def probe_preprocess(size: int, in_channels: int):
  """uint8 images (B, h, w, 1 or 3) -> inputs (B, size, size, in_channels) in [-1, 1].

  A generic mapping of a labelled image set onto a task's input format: grey (ITU-R 601
  luma) for 1-2 channel inputs, RGB for 3-4 (grey sources repeated), bilinear resize to
  the task's size, and extra channels (the mask of mnist_corrupted, complete) all zero:
  "nothing is missing". One function object per (size, channels), so one compilation.
  """
  def fn(images):
    x = images.astype(jnp.float32) / 127.5 - 1.0
    if in_channels <= 2:
      if x.shape[-1] == 3:
        x = x @ jnp.asarray([0.299, 0.587, 0.114], jnp.float32)[:, None]
    elif x.shape[-1] == 1:
      x = jnp.repeat(x, 3, axis=-1)
    x = jax.image.resize(x, (x.shape[0], size, size, x.shape[-1]), 'linear')
    extra = in_channels - x.shape[-1]
    if extra > 0:
      x = jnp.concatenate([x, jnp.zeros(x.shape[:-1] + (extra,), x.dtype)], axis=-1)
    return x
  return fn


def probe_rows(config, dataset: str, split: str, per_class: int):
  """(uint8 images, labels, description): the first `per_class` rows of each class of split."""
  src = data_lib.load_source(dataset, split, data_dir=config.data.data_dir or None)
  arrays = getattr(src, 'arrays', None)
  if arrays is None or 'label' not in arrays:
    raise ValueError(f'probe dataset {dataset!r} has no labels; use a labelled local '
                     "dataset such as 'cifar10' or 'mnist'")
  rows = np.asarray(src.indices)
  labels = np.asarray(arrays['label'])[rows]
  pick = np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in np.unique(labels)])
  if len(pick) == 0:
    raise ValueError(f'probe split {split!r} of {dataset!r} is empty')
  desc = (f"{dataset} split '{split}': first {per_class} of each class "
          f'({len(pick)} images, {len(np.unique(labels))} classes)')
  return np.asarray(arrays['image'])[rows[pick]], labels[pick].astype(np.int32), desc


def probe(task, config, trained: dict, key) -> dict:
  """Linear-probe accuracy of every method's frozen H and of an untrained H.

  For each dataset of `config.probe.datasets`: bottleneck features
  (`cgml_jax.metrics.probe`) of the probe-train and probe-test rows (`probe_rows`, mapped
  to the task's inputs by `probe_preprocess`), then `probe.linear_probe` (l2 chosen on a
  held-out part of probe-train).

  Returns:
    {dataset: {'train_rows', 'test_rows', 'seconds', 'results': {method: probe dict}}}.
  """
  p = config.probe
  pre = probe_preprocess(int(config.data.image_size), int(task.in_channels))
  encoders = {m: probe_lib.state_encoder(t.state) for m, t in trained.items()}
  enc0 = image.build_models(task, config)[0]
  out = {}
  for dataset in p.datasets:
    t0 = time.perf_counter()
    x_tr, y_tr, d_tr = probe_rows(config, dataset, p.train_split, p.train_per_class)
    x_te, y_te, d_te = probe_rows(config, dataset, p.test_split, p.test_per_class)
    if 'untrained_encoder' not in encoders:
      # The floor: the same H at initialisation.
      x0 = jax.jit(pre)(jnp.asarray(x_tr[:1]))
      encoders['untrained_encoder'] = (enc0, jax.jit(enc0.init)(methods_lib.rbg_key(key), x0))
    results = {}
    for name, (enc, variables) in encoders.items():
      f_tr = probe_lib.features(enc, variables, x_tr, p.batch_size, pre)
      f_te = probe_lib.features(enc, variables, x_te, p.batch_size, pre)
      results[name] = probe_lib.linear_probe(f_tr, y_tr, f_te, y_te, config)
      print(f'[probe {dataset}] {name}: test_acc={results[name]["test_acc"]:.4f} '
            f'(dim {results[name]["dim"]}, l2 {results[name]["l2"]:g})', flush=True)
    out[dataset] = {'train_rows': d_tr, 'test_rows': d_te,
                    'seconds': round(time.perf_counter() - t0, 2), 'results': results}
  return out
