"""bench/bench.py and bench/bench_ensemble.py on tiny models, and the CPU speed-ups keep the
numerics."""
import copy
import importlib.util
import json
import platform
from pathlib import Path

import pytest
import torch

from vdvae import VAE, get_hparams
from vdvae import train_helpers

BENCH = Path(__file__).resolve().parents[1] / 'bench' / 'bench.py'
BENCH_ENSEMBLE = BENCH.parent / 'bench_ensemble.py'


def load_bench(path=BENCH):
    spec = importlib.util.spec_from_file_location(f'progcode_{path.stem}', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_hparams(**extra):
    return get_hparams('cifar10', **{**load_bench().QUICK_OVERRIDES, 'n_batch': 2, **extra})


def batch(H, seed=0):
    gen = torch.Generator().manual_seed(seed)
    shape = (H.n_batch, H.image_size, H.image_size, H.image_channels)
    return torch.randn(shape, generator=gen), torch.rand(shape, generator=gen) * 2 - 1


@pytest.mark.slow
def test_bench_quick_writes_json(tmp_path):
    out = tmp_path / 'bench.json'
    bench = load_bench()
    results = bench.main(['--quick', '--threads', '1', '--json', str(out)])
    written = json.loads(out.read_text())
    assert written['configs'].keys() == results['configs'].keys() == {'baseline', 'ours'}
    for name, summary in written['configs'].items():
        assert summary['step_s'] > 0 and summary['eval_s'] > 0, name
        assert summary['peak_mem_bytes'] > 0, name
        assert len(summary['runs']) == 1 and len(summary['runs'][0]['step_s']) == 2
        assert summary['step_ratio'] > 0 and summary['eval_ratio'] > 0
        assert summary['runs'][0]['skipped_updates'] == 0
    # Same init, batch and seed: the first loss agrees across configurations.
    assert written['reference'] == 'baseline'
    assert written['configs']['ours']['first_loss_rel_diff'] < 1e-5
    assert written['machine']['torch'] == torch.__version__


@pytest.mark.slow
def test_bench_layouts_measure_side_by_side_throughput(tmp_path):
    out = tmp_path / 'layouts.json'
    results = load_bench().main(['--quick', '--configs', 'ours', '--layouts', '1x1,2x1',
                                 '--json', str(out)])
    written = json.loads(out.read_text())
    assert list(written['layouts']) == list(results['layouts']) == ['1x1', '2x1']
    one, two = written['layouts']['1x1'], written['layouts']['2x1']
    assert one['ratio'] == 1.0 and two['ratio'] > 0
    assert len(two['runs'][0]['worker_step_s']) == 2                  # two workers at once
    assert two['steps_per_s'] == pytest.approx(2 / two['step_s'])


def exits_with_usage_error(capsys, fn, *args):
    """fn(*args) must end as argparse's parser.error does: SystemExit with status 2 and the
    usage line plus `bench.py: error: ...` on stderr; returns that error line."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        fn(*args)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith('usage: ')
    line = err.strip().splitlines()[-1]
    assert ': error: ' in line, err
    return line


@pytest.mark.slow
def test_bench_ensemble_measures_both_ways(tmp_path):
    """A kind (stage 2: on the stage-1 run the driver trains first) is timed as an ensemble and
    as separate processes; the JSON holds both rates and their ratio."""
    out = tmp_path / 'ensemble.json'
    bench = load_bench(BENCH_ENSEMBLE)
    assert bench.main(['--kinds', 'stage2', '--ks', '2', '--runs', '1', '--warmup', '1',
                       '--steps', '1', '--n_batch', '2', '--cores', '1', '--json', str(out)]) == 0
    kinds = json.loads(out.read_text())['kinds']
    assert set(kinds) == {'stage2'}
    for rows in kinds.values():
        row = rows['2']
        assert row['ensemble'] > 0 and row['separate'] > 0
        assert row['ratio'] == pytest.approx(row['ensemble'] / row['separate'])
        assert len(row['runs'][0]['separate_step_s']) == 2         # two processes
    with pytest.raises(SystemExit, match='unknown stage9'):
        bench.main(['--kinds', 'stage9'])


def test_bench_rejects_unknown_config(capsys):
    line = exits_with_usage_error(capsys, load_bench().main, ['--configs', 'ours,nope'])
    assert line.endswith("error: unknown config 'nope'; choose from baseline, ours, ours-nchw, "
                         "ours-no-keep-memory, ours-foreach-adamw, ours-compile")
    # every configuration it names is accepted
    assert load_bench().parse_args(['--configs', 'baseline,ours-compile']).configs == \
        'baseline,ours-compile'


@pytest.mark.parametrize('bad,message', [
    ('1x', "--layouts '1x': expected PxT,... e.g. 1x2,2x1"),
    ('ax1', "--layouts 'ax1': expected PxT,... e.g. 1x2,2x1"),
    ('2', '--layouts: every PxT needs P >= 1 and T >= 1'),
    ('0x2', '--layouts: every PxT needs P >= 1 and T >= 1'),
    ('1x1,2x0', '--layouts: every PxT needs P >= 1 and T >= 1'),
    ('1x2x3', '--layouts: every PxT needs P >= 1 and T >= 1'),
])
def test_bench_rejects_bad_layouts(capsys, bad, message):
    line = exits_with_usage_error(capsys, load_bench().parse_args, ['--layouts', bad])
    assert line.endswith('error: ' + message)


def test_bench_parses_layouts_and_rejects_bad_combinations(capsys):
    bench = load_bench()
    assert bench.parse_args(['--layouts', '1x2,2x1']).layouts == [(1, 2), (2, 1)]
    assert bench.parse_args([]).layouts is None
    for argv, message in (
            (['--layouts', '1x1', '--device', 'cuda'], '--layouts is for --device cpu'),
            (['--amp', 'tf32'], '--amp tf32 is for --device cuda'),
            (['--steps', '0'], 'need --steps >= 1, --runs >= 1 and --warmup >= 0')):
        assert exits_with_usage_error(capsys, bench.parse_args, argv).endswith('error: ' + message)


def test_bench_set_without_a_value_names_the_item():
    bench = load_bench()
    with pytest.raises(SystemExit) as e:
        bench.overrides(bench.parse_args(['--set', 'width']))
    assert e.value.code == "--set wants KEY=VALUE, got 'width'"    # printed, exit status 1


def test_bench_set_overrides_parse_literals():
    bench = load_bench()
    args = bench.parse_args(['--set', 'width=32', '--set', 'dec_blocks=1x1,4m1', '--n_batch', '3'])
    assert bench.overrides(args) == dict(width=32, dec_blocks='1x1,4m1', n_batch=3)


def loss_and_grads(model, x, y):
    model.zero_grad(set_to_none=True)
    torch.manual_seed(1)
    loss = model(x, y)['elbo']
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}


def test_channels_last_model_same_loss_and_gradients():
    H = tiny_hparams()
    torch.manual_seed(0)
    model = VAE(H)
    model_cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
    assert model_cl.encoder.in_conv.weight.is_contiguous(memory_format=torch.channels_last)
    x, y = batch(H)
    loss, grads = loss_and_grads(model, x, y)
    loss_cl, grads_cl = loss_and_grads(model_cl, x, y)
    torch.testing.assert_close(loss_cl, loss, rtol=1e-5, atol=1e-6)
    for name in grads:
        torch.testing.assert_close(grads_cl[name], grads[name], rtol=1e-5, atol=1e-6, msg=name)
    # The random draws do not depend on the memory layout; the prior path stays channels-last.
    with torch.no_grad():
        torch.manual_seed(3)
        z = model.forward_get_latents(x)
        torch.manual_seed(3)
        z_cl = model_cl.forward_get_latents(x)
        torch.manual_seed(4)
        px_z = model.decoder.forward_uncond(3, t=0.7)
        torch.manual_seed(4)
        px_z_cl = model_cl.decoder.forward_uncond(3, t=0.7)
    for a, b in zip(z, z_cl):
        torch.testing.assert_close(b['z'], a['z'], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(px_z_cl, px_z, rtol=1e-5, atol=1e-6)
    assert px_z_cl.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize('layout', [torch.contiguous_format, torch.channels_last])
@pytest.mark.slow
def test_ours_training_step_matches_the_baseline_one(layout):
    """`ours` (build_optimizer's fused AdamW, foreach EMA, optionally channels-last) against the
    baseline (NCHW, plain AdamW, per-parameter EMA): equal up to float rounding after a training
    step. One step, because Adam divides by sqrt(v): where gradients are tiny, later steps amplify
    rounding differences (as between any two AdamW implementations)."""
    H = tiny_hparams(warmup_iters=0, skip_threshold=-1)
    bench = load_bench()
    torch.manual_seed(0)
    model_b = VAE(H)
    ema_b = copy.deepcopy(model_b).requires_grad_(False)
    model = copy.deepcopy(model_b).to(memory_format=layout)
    ema = copy.deepcopy(ema_b).to(memory_format=layout)
    optimizer, _ = train_helpers.build_optimizer(H, model)
    optimizer_b = torch.optim.AdamW(model_b.parameters(), lr=H.lr,
                                    betas=(H.adam_beta1, H.adam_beta2), eps=1e-8, weight_decay=H.wd)
    x, y = batch(H)
    for m, e, opt, ema_fn in ((model, ema, optimizer, train_helpers.update_ema),
                              (model_b, ema_b, optimizer_b, bench.update_ema_per_parameter)):
        m.zero_grad(set_to_none=True)
        torch.manual_seed(1)
        m(x, y)['elbo'].backward()
        torch.nn.utils.clip_grad_norm_(m.parameters(), H.grad_clip)
        opt.step()
        ema_fn(m, e, H.ema_rate)
    assert optimizer.defaults['fused']
    for p, p_b in zip([*model.parameters(), *ema.parameters()],
                      [*model_b.parameters(), *ema_b.parameters()]):
        assert p.dim() != 4 or p.is_contiguous(memory_format=layout)    # the update kept it
        # A first Adam step is lr g / (|g| + eps): where |g| is near eps, the layouts' rounding
        # differences in g (up to 1e-6, as the test above allows) move it by a few percent of lr
        # (measured: 0.7% of one step, on one weight, with oneDNN on an Intel Xeon).
        torch.testing.assert_close(p, p_b, rtol=1e-5, atol=0.025 * H.lr)


def test_keep_freed_memory_applies_on_glibc_and_changes_no_result(monkeypatch):
    H = tiny_hparams()
    torch.manual_seed(0)
    x, y = batch(H)
    torch.manual_seed(2)
    model = VAE(H)
    before = loss_and_grads(model, x, y)
    assert train_helpers.keep_freed_memory() == (platform.libc_ver()[0] == 'glibc')
    after = loss_and_grads(model, x, y)
    assert torch.equal(before[0], after[0])
    assert all(torch.equal(before[1][k], after[1][k]) for k in before[1])
    # without a C library to call (not glibc, or none found), it declines instead of failing
    def no_library(name):
        raise OSError(f'{name}: cannot open shared object file')
    monkeypatch.setattr(train_helpers.ctypes, 'CDLL', no_library)
    assert train_helpers.keep_freed_memory() is False


@pytest.mark.slow
def test_memory_estimates_and_measures_a_step(tmp_path):
    """bench/memory.py on the toy's presets: the meta-device estimate of a step's activations per
    image agrees within a factor of 3 with the CPU's measured peak RSS difference between batch 1
    and a batch whose activations reach 1 GiB (the toy's 2 MB per image vanish in the RSS's noise
    at 256 MiB: measured 0.33x once), and the largest batch per GPU grows with the GPU's memory."""
    memory = load_bench(BENCH.parent / 'memory.py')
    out = tmp_path / 'memory.json'
    memory.main(['--presets', 'mnist16', '--kinds', 'vdvae,stage2', '--measure', 'fp32',
                 '--measure_mib', '1024', '--json', str(out)])
    rows = {r['kind']: r for r in json.loads(out.read_text())['rows']}
    assert rows['stage2']['trained'] < rows['stage2']['params']      # stage 1 frozen
    for row in rows.values():
        estimate = row['activation_bytes_per_image']
        measured = row['measured_fp32']['activation_bytes_per_image']
        assert estimate / 3 < measured < 3 * estimate, (row['kind'], estimate, measured)
        fits = [row['largest_batch'][str(g)] for g in memory.GPU_MEMORY]
        assert fits == sorted(fits) and fits[0] > 0
        assert row['step_bytes'] == row['fixed_bytes'] + row['batch'] * estimate
