"""The model contract (vdvae/contract.py), checked over every network `--model` can build."""
import math

import imageio.v2 as imageio
import numpy as np
import pytest
import torch

from vdvae import __main__ as cli
from vdvae import train
from vdvae.checkpoint import restore_params
from vdvae.contract import DISTORTION_KINDS, Model, training_loss
from vdvae.hps import get_hparams
from vdvae.images import write_images
from vdvae.models import MODELS, build_model
from vdvae.vae import VAE

# mnist16's geometry (16x16x1) with the smallest networks
TINY = dict(width=8, zdim=2, num_mixtures=2, enc_blocks='16x1,16d2,8x1,8d2,4x1,4d4,1x1',
            dec_blocks='1x1,4m1,4x1,8m4,8x1,16m8,16x1', num_images_visualize=3,
            num_variables_visualize=2, num_temperatures_visualize=2)
N_BLOCKS = 7
# (case, preset, its distortion kind, the latent layers it exposes: all, or z_1..z_K with K = 3
# at mnist16's progressive_res 8)
CASES = [('vdvae', 'mnist16', 'nll', N_BLOCKS),
         ('stage1', 'mnist16_stage1', 'mse', N_BLOCKS),
         ('two_stage-progressive', 'mnist16_stage2', 'nll', N_BLOCKS),
         ('two_stage-conventional', 'mnist16_conventional', 'nll', N_BLOCKS),
         ('masked-probe', 'mnist16_masked', 'mse', 5),
         ('masked-gamma_optimal', 'mnist16_masked', 'mse', 5),
         ('multi_stage-stage1', 'mnist16_stage3', 'mse', N_BLOCKS),
         ('multi_stage-middle', 'mnist16_stage3', 'mse', N_BLOCKS),
         ('multi_stage-conventional', 'mnist16_stage3_conventional', 'nll', N_BLOCKS)]
# the models whose samples are fixed once their exposed latents are: a mean head right after them
DETERMINISTIC_GIVEN_LATENTS = {'stage1', 'masked-probe', 'masked-gamma_optimal',
                               'multi_stage-stage1'}
# the models whose `after_update` steps a Lagrange multiplier
STEP_A_MULTIPLIER = {'stage1', 'masked-gamma_optimal', 'multi_stage-stage1', 'multi_stage-middle'}


@pytest.fixture(scope='module')
def weights(tmp_path_factory):
    """A VDVAE and a stage-1 checkpoint of TINY's architecture, for the models that load one."""
    folder = tmp_path_factory.mktemp('weights')
    torch.manual_seed(0)
    paths = {}
    for name, preset in (('vdvae', 'mnist16'), ('stage1', 'mnist16_stage1')):
        paths[name] = str(folder / f'{name}-model-ema.th')
        torch.save(build_model(get_hparams(preset, **TINY)).state_dict(), paths[name])
    return paths


def case_flags(case, weights):
    """The flags a case needs besides its preset and TINY."""
    if case == 'two_stage-progressive':
        return dict(stage1_path=weights['stage1'])
    if case.startswith('masked'):
        return dict(encoder_path=weights['vdvae'], mode=case.split('-')[1], rate_target=0.05)
    if case == 'multi_stage-middle':     # stage 2 of 3 on the stage-1 file (trained for 0.0064)
        return dict(distortion_targets='0.0064,0.0032', stage_paths=weights['stage1'])
    return {}


def hparams(case, preset, weights):
    return get_hparams(preset, **TINY, **case_flags(case, weights))


def batch(n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 16, 16, 1), generator=g, dtype=torch.uint8)
    x = images.float()
    return images, (x - 127.5) / 64, (x - 127.5) / 127.5


@pytest.fixture(params=CASES, ids=[c[0] for c in CASES])
def case(request, weights):
    name, preset, kind, n_latents = request.param
    H = hparams(name, preset, weights)
    torch.manual_seed(1)
    return dict(name=name, H=H, model=build_model(H), kind=kind, n_latents=n_latents)


def test_every_registered_model_is_covered():
    assert set(MODELS) == {c[0].split('-')[0] for c in CASES}


def test_forward_keys_units_and_the_loss(case):
    model, kind = case['model'], case['kind']
    assert isinstance(model, Model) and model.distortion_kind == kind in DISTORTION_KINDS
    _, x_in, x_target = batch()
    stats = model(x_in, x_target)
    assert {'rate', 'distortion'} <= set(stats)
    assert all(torch.is_tensor(v) and v.dim() == 0 and torch.isfinite(v) for v in stats.values())
    loss = training_loss(stats)
    assert loss.requires_grad
    loss.backward()
    if case['name'] != 'vdvae':                  # upstream's VAE keeps upstream's dict exactly
        assert torch.equal(stats[kind], stats['distortion'])
    if kind == 'mse':                            # per dimension on [-1, 1]: at most 4
        assert 0 <= stats['mse'] <= 4
    if 'elbo' in stats:                          # nats/dim: the NLL of 8-bit data is about <= 6
        assert stats['elbo'] >= stats['distortion'] - 1e-6 and stats['distortion'] < 10
    assert stats['rate'] >= 0


def test_latents_sample_and_reconstruct(case):
    model = case['model'].eval()
    _, x_in, _ = batch()
    latents = model.forward_get_latents(x_in)
    assert len(latents) == case['n_latents']
    for block in latents:
        assert block['z'].shape == block['kl'].shape and block['z'].shape[:2] == (3, 2)
    torch.manual_seed(2)
    samples = model.sample(3, t=0.7)
    assert isinstance(samples, np.ndarray) and samples.dtype == np.uint8
    assert samples.shape == (3, 16, 16, 1)
    # all exposed latents fixed: a mean head's images no longer depend on the seed
    zs = [b['z'] for b in latents]
    draws = []
    for seed in (3, 4, 3):
        torch.manual_seed(seed)
        draws.append(model.sample(3, t=0.5, latents=zs))
    assert np.array_equal(draws[0], draws[2])
    assert np.array_equal(draws[0], draws[1]) == (case['name'] in DETERMINISTIC_GIVEN_LATENTS)
    # upstream's names are the same draws
    torch.manual_seed(7)
    upstream_names = model.forward_uncond_samples(3, t=0.5), model.forward_samples_set_latents(3, zs[:1], t=0.5)
    torch.manual_seed(7)
    assert np.array_equal(upstream_names[0], model.sample(3, t=0.5))
    assert np.array_equal(upstream_names[1], model.sample(3, t=0.5, latents=zs[:1]))
    recon = model.reconstruct(x_in)
    assert torch.is_tensor(recon) and recon.dtype == torch.float32 and recon.shape == x_in.shape


def test_sample_grid_rows(case, tmp_path):
    model = case['model'].eval()
    images, x_in, _ = batch()
    rows = model.sample_grid(images, x_in, case['H'])
    assert len(rows) >= 2 and np.array_equal(rows[0], images.numpy())
    assert all(r.shape == (3, 16, 16, 1) and r.dtype == np.uint8 for r in rows)
    write_images(case['H'], model, images, x_in, str(tmp_path / 'grid.png'))
    width = imageio.imread(tmp_path / 'grid.png').shape[1]
    if model.sample_grid_titles(case['H']) is None:         # upstream's grid: unlabelled
        assert width == 3 * 16 * 8 + 2 * 2
    else:                                                   # progcode's: a margin of row titles
        assert len(model.sample_grid_titles(case['H'])) == len(rows)
        assert width > 3 * 16 * 8 + 2 * 2


def test_hooks_exist_and_default_to_nothing(case):
    model = case['model']
    assert isinstance(model.has_unused_parameters, bool)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.calibrate([], None, 'cpu', print)         # gamma_optimal: --rate_target given
    model.after_update(dict(rate=0.1, distortion=0.01, mse=0.01, elbo=1.0))
    changed = {k for k, v in model.state_dict().items() if not torch.equal(before[k], v)}
    assert all(k.split('.')[-3] == 'objective' for k in changed)   # a Lagrange multiplier's step
    assert bool(changed) == (case['name'] in STEP_A_MULTIPLIER)


def test_save_load_gives_identical_outputs(case, tmp_path):
    model = case['model'].eval()
    path = tmp_path / 'model.th'
    torch.save(model.state_dict(), path)
    torch.manual_seed(9)
    again = restore_params(build_model(case['H']), str(path)).eval()
    _, x_in, x_target = batch()
    outputs = []
    for m in (model, again):
        torch.manual_seed(5)
        stats = m(x_in, x_target)
        torch.manual_seed(6)
        outputs.append(({k: v.item() for k, v in stats.items()}, m.sample(2, t=0.5),
                        m.reconstruct(x_in)))
    assert outputs[0][0] == outputs[1][0]
    assert np.array_equal(outputs[0][1], outputs[1][1]) and torch.equal(outputs[0][2], outputs[1][2])


def test_the_sample_command_works_for_each(case, weights, tmp_path, capsys):
    name = case['name']
    path = tmp_path / 'model-ema.th'
    torch.save(case['model'].state_dict(), path)
    extra = dict(TINY, **case_flags(name, weights))
    flags = [a for k, v in extra.items() for a in (f'--{k}', str(v))]
    preset = next(c[1] for c in CASES if c[0] == name)
    out = tmp_path / 'samples.png'
    assert cli.main(['sample', '--hps', preset, *flags, '--restore_ema_path', str(path),
                     '--n', '4', '--t', '0.8', '--out', str(out)]) == 0
    grid = imageio.imread(out)          # labelled: row titles on the left, t above
    side = math.ceil(math.sqrt(4))
    n_rows = side * (case['model'].trained_stage if hasattr(case['model'], 'sample_stages') else 1)
    assert grid.ndim == 2 and grid.shape[1] > side * 16 * 8 + (side - 1) * 2
    assert grid.shape[0] > n_rows * 16 * 8 + (n_rows - 1) * 2
    assert 'wrote 4 samples' in capsys.readouterr().out


class BrokenVAE(VAE):
    """A user's model with a bug: its error must reach them with its traceback."""

    def forward(self, x, x_target):
        raise ValueError('a bug in my model')


def test_a_bug_in_a_users_model_keeps_its_traceback(tmp_path, monkeypatch):
    monkeypatch.setitem(MODELS, 'broken', BrokenVAE)
    flags = [a for k, v in TINY.items() for a in (f'--{k}', str(v))]
    with pytest.raises(ValueError, match='a bug in my model'):
        train.main(['--hps', 'mnist16', '--model', 'broken', *flags, '--num_iters', '1',
                    '--save_dir', str(tmp_path), '--quiet'])
    monkeypatch.setitem(MODELS, 'not_a_model', lambda H: torch.nn.Linear(1, 1))
    with pytest.raises(TypeError, match='not a vdvae.contract.Model'):
        build_model(get_hparams('mnist16', model='not_a_model'))
