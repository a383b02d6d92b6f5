r"""Shareable trained models: a trained method's inference parameters and config in one
small Orbax directory, and `load_pretrained` to sample from it without the training code.

  export(trained, config, 'colorizer')               # a Trained / CGMLState / RegressionState
  export('runs/colorize', None, 'colorizer')         # the newest checkpoint of a workdir
  model = load_pretrained('colorizer')
  y = model.sample(x, jax.random.key(0), 10)         # (B, K, ...), x as the task's inputs

The directory holds three Orbax items:

  model   {'params', 'stats'}: the parameters of H, G (and Z for cGML) and their
          spectral-norm statistics; no optimiser state, no persistent z table;
  config  the experiment config as JSON (it rebuilds the modules and fixes T of Eq. 4);
  meta    {'format', 'task', 'method', 'version'}.

Supported: 'cgml' and 'cgml_no_rho' (K samples by Eq. 4 from K random z_0) and 'l1' (its
one prediction repeated K times), on the image tasks (colorize, colour_modes, hue_modes,
complete, translate, mnist_corrupted) and the toy. `Pretrained.sample` runs
the same computation as the training code's sampler, so the same key gives bitwise the
same outputs on the same backend.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from cgml_jax import __version__, cgml, regression
from cgml_jax.training import checkpoint

FORMAT = 'cgml_jax.pretrained/1'
METHODS = ('cgml', 'cgml_no_rho', 'l1')
IMAGE_TASKS = ('colorize', 'colour_modes', 'hue_modes', 'complete', 'translate',
               'mnist_corrupted')


class ExportError(ValueError):
  """What was asked to be exported or loaded is not a supported trained model."""


def _state_of(trained) -> Any:
  return getattr(trained, 'state', trained)  # methods.Trained holds its state


def _method_of_state(state) -> str:
  if isinstance(state, cgml.CGMLState):
    return 'cgml' if state.hp.use_momentum else 'cgml_no_rho'
  if isinstance(state, regression.RegressionState):
    return 'l1'
  raise ExportError(f'cannot export a {type(state).__name__}; expected a trained cGML or L1 '
                    'state (CGMLState, RegressionState or methods.Trained)')


def _read_workdir(workdir: str, config, method: str | None):
  """(params, stats, method) of the newest checkpoint of `method` in a run's workdir."""
  methods = list(config.methods)
  if method is None:
    method = next((m for m in ('cgml', 'cgml_no_rho', 'l1') if m in methods), methods[0])
  if method not in METHODS:
    raise ExportError(f'cannot export method {method!r}; expected one of {METHODS}')
  directory = os.path.abspath(os.path.join(workdir, 'checkpoints', method.replace('+', '_')))
  if not os.path.isdir(directory):
    raise ExportError(f'no checkpoints of {method!r} in {workdir} (looked for {directory})')
  manager = ocp.CheckpointManager(directory, item_handlers={
      'state': ocp.StandardCheckpointHandler()})
  try:
    step = manager.latest_step()
    if step is None:
      raise ExportError(f'{directory} holds no checkpoint')
    # No template: the raw tree, of which only params and stats are kept.
    tree = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  finally:
    manager.close()
  train = tree['state']['train']
  return train['params'], train['stats'], method


def _config_dict(config) -> ml_collections.ConfigDict:
  if isinstance(config, ml_collections.ConfigDict):
    return config
  return ml_collections.ConfigDict(config)


def export(trained, config, path: str | os.PathLike, *, method: str | None = None) -> str:
  """Writes a trained model's inference parameters and its config to one Orbax directory.

  Args:
    trained: a `methods.Trained`, a `CGMLState` / `RegressionState`, or a run's workdir
      (the newest checkpoint of `method` under workdir/checkpoints is read).
    config: the experiment config it was trained with; None reads workdir/config.json
      (workdir only).
    path: the directory to create (must not exist).
    method: which method of a workdir ('cgml' if it has one, else the first of
      config.methods); for a state, checked against it.

  Returns:
    The absolute path written.
  """
  if isinstance(trained, (str, os.PathLike)):
    workdir = os.fspath(trained)
    if config is None:
      with open(os.path.join(workdir, 'config.json')) as f:
        config = json.load(f)
    config = _config_dict(config)
    params, stats, method = _read_workdir(workdir, config, method)
  else:
    if config is None:
      raise ExportError('export(state, config, path) needs the config the state was trained '
                        'with')
    config = _config_dict(config)
    state = _state_of(trained)
    found = _method_of_state(state)
    if method is not None and method != found:
      raise ExportError(f'method={method!r} but the state is a {found!r} state')
    method, params, stats = found, state.params, state.stats
  task = config.get('task')
  if task not in IMAGE_TASKS + ('toy',):
    raise ExportError(f'cannot export a model of task {task!r}; expected one of '
                      f'{IMAGE_TASKS + ("toy",)}')
  path = os.path.abspath(os.fspath(path))
  if os.path.exists(path):
    raise ExportError(f'{path} exists; export writes a new directory')
  tree = jax.tree.map(np.asarray, jax.device_get({'params': params, 'stats': stats}))
  meta = {'format': FORMAT, 'task': task, 'method': method, 'version': __version__}
  with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
    ckptr.save(path, args=ocp.args.Composite(
        model=ocp.args.StandardSave(tree),
        config=ocp.args.JsonSave(checkpoint.config_to_json(config)),
        meta=ocp.args.JsonSave(meta)))
  return path


# ---------------------------------------------------------------------------------------
# Loading.


def _modules(config, task: str):
  """(H, G, Z) of a config, as its task builds them."""
  if task == 'toy':
    from cgml_jax.tasks import toy
    return toy._models(config, config.model.z_dim)  # pylint: disable=protected-access
  from cgml_jax.tasks import image
  return image.build_models(image_task(config), config)


def image_task(config):
  """The `ImageTask` of an image-task config (one of `IMAGE_TASKS`)."""
  task = config.task
  if task == 'colorize':
    from cgml_jax.tasks import colorize
    return colorize.TASK
  if task == 'colour_modes':
    from cgml_jax.tasks import colour_modes
    return colour_modes.TASK
  if task == 'hue_modes':
    from cgml_jax.tasks import hue_modes
    return hue_modes.TASK
  if task == 'complete':
    from cgml_jax.tasks import complete
    return complete.make_task(int(config.data.channels))
  if task == 'translate':
    from cgml_jax.tasks import translate
    return translate.TASK
  if task == 'mnist_corrupted':
    from cgml_jax.tasks import mnist_corrupted
    return mnist_corrupted.TASK
  raise ExportError(f'task {task!r} is not an image task; expected one of {IMAGE_TASKS}')


@dataclasses.dataclass
class Pretrained:
  """A loaded model: `sample(x, key, K) -> (B, K, ...)`.

  Attributes:
    config: the experiment config it was trained with.
    method: 'cgml', 'cgml_no_rho' or 'l1'.
    task: the config's task name.
    state: a `CGMLState` / `RegressionState` holding the parameters (no optimisers).
    sample_fn: (state, x, key, K) -> (B, K, ...), the training code's sampler.
  """
  config: ml_collections.ConfigDict
  method: str
  task: str
  state: Any
  sample_fn: Callable

  def __post_init__(self):
    self._jitted = jax.jit(self.sample_fn, static_argnums=3)

  def sample(self, x, key: jax.Array, num_samples: int) -> np.ndarray:
    """K outputs per input (B, K, ...); x as the task's inputs (e.g. L for colorization).

    cGML: Eq. 4 from K random z_0 drawn from `key`, T = config.latent.traverse_steps;
    L1: its prediction repeated K times.
    """
    return np.asarray(self._jitted(self.state, jnp.asarray(x, jnp.float32), key,
                                   int(num_samples)))

  @property
  def image_task(self):
    """The `ImageTask` (how inputs are made and outputs shown); None for the toy."""
    return None if self.task == 'toy' else image_task(self.config)


def load_pretrained(path: str | os.PathLike) -> Pretrained:
  """Reads a directory written by `export`.

  Args:
    path: the directory.

  Returns:
    A `Pretrained` with `sample(x, key, K)` and `config`.
  """
  path = os.path.abspath(os.fspath(path))
  if not os.path.exists(path):
    raise ExportError(f'{path} does not exist; give a directory written by '
                      'cgml_jax.export.export')
  if os.path.isdir(os.path.join(path, 'checkpoints')):
    # A training workdir: the usual slip of passing the run instead of its export.
    raise ExportError(f'{path} is a training workdir, not an exported model; export it first: '
                      f'cgml_jax.export.export({os.fspath(path)!r}, None, "model_dir")')
  if not os.path.isdir(os.path.join(path, 'meta')):
    raise ExportError(f'{path} is not a model written by cgml_jax.export (no meta item)')
  with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as ckptr:
    out = ckptr.restore(path, args=ocp.args.Composite(
        model=ocp.args.StandardRestore(), config=ocp.args.JsonRestore(),
        meta=ocp.args.JsonRestore()))
  meta = dict(out['meta'])
  if meta.get('format') != FORMAT:
    raise ExportError(f'{path} has format {meta.get("format")!r}; this version reads {FORMAT}')
  config = ml_collections.ConfigDict(dict(out['config']))
  method, task = meta['method'], meta['task']
  tree = jax.tree.map(jnp.asarray, out['model'])
  params, stats = tree['params'], tree.get('stats') or {}
  # Collections without arrays are saved as nothing; the modules expect the keys.
  stats = {k: stats.get(k, {}) for k in params}
  enc, gen, lat = _modules(config, task)
  step = jnp.zeros((), jnp.int32)
  if method == 'l1':
    from cgml_jax.peers import methods as peers
    state = regression.RegressionState(step=step, params=params, stats=stats, opt_state={},
                                       encoder=enc, generator=gen, tx=None, loss_fn=None)
    return Pretrained(config, method, task, state, peers.l1_sample)
  from cgml_jax.tasks import methods as methods_lib
  hp = methods_lib.hyper(config, method)
  state = cgml.CGMLState(step=step, params=params, stats=stats, opt_state={}, z_table=None,
                         encoder=enc, generator=gen, latent_net=lat, tx_hg=None,
                         tx_latent=None, loss_fn=None, hp=hp)
  t = int(config.latent.traverse_steps)
  return Pretrained(config, method, task, state,
                    lambda s, x, k, n: cgml.sample(s, x, k, n, t))
