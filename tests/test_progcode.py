"""The paper's models on CPU-sized mnist5k configurations: stage 1, masked decoder (probe and
gamma-optimal), stage 2, the two-stage HVAE (progressive and conventional), and their training."""
import numpy as np
import pytest
import torch

from vdvae import train
from progcode_ext.latent_groups import progressive_blocks
from progcode_ext.masked import MaskedDecoder
from progcode_ext.stage1 import Stage1VAE
from progcode_ext.stage2 import ConditionalVAE
from vdvae import get_hparams
from vdvae.logger import read_jsonl
from vdvae.checkpoint import CheckpointError
from vdvae.errors import ConfigError
from vdvae.models import build_model
from vdvae.vae_helpers import rate_per_example, to_uint8

ARCH = dict(width=16, zdim=4, num_mixtures=3, enc_blocks='32x1,32d2,16x1,16d2,8x1,8d2,4x1,4d4,1x1',
            dec_blocks='1x1,4m1,4x1,8m4,8x1,16m8,16x1,32m16,32x1')
FLAGS = [a for k, v in ARCH.items() for a in (f'--{k}', str(v))] + [
    '--iters_per_images', '100000', '--num_images_visualize', '2', '--num_variables_visualize', '1',
    '--num_temperatures_visualize', '1', '--n_batch', '8']


def batch(n=3, channels=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 32, 32, channels), generator=g).float()
    return (x - 127.5) / 64, (x - 127.5) / 127.5


def run(preset, tmp_path, desc, *args):
    return train.main(['--hps', preset, *FLAGS, '--save_dir', str(tmp_path), '--desc', desc, *args])


def log(tmp_path, desc, kind='train_loss'):
    return [r for r in read_jsonl(tmp_path / desc / 'log.jsonl') if r.get('type') == kind]


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    """A conventional VDVAE and a stage-1 model, trained briefly once for the tests below."""
    root = tmp_path_factory.mktemp('runs')
    assert run('mnist5k', root, 'vdvae', '--num_iters', '6') == 0
    assert run('mnist5k_stage1', root, 'stage1', '--num_iters', '6', '--iters_per_save', '3') == 0
    return root


def test_z1_to_zK_are_the_blocks_up_to_an_eighth_of_the_image():
    H = get_hparams('mnist5k', **ARCH)
    assert progressive_blocks(H) == 3                        # 1x1, 4m1, 4x1: resolution <= 4
    assert progressive_blocks(H, 8) == 5
    with pytest.raises(ValueError, match='selects no leading decoder blocks'):
        progressive_blocks(get_hparams('mnist5k', **dict(ARCH, dec_blocks='4x1,32m4')), 2)


def test_masked_latents_have_no_effect():
    H = get_hparams('mnist5k', **ARCH)
    decoder = MaskedDecoder(H, 3).eval()
    zs = [torch.randn(2, 4, b.base, b.base) for b in decoder.dec_blocks]
    other = zs[:3] + [torch.randn_like(z) * 5 for z in zs[3:]]
    with torch.no_grad():
        a = decoder.forward_manual_latents(2, zs)
        b = decoder.forward_manual_latents(2, other)
        c = decoder.forward_manual_latents(2, zs[:2] + [zs[2] + 1] + zs[3:])
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)                          # z_K itself does matter


def test_stage2_depends_on_x_hat():
    H = get_hparams('mnist5k', **ARCH)
    torch.manual_seed(0)
    model = ConditionalVAE(H)
    with torch.no_grad():                                    # away from init's zero branches
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x, y = batch(2)
    x_hat = torch.tanh(torch.randn(2, 32, 32, 1))
    outputs = []
    for cond in (x_hat, -x_hat):                                # the same noise, another x_hat
        torch.manual_seed(0)
        px_z, stats = model.posterior(x, cond)
        outputs.append((px_z, model.decoder.out_net.nll(px_z, y), rate_per_example(stats, 32 * 32)))
    (px_a, nll_a, rate_a), (px_b, nll_b, rate_b) = outputs
    assert (px_a - px_b).abs().max() > 1e-3
    assert (nll_a != nll_b).all() and (rate_a != rate_b).all()
    cond_a, cond_b = model.cond_encoder(x_hat), model.cond_encoder(-x_hat)
    with torch.no_grad():
        zs = [torch.zeros(2, 4, b.base, b.base) for b in model.decoder.dec_blocks]
        assert not torch.allclose(model.decoder.forward_manual_latents(2, zs, cond=cond_a),
                                  model.decoder.forward_manual_latents(2, zs, cond=cond_b))


@pytest.mark.slow
def test_stage1_trains_with_eta_logged_and_resumes_eta_exactly(runs, tmp_path):
    records = log(runs, 'stage1')
    assert {'eta', 'constraint_violation', 'psnr', 'rate', 'distortion'} <= set(records[-1])
    # resuming at step 3 and going on to 6 gives the same eta (and weights) as the straight run
    import shutil
    shutil.copytree(runs / 'stage1', tmp_path / 'stage1')
    ckpt = torch.load(runs / 'stage1' / 'latest-model.th', weights_only=True)
    assert run('mnist5k_stage1', tmp_path, 'half', '--num_iters', '3', '--iters_per_save', '3') == 0
    assert run('mnist5k_stage1', tmp_path, 'half', '--num_iters', '6', '--iters_per_save', '3',
               '--resume') == 0
    resumed = torch.load(tmp_path / 'half' / 'latest-model.th', weights_only=True)
    eta_keys = [k for k in ckpt if 'multiplier' in k]
    assert eta_keys and all(torch.equal(ckpt[k], resumed[k]) for k in ckpt)
    assert int(ckpt['objective.multiplier.steps']) == 6


def test_conventional_and_progressive_have_the_same_networks(runs):
    H = get_hparams('mnist5k_stage2', stage1_path=str(runs / 'stage1'), **ARCH)
    progressive = build_model(H)
    conventional = build_model(get_hparams('mnist5k_conventional', **ARCH))
    shapes = lambda m: [(k, tuple(p.shape)) for k, p in m.named_parameters()]
    assert shapes(progressive) == shapes(conventional)
    assert sum(p.numel() for p in progressive.parameters()) == \
        sum(p.numel() for p in conventional.parameters())
    trainable = lambda m: {k for k, p in m.named_parameters() if p.requires_grad}
    assert trainable(conventional) == {k for k, _ in conventional.named_parameters()}
    assert trainable(progressive) == {k for k, _ in progressive.named_parameters()
                                      if k.startswith('stage2.')}


@pytest.mark.slow
def test_progressive_stage2_leaves_stage1_bit_identical(runs, tmp_path):
    assert run('mnist5k_stage2', tmp_path, 's2', '--stage1_path', str(runs / 'stage1'),
               '--num_iters', '4') == 0
    stage1 = torch.load(runs / 'stage1' / 'latest-model-ema.th', weights_only=True)
    for name in ('latest-model.th', 'latest-model-ema.th'):
        after = torch.load(tmp_path / 's2' / name, weights_only=True)
        for key, value in stage1.items():
            assert torch.equal(after['stage1.' + key], value), (name, key)
    stats = log(tmp_path, 's2')[-1]
    assert stats['elbo'] == pytest.approx(stats['distortion'] + stats['rate'], rel=1e-5)
    assert stats['loss'] < stats['elbo']                     # stage 1's rate is not trained


def test_conventional_from_a_trained_stage1_starts_there_and_trains_it(runs):
    stage1 = torch.load(runs / 'stage1' / 'latest-model-ema.th', weights_only=True)
    H = get_hparams('mnist5k_conventional', init_from=str(runs / 'stage1'), **ARCH)
    model = build_model(H)
    for key, value in stage1.items():
        assert torch.equal(model.stage1.state_dict()[key], value), key
    assert all(p.requires_grad for p in model.parameters())        # jointly trained, not frozen
    fresh = build_model(get_hparams('mnist5k_conventional', **ARCH))
    assert not torch.equal(fresh.stage1.state_dict()['encoder.in_conv.weight'],
                           stage1['encoder.in_conv.weight'])


@pytest.mark.slow
def test_a_trained_chain_continues_by_either_objective_from_the_same_weights(runs, tmp_path):
    """Table 2's fine-tuning control: the progressive chain's run, continued by the joint ELBO
    (every stage trains) or by its own objective (stage 1 stays frozen), both start from it."""
    assert run('mnist5k_stage2', tmp_path, 's2', '--num_iters', '2',
               '--stage1_path', str(runs / 'stage1')) == 0
    chain = torch.load(tmp_path / 's2' / 'latest-model-ema.th', weights_only=True)
    for training, preset, extra in (
            ('conventional', 'mnist5k_conventional', {}),
            ('progressive', 'mnist5k_stage2', dict(stage1_path=str(runs / 'stage1')))):
        model = build_model(get_hparams(preset, init_from=str(tmp_path / 's2'), **extra, **ARCH))
        for key, value in model.state_dict().items():
            if key.startswith('stage'):
                assert torch.equal(value, chain[key]), (training, key)
        trains_stage1 = any(p.requires_grad for p in model.stage1.parameters())
        assert trains_stage1 == (training == 'conventional')
    other = tmp_path / 'other-stage1'
    assert run('mnist5k_stage1', tmp_path, 'other-stage1', '--num_iters', '2', '--seed', '3') == 0
    with pytest.raises(ConfigError, match='trained on another stage 1'):
        build_model(get_hparams('mnist5k_stage2', init_from=str(tmp_path / 's2'),
                                stage1_path=str(other), **ARCH))
    with pytest.raises(CheckpointError, match='holds none of the stages this run trains'):
        build_model(get_hparams('mnist5k_stage2', init_from=str(runs / 'stage1'),
                                stage1_path=str(runs / 'stage1'), **ARCH))


def test_the_stage1_rate_warmup_weighs_r1_by_t_over_n_then_is_the_elbo():
    torch.manual_seed(0)
    H = get_hparams('mnist5k_conventional', stage1_rate_warmup=4, **ARCH)
    model = build_model(H)
    x_in, x_target = batch()
    for t in range(6):
        torch.manual_seed(1)
        out = model(x_in, x_target)
        weight = min(1.0, t / 4)
        expected = out['elbo'] - (1 - weight) * out['rate_stage1']
        assert out['loss'].item() == pytest.approx(expected.item(), rel=1e-6), t
        model.after_update({})
    assert int(model.updates) == 6 and 'updates' in model.state_dict()
    plain = build_model(get_hparams('mnist5k_conventional', **ARCH))
    assert 'updates' not in plain.state_dict()                # checkpoints of the baseline unchanged
    fresh = build_model(H).eval()                             # evaluation: the loss is the -ELBO
    torch.manual_seed(1)
    out = fresh(x_in, x_target)
    assert out['loss'].item() == pytest.approx(out['elbo'].item(), rel=1e-6)


@pytest.mark.slow
def test_conventional_training_changes_both_stages(tmp_path):
    torch.manual_seed(0)
    assert run('mnist5k_conventional', tmp_path, 'conv', '--num_iters', '3') == 0
    H = get_hparams('mnist5k_conventional', **ARCH)
    torch.manual_seed(0)
    fresh = build_model(H).state_dict()
    after = torch.load(tmp_path / 'conv' / 'latest-model.th', weights_only=True)
    assert not torch.equal(after['stage1.encoder.in_conv.weight'], fresh['stage1.encoder.in_conv.weight'])
    assert not torch.equal(after['stage2.encoder.in_conv.weight'], fresh['stage2.encoder.in_conv.weight'])
    stats = log(tmp_path, 'conv')[-1]
    assert stats['loss'] == pytest.approx(stats['elbo'])


def test_two_stage_samples_and_reconstructions():
    model = build_model(get_hparams('mnist5k_conventional', **ARCH)).eval()
    x_hat, samples = model.sample_stages(3, [0.8, 0.5])
    assert x_hat.shape == samples.shape == (3, 32, 32, 1)
    assert x_hat.dtype == samples.dtype == torch.zeros(1, dtype=torch.uint8).numpy().dtype
    x, y = batch(2)
    recon_hat, recon = model.reconstruct_stages(x)
    assert recon_hat.shape == recon.shape == (2, 32, 32, 1)


def wide_x_hat(stage1):
    """Move stage 1 off init's zero branches and scale its mean head by 20, so that x_hat lies
    mostly outside [-1, 1], as the free bottleneck of a conventional training does."""
    with torch.no_grad():
        for p in stage1.parameters():
            p.add_(0.05 * torch.randn_like(p))
        stage1.decoder.out_net.out_conv.weight.mul_(20)
    return stage1


def two_stage_with_wide_x_hat(training, tmp_path):
    torch.manual_seed(0)
    if training == 'conventional':
        model = build_model(get_hparams('mnist5k_conventional', **ARCH))
        wide_x_hat(model.stage1)
        return model
    stage1 = wide_x_hat(Stage1VAE(get_hparams('mnist5k_stage1', **ARCH)))
    ckpt = tmp_path / 'stage1-model-ema.th'                 # the stage-1 checkpoint it loads
    torch.save(stage1.state_dict(), ckpt)
    model = build_model(get_hparams('mnist5k_stage2', stage1_path=str(ckpt), **ARCH))
    loaded = model.stage1.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in stage1.state_dict().items())
    return model


@pytest.mark.parametrize('training', ['progressive', 'conventional'])
def test_stage2_gets_the_same_unclamped_x_hat_in_training_and_sampling(training, tmp_path):
    model = two_stage_with_wide_x_hat(training, tmp_path)
    seen = []                                               # what stage 2 is given as x_hat
    model.stage2.cond_encoder.register_forward_pre_hook(
        lambda module, args: seen.append(args[0].detach().clone()))
    x, y = batch(3)

    # training: x_hat from one posterior sample of stage 1, unclamped
    drawn = []                                              # stage 1's z, as its blocks use them
    hooks = [block.z_proj.register_forward_pre_hook(lambda m, args: drawn.append(args[0].clone()))
             for block in model.stage1.decoder.dec_blocks]
    model.train()
    torch.manual_seed(5)
    model(x, y)
    for hook in hooks:
        hook.remove()
    (trained,) = seen
    assert (trained.abs() > 1).float().mean() > 0.5 and trained.abs().max() > 5

    # sampling from the prior: stage 2 gets x_hat unclamped; only its picture is clamped
    model.eval()
    torch.manual_seed(1)
    picture, _ = model.sample_stages(3, [0.9, 0.9])
    prior = seen[1]
    assert prior.abs().max() > 5 and (prior - trained).abs().max() > 1
    assert np.array_equal(picture, to_uint8(torch.clamp(prior, -1, 1)))
    torch.manual_seed(1)
    assert torch.equal(model.stage1.decoder.out_net(model.stage1.decode(3, t=0.9)), prior)

    # the same posterior latents: forward_get_latents under the same seed draws the same z
    torch.manual_seed(5)
    latents = [s['z'] for s in model.stage1.forward_get_latents(x)]
    assert len(latents) == len(drawn) and all(map(torch.equal, latents, drawn))

    # sampling with all of stage 1's latents fixed to those: stage 2 gets the same x_hat. The
    # posterior pass and forward_manual_latents run the same operations but in another memory
    # layout (the posterior's state takes the encoder activations' strides), so they agree up to
    # float32 rounding on x_hat's scale (a few ulps of its largest values), not bit for bit.
    picture, samples = model.sample_stages(3, latents=latents)
    sampled = seen[2]
    torch.testing.assert_close(sampled, trained, rtol=1e-6, atol=1e-6 * float(trained.abs().max()))
    assert np.array_equal(picture, to_uint8(torch.clamp(sampled, -1, 1)))
    assert picture.dtype == samples.dtype == np.uint8 and samples.shape == (3, 32, 32, 1)


@pytest.mark.slow
def test_masked_probe_and_gamma_optimal_from_a_trained_vdvae(runs, tmp_path):
    ckpt = str(runs / 'vdvae' / 'latest-model-ema.th')
    assert run('mnist5k_masked', tmp_path, 'probe', '--encoder_path', ckpt, '--mode', 'probe',
               '--num_iters', '3', '--iters_per_print', '1') == 0
    probe = log(tmp_path, 'probe')
    assert len(probe) == 3 and all(r['rate'] > 0 and r['distortion'] > 0 for r in probe)
    trained = torch.load(ckpt, weights_only=True)
    after = torch.load(tmp_path / 'probe' / 'latest-model.th', weights_only=True)
    assert torch.equal(after['encoder.in_conv.weight'], trained['encoder.in_conv.weight'])

    assert run('mnist5k_masked', tmp_path, 'gamma', '--encoder_path', ckpt, '--mode',
               'gamma_optimal', '--num_iters', '3', '--iters_per_print', '1') == 0
    messages = [r.get('message', '') for r in read_jsonl(tmp_path / 'gamma' / 'log.jsonl')]
    assert any(m.startswith('rate target gamma = R_K') for m in messages)
    gamma = log(tmp_path, 'gamma')
    assert {'eta', 'constraint_violation'} <= set(gamma[-1])


@pytest.mark.parametrize('mode', ['probe', 'gamma_optimal'])
def test_both_masked_decoders_start_from_the_trained_decoder_unless_fresh(runs, mode):
    ckpt = str(runs / 'vdvae' / 'latest-model-ema.th')
    trained = torch.load(ckpt, weights_only=True)
    decoder = {k[len('decoder.'):]: v for k, v in trained.items() if k.startswith('decoder.')
               and 'out_net' not in k}
    for init, same in (('trained', True), ('fresh', False)):
        H = get_hparams('mnist5k_masked', **ARCH, encoder_path=ckpt, mode=mode, masked_init=init,
                        rate_target=0.01)
        masked = build_model(H).decoder.state_dict()
        assert all(torch.equal(masked[k], v) for k, v in decoder.items()) == same, init
        assert 'out_net.out_conv.weight' in masked                     # the mean head: fresh


@pytest.mark.parametrize('preset,args,message', [
    ('mnist5k_stage2', [], 'needs the trained stage 1: pass --stage1_path'),
    ('mnist5k_stage1', ['--distortion_target', '0'], 'positive number'),
    ('mnist5k_stage1', ['--distortion_target', '-0.01'], 'positive number'),
    ('mnist5k_masked', [], 'pass --encoder_path'),
    ('mnist5k_stage2', ['--stage1_rate_warmup', '5', '--stage1_path', 'X'],
     '--stage1_rate_warmup schedules the joint -ELBO of a conventionally trained'),
    ('mnist5k_conventional', ['--stage1_rate_warmup', '-1'], '--stage1_rate_warmup'),
    ('mnist5k_stage1', ['--lr_decay_iters', '-5'], '--lr_decay_iters'),
    ('mnist5k_masked', ['--mode', 'gamma_optimal', '--rate_target', '-1', '--encoder_path', 'X'],
     '--rate_target must be a positive number'),
])
def test_wrong_combinations_are_clear_errors(tmp_path, capsys, preset, args, message):
    assert run(preset, tmp_path, 'bad', '--num_iters', '1', *args) == 2
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_stage1_checkpoint_of_another_architecture(runs, tmp_path, capsys):
    assert run('mnist5k_stage2', tmp_path, 'bad', '--stage1_path', str(runs / 'stage1'),
               '--width', '8', '--num_iters', '1') == 2
    assert 'does not fit this model' in capsys.readouterr().err
