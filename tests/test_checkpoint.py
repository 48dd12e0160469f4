"""Loading upstream checkpoint files: model, EMA, apex optimizer state, and every bad input."""
import copy
import os
import pickle

import pytest
import torch

from vdvae import HPARAMS_REGISTRY, VAE, get_hparams, register_preset
from vdvae.checkpoint import (CheckpointError, atomic_save, load_state_dict_file,
                              restore_optimizer, restore_params)
from vdvae.train_helpers import build_optimizer

TINY = dict(width=16, zdim=2, enc_blocks='8x1,8d2,4x1', dec_blocks='4x1,8m4', image_size=8,
            num_mixtures=2)


@pytest.fixture
def tiny_preset():
    register_preset('_tiny_ckpt', TINY, parent='cifar10')
    yield '_tiny_ckpt'
    del HPARAMS_REGISTRY['_tiny_ckpt']


def test_upstream_model_file_with_module_prefix_and_ema_file(tiny8, tmp_path):
    H, model, ref, _ = tiny8
    ddp_style = {'module.' + k: v for k, v in model.state_dict().items()}
    torch.save(ddp_style, tmp_path / 'latest-model.th')
    torch.save(model.state_dict(), tmp_path / 'latest-model-ema.th')
    for name in ('latest-model.th', 'latest-model-ema.th'):
        fresh = restore_params(VAE(H), tmp_path / name)
        for key, value in fresh.state_dict().items():
            assert torch.equal(value, model.state_dict()[key])


@pytest.mark.slow
def test_wrong_architecture_names_keys_and_suggests_preset(tiny_preset, tmp_path):
    torch.save(VAE(get_hparams(tiny_preset)).state_dict(), tmp_path / 'm.th')
    other = VAE(get_hparams('cifar10', **dict(TINY, dec_blocks='4x2,8m4')))
    with pytest.raises(CheckpointError) as e:
        restore_params(other, tmp_path / 'm.th')
    msg = str(e.value)
    assert "missing: decoder.dec_blocks.2.enc.c1.weight" in msg
    assert "--hps _tiny_ckpt" in msg
    narrow = VAE(get_hparams('cifar10', **dict(TINY, zdim=3)))
    with pytest.raises(CheckpointError, match=r'mis-shaped \(file != model\): decoder\.dec_blocks\.0'
                                              r'\.enc\.c4\.weight \(4, 4, 1, 1\) != \(6, 4, 1, 1\)'):
        restore_params(narrow, tmp_path / 'm.th')


@pytest.mark.slow
def test_unexpected_keys_and_no_matching_preset(tmp_path):
    model = VAE(get_hparams('cifar10', **TINY))
    sd = dict(model.state_dict(), **{'decoder.extra.weight': torch.zeros(1)})
    torch.save(sd, tmp_path / 'm.th')
    with pytest.raises(CheckpointError, match=r"1 unexpected: decoder\.extra\.weight.*matches no "
                                              r"registered preset"):
        restore_params(model, tmp_path / 'm.th')


@pytest.mark.parametrize('content,message', [
    (b'', 'cannot read'),
    (b'not a zip or a pickle', 'cannot read'),
    (pickle.dumps([1, 2], protocol=4), 'not a torch file'),
])
def test_corrupt_files(tmp_path, content, message):
    (tmp_path / 'bad.th').write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        load_state_dict_file(tmp_path / 'bad.th')


def test_truncated_file(tmp_path):
    torch.save(VAE(get_hparams('cifar10', **TINY)).state_dict(), tmp_path / 'full.th')
    data = (tmp_path / 'full.th').read_bytes()
    (tmp_path / 'cut.th').write_bytes(data[:len(data) // 2])
    with pytest.raises(CheckpointError, match='corrupt, truncated'):
        load_state_dict_file(tmp_path / 'cut.th')


def test_not_a_state_dict_and_missing_file(tmp_path):
    torch.save([1, 2, 3], tmp_path / 'list.th')
    with pytest.raises(CheckpointError, match='not a model state dict'):
        load_state_dict_file(tmp_path / 'list.th')
    with pytest.raises(CheckpointError, match='does not exist'):
        load_state_dict_file(tmp_path / 'nope.th')


class _Exploit:
    def __reduce__(self):
        return (os.mkdir, (self.target,))


def test_pickle_that_runs_code_is_refused(tmp_path):
    marker = tmp_path / 'pwned'
    exploit = _Exploit()
    exploit.target = str(marker)
    with open(tmp_path / 'evil.th', 'wb') as f:
        pickle.dump({'w': exploit}, f, protocol=2)
    torch.save({'w': exploit}, tmp_path / 'evil_zip.th')
    for name in ('evil.th', 'evil_zip.th'):
        with pytest.raises(CheckpointError, match='refused to load.*GLOBAL posix.mkdir'):
            load_state_dict_file(tmp_path / name)
    assert not marker.exists()


def _apex_style(torch_state):
    """What apex FusedAdam saves: no per-parameter step; step and bias_correction per group."""
    state = copy.deepcopy(torch_state)
    step = None
    for s in state['state'].values():
        step = int(s.pop('step'))
    for group in state['param_groups']:
        group = {k: group[k] for k in ('lr', 'betas', 'eps', 'weight_decay', 'params')}
        group.update(step=step, bias_correction=True)
        state['param_groups'] = [group]
    return state


def test_apex_optimizer_state_converts_and_continues_exactly(tmp_path):
    H = get_hparams('cifar10', **dict(TINY, warmup_iters=0))
    torch.manual_seed(0)
    model = VAE(H)
    optimizer, _ = build_optimizer(H, model)
    x = torch.randn(2, 8, 8, 3)
    y = torch.clamp(x / 3, -1, 1)

    def step(m, opt):
        opt.zero_grad()
        torch.manual_seed(5)
        m(x, y)['elbo'].backward()
        opt.step()
    for _ in range(3):
        step(model, optimizer)
    torch.save(_apex_style(optimizer.state_dict()), tmp_path / 'latest-opt.th')
    assert 'step' not in torch.load(tmp_path / 'latest-opt.th', weights_only=True)['state'][0]

    clone = VAE(H)
    clone.load_state_dict(model.state_dict())
    clone_opt, _ = build_optimizer(H, clone)
    restore_optimizer(clone_opt, tmp_path / 'latest-opt.th')
    assert float(clone_opt.state_dict()['state'][0]['step']) == 3
    step(model, optimizer)
    step(clone, clone_opt)
    for a, b in zip(model.parameters(), clone.parameters()):
        assert torch.equal(a, b)


def test_optimizer_state_from_another_architecture(tmp_path):
    H = get_hparams('cifar10', **TINY)
    model = VAE(H)
    optimizer, _ = build_optimizer(H, model)
    model(torch.zeros(1, 8, 8, 3), torch.zeros(1, 8, 8, 3))['elbo'].backward()
    optimizer.step()
    torch.save(_apex_style(optimizer.state_dict()), tmp_path / 'opt.th')
    H2 = get_hparams('cifar10', **dict(TINY, dec_blocks='4x2,8m4'))
    other_opt, _ = build_optimizer(H2, VAE(H2))
    with pytest.raises(CheckpointError, match='from another architecture'):
        restore_optimizer(other_opt, tmp_path / 'opt.th')
    with pytest.raises(CheckpointError, match='not an optimizer state dict'):
        torch.save(model.state_dict(), tmp_path / 'model.th')
        restore_optimizer(optimizer, tmp_path / 'model.th')


def test_atomic_save_replaces_and_leaves_no_temp_files(tmp_path, monkeypatch):
    target = tmp_path / 'latest-model.th'
    atomic_save({'a': torch.ones(2)}, target)
    atomic_save({'a': torch.zeros(2)}, target)
    assert torch.equal(torch.load(target, weights_only=True)['a'], torch.zeros(2))

    def crash(*args, **kwargs):
        raise KeyboardInterrupt('killed mid-write')
    monkeypatch.setattr(torch, 'save', crash)
    with pytest.raises(KeyboardInterrupt):
        atomic_save({'a': torch.full((2,), 7.0)}, target)
    monkeypatch.undo()
    assert torch.equal(torch.load(target, weights_only=True)['a'], torch.zeros(2))
    assert sorted(os.listdir(tmp_path)) == ['latest-model.th']


def test_checkpoint_set_is_all_old_or_all_new_after_a_crash(tmp_path, monkeypatch):
    from vdvae import checkpoint
    log = tmp_path / 'log.jsonl'
    log.write_text('{"step": 1}\n')
    checkpoint.save_checkpoint_set(tmp_path, {'latest-model.th': {'v': torch.zeros(1)},
                                              'latest-state.th': {'step': 1},
                                              'latest-log.jsonl': str(log)})
    assert (tmp_path / 'latest-log.jsonl').read_text() == '{"step": 1}\n'

    # A crash while the new files are written (before the commit record): the old set survives.
    calls = []

    def crash_on_second(obj, path):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt
        real(obj, path)
    real = checkpoint.atomic_save
    monkeypatch.setattr(checkpoint, 'atomic_save', crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save_checkpoint_set(tmp_path, {'latest-model.th': {'v': torch.ones(1)},
                                                  'latest-state.th': {'step': 2}})
    monkeypatch.undo()
    checkpoint.recover_checkpoint_set(tmp_path)
    assert torch.load(tmp_path / 'latest-state.th', weights_only=True) == {'step': 1}
    assert torch.load(tmp_path / 'latest-model.th', weights_only=True)['v'].item() == 0

    # A crash after the commit record but before all renames: recovery completes the new set.
    checkpoint.atomic_save({'v': torch.ones(1)}, tmp_path / 'latest-model.th.pending')
    checkpoint.atomic_save({'step': 2}, tmp_path / 'latest-state.th.pending')
    os.replace(tmp_path / 'latest-model.th.pending', tmp_path / 'latest-model.th')
    (tmp_path / '.checkpoint-commit.json').write_text('["latest-model.th", "latest-state.th"]')
    checkpoint.recover_checkpoint_set(tmp_path)
    assert torch.load(tmp_path / 'latest-state.th', weights_only=True) == {'step': 2}
    assert torch.load(tmp_path / 'latest-model.th', weights_only=True)['v'].item() == 1
    assert not [p for p in os.listdir(tmp_path) if p.endswith(('.pending', '.json', '.tmp'))]
