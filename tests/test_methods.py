"""The methods registry and the one experiment driver: names, Hyper from any config, the
tables, and each comparison config's smoke mode end to end through the real launcher
entry point (tiny images, 2-3 methods, 4 steps)."""

import importlib
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cgml_jax import cgml, configs, train
from cgml_jax.tasks import image, representation
from cgml_jax.tasks import methods as methods_lib


def test_parse_method_and_variants():
  assert methods_lib.parse('cgml') == ('cgml', None)
  assert methods_lib.parse('pix2pix+msgan') == ('pix2pix', 'msgan')
  assert methods_lib.parse('mrgan+dsgan') == ('mrgan', 'dsgan')
  for bad in ('vae', 'l1+msgan', 'pix2pix+foo', 'cgml+dsgan'):
    with pytest.raises(ValueError, match='method'):
      methods_lib.parse(bad)
  assert methods_lib.is_deterministic('l1') and methods_lib.is_deterministic('context_encoder')
  assert not methods_lib.is_deterministic('pix2pix+dsgan')


@pytest.mark.parametrize('name', ['toy', 'colorize', 'complete', 'translate',
                                  'mnist_corrupted', 'spectral3d'])
def test_every_latent_option_works_on_every_task(name):
  """One Hyper builder: the latent and train options of Algorithm 1 reach cgml.Hyper from
  every task's config (--config.latent.clip_step=True and friends)."""
  config = importlib.import_module(f'experiments.{name}').get_config('smoke')
  config.latent.clip_step = True
  config.latent.step_size_decay = 0.5
  config.latent.init = 'persistent'
  config.latent.init_candidates = 1  # best-of-N z_0 draws random points; a table has none
  config.train.unroll = False
  config.train.generator_update = 'last'
  config.latent.z_loss = 'joint'
  hp = methods_lib.hyper(config, 'cgml')
  assert hp == cgml.Hyper(z_dim=config.model.z_dim, step_size=config.latent.step_size,
                          alpha=config.latent.alpha, inner_steps=config.train.inner_steps,
                          use_momentum=True, generator_update='last', latent_init='persistent',
                          clip_step=True, step_size_decay=0.5, unroll=False,
                          init_candidates=1, z_loss='joint')
  assert not methods_lib.hyper(config, 'cgml_no_rho').use_momentum


def test_config_variants_parse_like_big_vision():
  a = configs.parse_arg('smoke,seed=2,name=x', smoke=False, seed=0, name='', box=False)
  assert (a.smoke, a.seed, a.name, a.box) == (True, 2, 'x', False)
  with pytest.raises(ValueError, match="unknown config argument 'smok'"):
    configs.parse_arg('smok', smoke=False)
  with pytest.raises(ValueError, match='expected a int'):
    configs.parse_arg('seed=two', seed=0)
  with pytest.raises(ValueError, match='unknown config argument'):
    importlib.import_module('experiments.colorize').get_config('paper_scale')


def test_markdown_from_a_hand_made_result():
  results = {'task': 't', 'dataset': 'd', 'image_size': 8, 'num_samples': 2,
             'train_steps': 10, 'batch_size': 4, 'target_error': 0.5, 'probe_size': 2,
             'curve_samples': 2, 'curve_every': 5,
             'train': {'l1': {'seconds': 1.0, 'steps': 10, 'steps_to_target': 5,
                              'final_probe_E': 0.4},
                       'mrgan': {'seconds': 2.0, 'steps': '10+3', 'steps_to_target': '',
                                 'final_probe_E': 0.7}},
             'eval': {'test': {'l1': {'psnr_mean': 20.0, 'E_best': 0.1},
                               'mrgan': {'psnr_mean': 18.0, 'E_best': 0.2}}}}
  md = image.markdown(results)
  assert '| l1 | 20 | 0.1 | 1 | 10 | 5 | 0.4 |' in md
  assert '| mrgan | 18 | 0.2 | 2 | 10+3 |  | 0.7 |' in md
  assert 'lpips_mean' not in md            # columns nobody has are left out


@pytest.mark.parametrize('name', ['compare_mnist',
                                  pytest.param('compare_facades', marks=pytest.mark.slow)])
def test_smoke_comparison_end_to_end(name, tmp_path):
  config = importlib.import_module(f'experiments.{name}').get_config('smoke')
  workdir = str(tmp_path)
  results = train.train_and_evaluate(config, workdir)
  methods = list(config.methods)
  for f in ('metrics.json', 'metrics.md', 'curves.png', 'samples_test.png'):
    assert os.path.getsize(os.path.join(workdir, f)) > 0, f
  md = open(os.path.join(workdir, 'metrics.md')).read()
  assert all(f'| {m} |' in md for m in methods)
  for m in methods:
    t = results['train'][m]
    assert t['curve']['step'] == [2, 4] and len(t['curve']['probe_E']) == 2
    assert np.isfinite(t['final_probe_E'])
    assert os.path.isdir(os.path.join(workdir, 'checkpoints', m.replace('+', '_')))
    # every optimiser of every method still moves at the last step
    assert t['final_update_norm'] and min(t['final_update_norm'].values()) > 0, m
  ev = results['eval']['test']
  assert ev['l1']['pixel_diversity'] == 0.0 and ev['l1']['num_samples'] == 1
  stochastic = [m for m in methods if m != 'l1']
  assert all(ev[m]['num_samples'] == config.eval.num_samples for m in stochastic)
  if 'mrgan' in methods:
    assert results['train']['mrgan']['steps'] == f'{config.train.steps}+2'
  with open(os.path.join(workdir, 'metrics.json')) as f:
    saved = json.load(f)
  assert saved['methods'] == methods and saved['provenance']['config']['methods'] == methods


def test_probe_preprocess_maps_images_to_the_task_inputs():
  rgb = np.zeros((2, 32, 32, 3), np.uint8)
  rgb[..., 0] = 255                                        # pure red
  x = np.asarray(representation.probe_preprocess(28, 2)(rgb))  # mnist_corrupted: grey + mask
  assert x.shape == (2, 28, 28, 2)
  np.testing.assert_allclose(x[..., 0], 0.299 * 2 - 1, atol=1e-5)
  assert np.all(x[..., 1] == 0)                             # empty mask: nothing missing
  x = np.asarray(representation.probe_preprocess(64, 3)(rgb))  # translate: RGB, resized
  assert x.shape == (2, 64, 64, 3)
  np.testing.assert_allclose(x[0, 5, 5], [1, -1, -1], atol=1e-5)


def test_representation_probe_rows_and_table(tmp_path, data_dir):
  config = importlib.import_module('experiments.compare_mnist').get_config('smoke')
  config.probe.datasets = ('cifar10',)
  config.probe.train_per_class, config.probe.test_per_class = 6, 3
  config.probe.steps, config.probe.batch_size = 10, 16
  from cgml_jax.tasks import mnist_corrupted
  ctx = image.method_context(mnist_corrupted.TASK, config)
  built = methods_lib.build('l1', ctx, jax.random.key(0))
  trained = {'l1': methods_lib.Trained(built.state, built.sample_fn, [], {})}
  out = representation.probe(mnist_corrupted.TASK, config, trained,
                             jax.random.key(1))['cifar10']
  assert set(out['results']) == {'l1', 'untrained_encoder'}
  for r in out['results'].values():
    assert r['num_train'] == 60 and r['num_test'] == 30 and 0.0 <= r['test_acc'] <= 1.0
  assert "split 'train': first 6 of each class (60 images, 10 classes)" in out['train_rows']
  # Trained and untrained H give different features, so the probes are not copies.
  assert out['results']['l1'] != out['results']['untrained_encoder']
  results = {'task': 't', 'dataset': 'd', 'image_size': 8, 'num_samples': 2,
             'train_steps': 10, 'batch_size': 4,
             'train': {'l1': {'seconds': 1.0, 'steps': 10}},
             'eval': {'test': {'l1': {'psnr_mean': 20.0}}}, 'probe': {'cifar10': out}}
  acc = out['results']['l1']['test_acc']
  assert f'| l1 | 20 | 1 | 10 | {acc:.4g} |' in image.markdown(results)


def test_package_exports_its_public_surface_lazily():
  import subprocess
  import sys
  code = ('import sys, cgml_jax; from cgml_jax.training import lock; '
          'assert "jax" not in sys.modules; '
          'assert cgml_jax.Hyper is cgml_jax.cgml.Hyper; '
          'assert callable(cgml_jax.train_and_evaluate); print(cgml_jax.__version__)')
  out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == cgml_jax_version()


def cgml_jax_version():
  import cgml_jax
  return cgml_jax.__version__


def test_mrgan_holdout_is_fixed_and_left_out_of_training(data_dir):
  """MR-GAN's predictor is selected on the last N training examples: the same arrays in
  every build, and never in the predictor's training batches."""
  from cgml_jax.tasks import mnist_corrupted
  config = importlib.import_module('experiments.compare_mnist').get_config('smoke')
  ctx = image.method_context(mnist_corrupted.TASK, config)
  batches, val = ctx.holdout(8)
  _, val_again = ctx.holdout(8)
  assert val['x'].shape[0] == 8 and set(val) == set(val_again)
  for k in val:
    np.testing.assert_array_equal(val[k], val_again[k])
  n = len(image._source(mnist_corrupted.TASK, config, config.data.train_split))
  it = batches()
  seen = np.concatenate([next(it)['index'] for _ in range((n - 8) // 8)])   # one epoch
  assert set(seen.tolist()) == set(range(n - 8))


# ---------------------------------------------------------------------------------------
# The peers' generators as their papers build them (tiny 8 px task, no data needed).


def _tiny_context(config):
  """A registry Context on 8x8 grey images with the project's conv H, G, Z and D."""
  from cgml_jax.models.conv import build_conv_models
  from cgml_jax.peers import gan
  r = np.random.default_rng(0)
  x = r.normal(size=(4, 8, 8, 1)).astype(np.float32)
  batch = {'x': x, 'y': np.tanh(x)}
  m = config.model

  def models(cfg, out_channels):
    return build_conv_models(8, 1, out_channels or 1, cfg.model.z_dim, base_channels=4,
                             max_channels=8, bottleneck_size=2, z_injection='all',
                             spectral_norm=True, lipschitz=m.lipschitz, latent_hidden=(8,))

  return methods_lib.Context(
      name='tiny', config=config, models=models, loss_fn=cgml.l1_error, example=batch,
      batches=lambda: iter([batch] * 1000),
      discriminator=lambda kind: (gan.ContextEncoderDiscriminator(features=2, max_features=4)
                                  if kind == 'context_encoder'
                                  else gan.PatchDiscriminator(features=2)),
      basis_generator=lambda enc, x, per_layer: image.basis_models(config, 1, enc, x,
                                                                   per_layer),
      rbg_keys=True)


def _tiny_config():
  config = importlib.import_module('experiments.compare_mnist').get_config('smoke')
  config.train.steps = 2
  config.basisgan.num_blocks = 2
  config.basisgan.latent_dim = 4
  config.basisgan.basis_hidden = 4
  config.mrgan.loss = 'mcmle1'
  return config


def _has_spectral_norm(stats) -> bool:
  return any('SpectralNorm' in jax.tree_util.keystr(path)
             for path, _ in jax.tree_util.tree_leaves_with_path(stats))


def test_peer_generators_are_plain_unless_asked_and_cgml_keeps_spectral_norm():
  config = _tiny_config()
  ctx = _tiny_context(config)

  def generator_stats(name, basis='resnet'):
    config.basisgan.generator = basis
    return methods_lib.build(name, ctx, jax.random.key(0)).state.stats['generator']

  cgml_state = methods_lib.build('cgml', ctx, jax.random.key(0)).state
  assert _has_spectral_norm(cgml_state.stats['generator'])
  assert _has_spectral_norm(cgml_state.stats['latent'])
  peers = [('pix2pix',), ('context_encoder',), ('mrgan',), ('basisgan', 'resnet'),
           ('basisgan', 'unet')]
  for args in peers:
    assert not _has_spectral_norm(generator_stats(*args)), args
  config.gan.generator_spectral_norm = True
  for args in [('pix2pix',), ('basisgan', 'resnet'), ('basisgan', 'unet')]:
    assert _has_spectral_norm(generator_stats(*args)), args


@pytest.mark.slow  # long; run with -m slow
def test_basisgan_latents_per_layer_by_default_and_shared_under_dsgan():
  config = _tiny_config()
  ctx = _tiny_context(config)

  def z_dim(name):
    built = methods_lib.build(name, ctx, jax.random.key(0))
    gen = built.state.generator
    assert type(gen).__name__ == 'BasisResNetGenerator'
    assert built.state.hp.z_dim == gen.latent_dim * (gen.num_blocks if gen.per_layer_latents
                                                     else 1)
    return built.state.hp.z_dim

  assert z_dim('basisgan') == z_dim('basisgan+msgan') == 2 * 4   # 2 blocks, 4-d each
  assert z_dim('basisgan+dsgan') == 4                              # Sec. 5: one shared code
  config.basisgan.latent = 'shared'
  assert z_dim('basisgan') == 4
  config.basisgan.latent = 'per_layer'
  assert z_dim('basisgan+dsgan') == 8
  # Trains end to end through the registry: every optimiser still moves at the last step.
  config.basisgan.latent = 'auto'
  trained = methods_lib.train('basisgan', ctx, jax.random.key(1))
  norms = trained.info['final_update_norm']
  assert norms and min(norms.values()) > 0, norms
  s = np.asarray(jax.jit(trained.sample_fn, static_argnums=3)(
      trained.state, jnp.asarray(ctx.example['x']), jax.random.key(2), 3))
  assert s.shape == (4, 3, 8, 8, 1) and np.abs(s[:, 0] - s[:, 1]).max() > 0


def test_model_norm_reaches_h_and_g_and_the_context_encoder_has_batchnorm():
  """model.norm='batch' puts BatchNorm into H and G; the Context Encoder peer has it by
  default (gan.context_encoder_norm, Pathak et al.'s backbone), and its GAN step moves the
  running averages."""
  from cgml_jax.tasks import mnist_corrupted
  config = importlib.import_module('experiments.compare_mnist').get_config('smoke')
  ctx = image.method_context(mnist_corrupted.TASK, config)
  key = jax.random.key(0)

  def norms(state, part):
    return sorted(k for k in state.stats[part].get('batch_stats', {}) if k.startswith('norm_'))

  ce = methods_lib.build('context_encoder', ctx, key)
  assert norms(ce.state, 'encoder') and norms(ce.state, 'generator')
  new, m = jax.jit(ce.step_fn)(ce.state, ctx.example, key)
  assert np.isfinite(float(m['g_loss']))
  k = norms(ce.state, 'generator')[0]
  assert not np.allclose(new.stats['generator']['batch_stats'][k]['mean'],
                         ce.state.stats['generator']['batch_stats'][k]['mean'])
  cg = methods_lib.build('cgml', ctx, key).state
  assert not norms(cg, 'encoder') and not norms(cg, 'generator')  # model.norm = 'none'
  config.gan.context_encoder_norm = 'none'
  assert not norms(methods_lib.build('context_encoder', ctx, key).state, 'generator')
  config.model.norm = 'batch'
  cg = methods_lib.build('cgml', ctx, key).state
  assert norms(cg, 'encoder') and norms(cg, 'generator')
