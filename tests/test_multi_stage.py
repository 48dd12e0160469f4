"""Progressive coding over N stages (progcode_ext/multi_stage.py): N = 2 is the two-stage HVAE
exactly; three stages train one after the other, each earlier one frozen; flags are checked."""
import json

import numpy as np
import pytest
import torch

from progcode_ext.multi_stage import (MultiStageHVAE, distortion_targets,
                                      stage_hparams, stage_weights)
from progcode_ext.stage1 import Stage1VAE
from progcode_ext.stage2 import ConditionalVAE
from progcode_ext.stages import MeanHeadStage, Stage
from progcode_ext.two_stage import TwoStageHVAE
from vdvae import get_hparams, train
from vdvae.checkpoint import CheckpointError
from vdvae.errors import ConfigError
from vdvae.hps import Hyperparams, comma_list, read_hparams
from vdvae.logger import read_jsonl
from vdvae.models import build_model

ARCH = dict(width=16, zdim=4, num_mixtures=3, enc_blocks='32x1,32d2,16x1,16d2,8x1,8d2,4x1,4d4,1x1',
            dec_blocks='1x1,4m1,4x1,8m4,8x1,16m8,16x1,32m16,32x1')
FLAGS = [a for k, v in ARCH.items() for a in (f'--{k}', str(v))] + [
    '--iters_per_images', '100000', '--n_batch', '8', '--epochs_per_eval', '100000',
    '--iters_per_print', '1']


def batch(n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 32, 32, 1), generator=g).float()
    return (x - 127.5) / 64, (x - 127.5) / 127.5


def perturbed(model, seed=1):
    """Away from init's zero branches, so that every stage's output depends on its input."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model


def stage1_file(tmp_path, H):
    torch.manual_seed(5)
    path = tmp_path / 'stage1-model-ema.th'
    torch.save(perturbed(Stage1VAE(H), seed=2).state_dict(), path)
    return path


def equal(a, b):
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(equal(x, y) for x, y in zip(a, b))
    if isinstance(a, np.ndarray):
        return np.array_equal(a, b)
    return torch.equal(a, b)


@pytest.mark.parametrize('training', ['progressive', 'conventional'])
def test_two_stages_are_the_two_stage_hvae_exactly(training, tmp_path):
    H = get_hparams(f'mnist5k_{"stage2" if training == "progressive" else "conventional"}', **ARCH)
    if training == 'progressive':
        H.stage1_path = str(stage1_file(tmp_path, H))
    multi_H = Hyperparams(H, model='multi_stage')        # --stage1_path: the one-run spelling
    torch.manual_seed(0)
    two = TwoStageHVAE(H)
    torch.manual_seed(0)
    multi = MultiStageHVAE(multi_H)
    # the same parameters, names, initial values and trainable set
    assert equal(two.state_dict(), multi.state_dict())
    assert [(k, p.requires_grad) for k, p in two.named_parameters()] == \
        [(k, p.requires_grad) for k, p in multi.named_parameters()]
    perturbed(two)
    multi.load_state_dict(two.state_dict())
    x, y = batch()
    outputs = []
    for model in (two, multi):
        model.train()
        torch.manual_seed(3)
        stats = model(x, y)
        model.zero_grad()
        stats['loss'].backward()
        grads = {k: p.grad for k, p in model.named_parameters() if p.grad is not None}
        model.eval()
        torch.manual_seed(4)
        out = dict(stats={k: v.detach() for k, v in stats.items()}, grads=grads,
                   recon=list(model.reconstruct_stages(x)), latents=model.forward_get_latents(x))
        torch.manual_seed(5)
        out['stages'] = list(model.sample_stages(2, [0.8, 0.5]))
        torch.manual_seed(6)
        out['sample'] = model.sample(2, t=0.9)
        torch.manual_seed(7)
        out['grid'] = model.sample_grid(torch.zeros(2, 32, 32, 1, dtype=torch.uint8), x[:2], H)
        outputs.append(out)
    assert outputs[0]['grads'] and equal(*outputs)
    stats = outputs[1]['stats']
    assert (stats['loss'] < stats['elbo']) == (training == 'progressive')


def three_stage_hparams(**kw):
    return get_hparams('mnist5k_stage3', **ARCH, **kw)


def test_three_stages_have_a_mean_head_in_the_middle_and_the_likelihood_last():
    H = three_stage_hparams(training='conventional', stage_widths='8,12,16')
    assert distortion_targets(H) == [0.0512, 0.0128]
    model = perturbed(build_model(H))
    assert model.n_stages == model.trained_stage == 3 and model.distortion_kind == 'nll'
    assert isinstance(model.stage1, Stage1VAE) and isinstance(model.stage2, MeanHeadStage)
    assert not hasattr(model.stage3.decoder.out_net, 'objective')
    assert [s.H.width for s in model.stages] == [8, 12, 16]
    assert model.stage2.objective.multiplier.target == 0.0128
    x, y = batch()
    torch.manual_seed(0)
    stats = model(x, y)
    terms = sum(stats[f'rate_stage{k}'] for k in (1, 2, 3))
    assert torch.allclose(stats['rate'], terms) and torch.equal(stats['loss'], stats['elbo'])
    assert torch.allclose(stats['elbo'], stats['nll'] + stats['rate'])
    assert {'mse_stage1', 'mse_stage2'} <= set(stats) and 'mse_stage3' not in stats
    stats['loss'].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in
               (model.stage1.decoder.out_net.out_conv.weight,
                model.stage2.decoder.out_net.out_conv.weight))  # conventional: through x_hat
    model.eval()
    recons = model.reconstruct_stages(x)
    assert len(recons) == 3 and all(r.shape == y.shape for r in recons)
    # stage 2 refines stage 1: its x_hat depends on stage 1's
    torch.manual_seed(1)
    a = model.stage2.decode(3, recons[0], t=0.0)
    torch.manual_seed(1)
    b = model.stage2.decode(3, -recons[0], t=0.0)
    assert (a - b).abs().max() > 1e-4
    # one temperature per stage: at 0 every stage is deterministic given its input
    torch.manual_seed(2)
    first = model.sample_stages(2, [0.0, 0.0, 0.0])
    torch.manual_seed(3)
    second = model.sample_stages(2, [0.0, 0.0, 0.0])
    assert equal(first[:2], second[:2]) and all(s.dtype == np.uint8 for s in first)
    torch.manual_seed(2)
    warmer = model.sample_stages(2, [0.0, 1.0, 0.0])
    assert np.array_equal(first[0], warmer[0]) and not np.array_equal(first[1], warmer[1])
    with pytest.raises(ConfigError, match='one temperature per stage'):
        model.sample_stages(2, [1.0, 1.0])


def test_sample_uses_stage_temperatures():
    model = build_model(three_stage_hparams(training='conventional', stage_temperatures='0,0,1'))
    perturbed(model.eval())
    torch.manual_seed(0)
    a = model.sample(2, t=0.3)
    torch.manual_seed(0)
    b = model.sample_stages(2, [0.0, 0.0, 1.0])[-1]
    assert np.array_equal(a, b)


# targets above the untrained MSE (about 1), so that both multipliers move in a few steps
TARGETS = '4,2'


def train_stage(tmp_path, desc, *args, steps=4):
    assert train.main(['--hps', 'mnist5k_stage3', *FLAGS, '--distortion_targets', TARGETS,
                       '--save_dir', str(tmp_path), '--desc', desc, '--num_iters', str(steps),
                       '--iters_per_save', '2', *args]) == 0
    return tmp_path / desc


@pytest.fixture(scope='module')
def chain(tmp_path_factory):
    """Stages 1, 2 and 3 of a three-stage chain, 4 steps each, each on the runs before it."""
    root = tmp_path_factory.mktemp('chain')
    s1 = train_stage(root, 's1')
    s2 = train_stage(root, 's2', '--stage_paths', str(s1))
    s3 = train_stage(root, 's3', '--stage_paths', f'{s1},{s2}')
    return s1, s2, s3


@pytest.mark.slow
def test_progressive_chain_trains_each_stage_on_the_frozen_ones_before(chain):
    s1, s2, s3 = chain
    logs = [[r for r in read_jsonl(run / 'log.jsonl') if r.get('type') == 'train_loss']
            for run in chain]
    # stages 1 and 2 are lambda-optimal (eta steps), stage 3 minimises its part of the ELBO
    assert all('eta' in r and 'psnr' in r for r in logs[0] + logs[1])
    assert logs[0][-1]['eta'] < logs[0][0]['eta'] and logs[1][-1]['eta'] < logs[1][0]['eta']
    assert {'rate_stage1', 'rate_stage2', 'mse_stage2'} <= set(logs[1][-1])
    assert all(r['elbo'] > r['loss'] for r in logs[2])
    saved = [torch.load(run / 'latest-model-ema.th', weights_only=True) for run in chain]
    assert {k.split('.')[0] for k in saved[2]} == {'stage1', 'stage2', 'stage3'}
    for k, v in saved[0].items():                   # stage 1, bit-identical through both runs
        assert torch.equal(saved[1][k], v) and torch.equal(saved[2][k], v)
    for k, v in saved[1].items():
        if k.startswith('stage2.'):
            assert torch.equal(saved[2][k], v)
    assert int(saved[1]['stage2.objective.multiplier.steps']) == 4


@pytest.mark.slow
def test_a_stage_resumes_exactly(chain, tmp_path):
    s1, s2, _ = chain
    train_stage(tmp_path, 'half', '--stage_paths', str(s1), steps=2)
    train_stage(tmp_path, 'half', '--stage_paths', str(s1), '--resume')
    for name in ('latest-model.th', 'latest-model-ema.th'):
        straight = torch.load(s2 / name, weights_only=True)
        resumed = torch.load(tmp_path / 'half' / name, weights_only=True)
        assert all(torch.equal(straight[k], resumed[k]) for k in straight), name


@pytest.mark.slow
def test_sample_command_on_a_chain(chain, tmp_path):
    from vdvae.__main__ import main
    out = tmp_path / 's.png'
    assert main(['sample', '--hps', 'mnist5k_stage3', *FLAGS[:10], '--distortion_targets',
                 TARGETS, '--stage_paths',
                 f'{chain[0]},{chain[1]}',
                 '--restore_ema_path', str(chain[2] / 'latest-model-ema.th'),
                 '--stage_temperatures', '1,0.8,0.5', '--n', '4', '--out', str(out)]) == 0
    assert out.stat().st_size > 0


@pytest.mark.slow
def test_stage_paths_are_checked(chain, tmp_path):
    s1, s2, s3 = chain
    with pytest.raises(ConfigError, match='trained for lambda 4, but the targets name 3'):
        build_model(three_stage_hparams(distortion_targets='3,2', stage_paths=str(s1)))
    with pytest.raises(CheckpointError, match='stage 2.*--stage_widths'):
        build_model(three_stage_hparams(distortion_targets=TARGETS, stage_paths=f'{s1},{s2}',
                                        stage_widths='16,8,16'))
    other = train_stage(tmp_path, 'other-s1', '--seed', '7', steps=2)
    with pytest.raises(ConfigError, match='trained on another stage 1'):
        build_model(three_stage_hparams(distortion_targets=TARGETS, stage_paths=f'{other},{s2}'))
    with pytest.raises(CheckpointError, match='holds no stage 2'):
        stage_weights(str(s1 / 'latest-model-ema.th'), 2)


@pytest.mark.parametrize('flags, message', [
    (dict(distortion_targets='0.01,0.02'), 'must decrease'),
    (dict(distortion_targets='0.01,-1'), 'positive'),
    (dict(distortion_targets='a,b'), 'comma-separated numbers'),
    (dict(stage_widths='8,8'), 'one per stage, 3'),
    (dict(stage_widths='8,0,8'), 'integers >= 1'),
    (dict(stage_temperatures='1,1,-1'), 'numbers >= 0'),
    (dict(training='conventional', stage_paths='a'), 'drop --stage_paths'),
    (dict(stage_paths='a,b,c'), 'at most 2'),
])
def test_bad_stage_flags(flags, message):
    with pytest.raises(ConfigError, match=message):
        three_stage_hparams(**flags)


def test_stage_hparams_and_lists():
    H = three_stage_hparams(stage_widths='8,12,16')
    assert [stage_hparams(H, k).width for k in (1, 2, 3)] == [8, 12, 16]
    assert [stage_hparams(H, k).get('distortion_target') for k in (1, 2)] == [0.0512, 0.0128]
    assert comma_list(int)('1, 2') == [1, 2] and comma_list(int)('') == []
    assert H.stage_widths == [8, 12, 16] and H.distortion_targets == [0.0512, 0.0128]
    two = get_hparams('mnist5k_stage2', model='multi_stage', **ARCH)
    assert distortion_targets(two) == [two.distortion_target]


def test_every_stage_offers_the_same_calls():
    """The chain calls `posterior(x, x_prev, get_latents)` and `decode(n, x_prev, t, latents)` on
    every stage without asking its kind; stage 1 ignores x_prev."""
    import inspect
    for name in ('posterior', 'decode'):
        signatures = {cls: list(inspect.signature(getattr(cls, name)).parameters)
                      for cls in (Stage1VAE, MeanHeadStage, ConditionalVAE)}
        assert len({tuple(s) for s in signatures.values()}) == 1, signatures
        assert list(inspect.signature(getattr(Stage, name)).parameters) == signatures[Stage1VAE]
    assert 'forward' not in vars(MeanHeadStage) and 'forward' not in vars(ConditionalVAE)
    model = perturbed(build_model(three_stage_hparams(training='conventional')))
    # the three kinds, each where the chain puts it, all behind the one interface
    assert [type(s) for s in model.stages] == [Stage1VAE, MeanHeadStage, ConditionalVAE]
    assert all(isinstance(s, Stage) and model.stage(k) is s
               for k, s in enumerate(model.stages, 1))
    x, _ = batch()
    for x_prev in (None, torch.randn(3, 32, 32, 1)):
        torch.manual_seed(0)
        px_z, _ = model.stage1.posterior(x, x_prev)
        torch.manual_seed(1)
        drawn = model.stage1.decode(3, x_prev, t=0.5)
        if x_prev is None:
            first = px_z, drawn
    assert torch.equal(first[0], px_z) and torch.equal(first[1], drawn)


def test_list_flags_are_lists_once_parsed(tmp_path):
    H = three_stage_hparams(stage_widths='8,12,16', stage_temperatures='1,0.5,0')
    assert H.distortion_targets == [0.0512, 0.0128] and H.stage_widths == [8, 12, 16]
    assert H.stage_temperatures == [1.0, 0.5, 0.0]
    old = tmp_path / 'hparams.json'          # a run saved when these flags were text
    old.write_text(json.dumps(dict(H, distortion_targets='0.0512,0.0128', stage_paths='a,b')))
    saved = read_hparams(old)
    assert saved.distortion_targets == [0.0512, 0.0128] and saved.stage_paths == ['a', 'b']
