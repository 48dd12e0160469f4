"""Every malformed input a user can give, on every surface: one clear `error:` line, a non-zero
exit, no traceback, and no file written, changed or removed (nor code run from a pickle)."""
import os
import pickle
import shutil

import numpy as np
import pytest
import torch

from progcode_ext.codec import __main__ as codec_main
from progcode_ext.codec import container as codec_container
from progcode_ext.experiments import lpips_vs_mse, profile, rd_curve, stages, table1, table2
from progcode_ext.upstream import __main__ as upstream_main
from progcode_ext.upstream import checkout
from progcode_ext.upstream import patcher
from vdvae import __main__ as cli
from vdvae import train
from vdvae.errors import UserError
from vdvae.hps import get_hparams
from vdvae.models import build_model
from vdvae.vae import VAE

pytestmark = pytest.mark.slow          # about 35 s: CI runs it, the fast suite leaves it out
TINY = dict(width=8, zdim=2, num_mixtures=2, enc_blocks='16x1,16d2,8x1,8d2,4x1,4d4,1x1',
            dec_blocks='1x1,4m1,4x1,8m4,8x1,16m8,16x1')
TINY_FLAGS = [a for k, v in TINY.items() for a in (f'--{k}', str(v))]
TRAIN = ['--num_iters', '2', '--iters_per_save', '1', '--quiet', '--num_images_visualize', '2']
OTHER = dict(TINY, width=16)                # the same preset at another width


class RunsCode:
    """Unpickling this writes a marker file: a checkpoint that would run code when loaded."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, 'w'))


@pytest.fixture(scope='module')
def world(tmp_path_factory):
    """A folder of everything the malformed commands are pointed at: a finished run, weights of
    the right and of another architecture, damaged and malicious files."""
    root = tmp_path_factory.mktemp('world')
    runs = root / 'runs'
    assert train.main(['--hps', 'mnist16', *TINY_FLAGS, *TRAIN, '--save_dir', str(runs),
                       '--desc', 'run']) == 0
    assert train.main(['--hps', 'mnist16_stage1', *TINY_FLAGS, *TRAIN, '--save_dir', str(runs),
                       '--desc', 'stage1']) == 0
    files = dict(run=runs / 'run', stage1=runs / 'stage1',
                 ckpt=runs / 'run' / 'latest-model-ema.th', folder=root / 'a_folder',
                 other=root / 'other-arch.th', corrupt=root / 'corrupt.th',
                 truncated=root / 'truncated.th', empty=root / 'empty.th',
                 pickle=root / 'plain-pickle.th', torch_pickle=root / 'torch-pickle.th',
                 marker=root / 'MARKER', text=root / 'notes.txt', log=root / 'log.jsonl')
    files['folder'].mkdir()
    torch.save(VAE(get_hparams('mnist16', **OTHER)).state_dict(), files['other'])
    files['corrupt'].write_bytes(b'this is not a checkpoint' * 10)
    whole = files['ckpt'].read_bytes()
    files['truncated'].write_bytes(whole[:len(whole) // 2])
    files['empty'].write_bytes(b'')
    with open(files['pickle'], 'wb') as f:
        pickle.dump({'weight': RunsCode(str(files['marker']))}, f)
    torch.save({'weight': RunsCode(str(files['marker']))}, files['torch_pickle'])
    files['text'].write_text('hello\n')
    # a copy of the run whose state file is truncated (for --resume)
    shutil.copytree(files['run'], runs / 'damaged')
    state = runs / 'damaged' / 'latest-state.th'
    state.write_bytes(state.read_bytes()[:100])
    files['damaged'] = runs / 'damaged'
    files.update(root=root, runs=runs)
    files.update(codec_files(root, runs))
    return files


def codec_files(root, runs):
    """A two-stage chain, a file it compressed, that file damaged in each way, and images of the
    right and the wrong shape."""
    from progcode_ext.codec.files import FileCodec
    from progcode_ext.codec.model import load_model
    assert train.main(['--hps', 'mnist16_stage2', *TINY_FLAGS, *TRAIN, '--save_dir', str(runs),
                       '--desc', 'stage2', '--stage1_path', str(runs / 'stage1')]) == 0
    images = np.random.default_rng(0).integers(0, 256, (3, 16, 16, 1), dtype=np.uint8)
    data, info = FileCodec(load_model(runs / 'stage2')[1]).compress(images)
    end1 = info['header_bytes'] + info['chunk_bytes'][0]           # the end of chunk 1
    files = {name: root / f'{name}.pgc' for name in (
        'pgc', 'pgc_corrupt', 'pgc_mid_chunk', 'pgc_header_only', 'pgc_trailing', 'pgc_version')}
    files['pgc'].write_bytes(data)
    corrupt = bytearray(data)
    corrupt[end1 + 20] ^= 0xFF                                      # inside chunk 2
    files['pgc_corrupt'].write_bytes(bytes(corrupt))
    files['pgc_mid_chunk'].write_bytes(data[:end1 + 20])
    files['pgc_header_only'].write_bytes(data[:info['header_bytes']])
    files['pgc_trailing'].write_bytes(data + b'more')
    at = len(codec_container.MAGIC)
    files['pgc_version'].write_bytes(data[:at] + bytes([codec_container.VERSION + 1])
                                     + data[at + 1:])
    files.update(stage2=runs / 'stage2', npy=root / 'images.npy', npy_8=root / 'wrong-shape.npy',
                 npy_float=root / 'floats.npy', png_rgb=root / 'rgb.png')
    np.save(files['npy'], images)
    np.save(files['npy_8'], images[:, :8, :8])
    np.save(files['npy_float'], images.astype(np.float32))
    import imageio.v3 as iio
    iio.imwrite(files['png_rgb'], np.zeros((16, 16, 3), np.uint8))
    return files


def snapshot(root):
    """{relative path: bytes} of every file under root (folders as None)."""
    out = {}
    for folder, dirs, names in os.walk(root):
        for d in dirs:
            out[os.path.relpath(os.path.join(folder, d), root)] = None
        for name in names:
            path = os.path.join(folder, name)
            with open(path, 'rb') as f:
                out[os.path.relpath(path, root)] = f.read()
    return out


def fails_cleanly(main, argv, world, capsys, must_name):
    """Run `main(argv)`; it must exit non-zero with one `error:` line naming `must_name` (a
    substring), no traceback, and the world untouched."""
    before = snapshot(world['root'])
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as e:                 # argparse's own errors
        code = e.code
    err = capsys.readouterr().err
    assert code == 2, f'exit code {code} for {argv}'          # vdvae.errors.exit_status's
    lines = [line for line in err.splitlines() if 'error:' in line]
    assert len(lines) == 1, err
    assert 'Traceback' not in err
    assert must_name.lower() in lines[0].lower(), (must_name, lines[0])
    assert snapshot(world['root']) == before, 'files changed'
    assert not os.path.exists(world['marker']), 'a pickle ran code'
    return lines[0]


# ------------------------------------------------------------------------------------------------
# train.py

def train_argv(world, *args, preset='mnist16', desc='new'):
    return ['--hps', preset, *TINY_FLAGS, *TRAIN, '--save_dir', str(world['runs']), '--desc', desc,
            *args]


TRAIN_CASES = [
    # (id, extra flags, what the message names); paths are keys of `world` in braces
    ('n_batch 0', ['--n_batch', '0'], '--n_batch'),
    ('n_batch -4', ['--n_batch', '-4'], '--n_batch'),
    ('width 0', ['--width', '0'], '--width'),
    ('width -16', ['--width', '-16'], '--width'),
    ('zdim 0', ['--zdim', '0'], '--zdim'),
    ('iters_per_save 0', ['--iters_per_save', '0'], '--iters_per_save'),
    ('iters_per_print 0', ['--iters_per_print', '0'], '--iters_per_print'),
    ('iters_per_images 0', ['--iters_per_images', '0'], '--iters_per_images'),
    ('iters_per_ckpt 0', ['--iters_per_ckpt', '0'], '--iters_per_ckpt'),
    ('epochs_per_eval 0', ['--epochs_per_eval', '0'], '--epochs_per_eval'),
    ('num_epochs 0', ['--num_epochs', '0'], '--num_epochs'),
    ('num_iters 0', ['--num_iters', '0'], '--num_iters'),
    ('num_iters -5', ['--num_iters', '-5'], '--num_iters'),
    ('lr 0', ['--lr', '0'], '--lr'),
    ('lr -1e-3', ['--lr', '-1e-3'], '--lr'),
    ('lr nan', ['--lr', 'nan'], '--lr'),
    ('ema_rate 1.5', ['--ema_rate', '1.5'], '--ema_rate'),
    ('ema_rate -0.5', ['--ema_rate', '-0.5'], '--ema_rate'),
    ('ema_rate 1', ['--ema_rate', '1'], '--ema_rate'),
    ('grad_clip 0', ['--grad_clip', '0'], '--grad_clip'),
    ('skip_threshold 0', ['--skip_threshold', '0'], '--skip_threshold'),
    ('warmup_iters -1', ['--warmup_iters', '-1'], '--warmup_iters'),
    ('adam_beta1 1', ['--adam_beta1', '1'], '--adam_beta1'),
    ('adam_beta2 -0.1', ['--adam_beta2', '-0.1'], '--adam_beta2'),
    ('wd -0.01', ['--wd', '-0.01'], '--wd'),
    ('bottleneck_multiple 0', ['--bottleneck_multiple', '0'], '--bottleneck_multiple'),
    ('num_mixtures 0', ['--num_mixtures', '0'], '--num_mixtures'),
    ('image_channels 2', ['--image_channels', '2'], 'image_channels'),
    ('image_size 0', ['--image_size', '0'], '--image_size'),
    ('num_images_visualize 0', ['--num_images_visualize', '0'], '--num_images_visualize'),
    ('num_variables_visualize -1', ['--num_variables_visualize', '-1'],
     '--num_variables_visualize'),
    ('num_temperatures_visualize 5', ['--num_temperatures_visualize', '5'],
     '--num_temperatures_visualize'),
    ('max_consecutive_skips 0', ['--max_consecutive_skips', '0'], '--max_consecutive_skips'),
    ('collective_timeout 0', ['--collective_timeout', '0'], '--collective_timeout'),
    ('custom_width_str', ['--custom_width_str', '16:abc'], 'custom_width_str'),
    ('progressive_res 5', ['--progressive_res', '5'], '--progressive_res'),
    ('progressive_res 0', ['--progressive_res', '0'], '--progressive_res'),
    ('progressive_res 32', ['--progressive_res', '32'], '--progressive_res'),
    ('eta_lr 0', ['--eta_lr', '0'], '--eta_lr'),
    ('eta_ema_rate 1', ['--eta_ema_rate', '1'], '--eta_ema_rate'),
    ('eta_lr_decay 0', ['--eta_lr_decay', '0'], '--eta_lr_decay'),
    ('eta_init 1.5', ['--eta_init', '1.5'], '--eta_init'),
    ('distortion_target 0', ['--distortion_target', '0'], '--distortion_target'),
    ('distortion_target -0.1', ['--distortion_target', '-0.1'], '--distortion_target'),
    ('rate_target -1', ['--rate_target', '-1'], '--rate_target'),
    ('bad dec_blocks', ['--dec_blocks', '1x1,4m1,4xx'], 'dec_blocks'),
    ('bad enc_blocks', ['--enc_blocks', '16x1,16d3'], 'enc_blocks'),
    ('unknown preset', ['--hps', 'mnist16,nosuch'], 'nosuch'),
    ('unknown model', ['--model', 'nosuch'], 'nosuch'),
    ('unknown dataset', ['--dataset', 'nosuch'], 'nosuch'),
    ('seed not a number', ['--seed', 'abc'], '--seed'),
    ('amp choice', ['--amp', 'fp8'], '--amp'),
    ('training choice', ['--training', 'sideways'], '--training'),
    ('restore_path missing', ['--restore_path', '{root}/missing.th'], 'missing.th'),
    ('restore_path folder', ['--restore_path', '{folder}'], 'a folder'),
    ('restore_path corrupt', ['--restore_path', '{corrupt}'], 'corrupt.th'),
    ('restore_path truncated', ['--restore_path', '{truncated}'], 'truncated.th'),
    ('restore_path empty', ['--restore_path', '{empty}'], 'empty.th'),
    ('restore_path plain pickle', ['--restore_path', '{pickle}'], 'could run code'),
    ('restore_path torch pickle', ['--restore_path', '{torch_pickle}'], 'could run code'),
    ('restore_path text file', ['--restore_path', '{text}'], 'notes.txt'),
    ('restore_path other architecture', ['--restore_path', '{other}'], 'other-arch.th'),
    ('restore_ema_path missing', ['--restore_ema_path', '{root}/missing.th'], 'missing.th'),
    ('restore_ema_path other architecture', ['--restore_ema_path', '{other}'], 'other-arch.th'),
    ('restore_optimizer_path corrupt', ['--restore_optimizer_path', '{corrupt}'], 'corrupt.th'),
    ('restore_optimizer_path weights', ['--restore_optimizer_path', '{ckpt}'], 'optimizer'),
    ('restore_log_path missing', ['--restore_log_path', '{root}/missing.jsonl'], 'missing.jsonl'),
    ('save_dir is a file', ['--save_dir', '{text}'], 'notes.txt'),
]


def fill(args, world):
    return [a.format(**{k: str(v) for k, v in world.items()}) for a in args]


@pytest.mark.parametrize('case', TRAIN_CASES, ids=[c[0] for c in TRAIN_CASES])
def test_train_flags(case, world, capsys):
    _, args, name = case
    preset = ('mnist16_stage1' if any(a.startswith(('--eta', '--distortion')) for a in args) else
              'mnist16_masked' if any(a.startswith(('--rate_target', '--progressive'))
                                      for a in args) else 'mnist16')
    extra = ['--encoder_path', str(world['ckpt'])] if preset == 'mnist16_masked' else []
    fails_cleanly(train.main, train_argv(world, *fill(args, world), *extra, preset=preset), world,
                  capsys, name)


RUN_CASES = [
    ('resume without a run', dict(desc='nothing', args=['--resume']), 'no checkpoint'),
    ('resume with a truncated state', dict(desc='damaged', args=['--resume']), 'latest-state.th'),
    ('resume another architecture', dict(desc='run', args=['--resume', '--width', '16']),
     'width'),
    ('a run is there', dict(desc='run', args=[]), 'already holds a run'),
    ('overwrite with a bad flag', dict(desc='run', args=['--overwrite', '--lr', '0']), '--lr'),
    ('overwrite with bad weights', dict(desc='run', args=['--overwrite', '--restore_path',
                                                           '{corrupt}']), 'corrupt.th'),
    ('stage2 without stage1', dict(preset='mnist16_stage2', args=[]), '--stage1_path'),
    ('stage2 stage1 missing', dict(preset='mnist16_stage2', args=['--stage1_path',
                                                                  '{root}/nothing']), 'nothing'),
    ('stage2 stage1 of a VDVAE', dict(preset='mnist16_stage2', args=['--stage1_path', '{run}']),
     'latest-model-ema.th'),
    ('stages targets increase', dict(preset='mnist16_stage3', args=['--distortion_targets',
                                                                    '0.01,0.02']),
     '--distortion_targets'),
    ('stages widths per stage', dict(preset='mnist16_stage3', args=['--stage_widths', '8,8']),
     '--stage_widths'),
    ('stages path missing', dict(preset='mnist16_stage3', args=['--stage_paths',
                                                                '{root}/nothing']), 'nothing'),
    ('stages path of a VDVAE', dict(preset='mnist16_stage3', args=['--stage_paths', '{run}']),
     'latest-model-ema.th'),
    ('stages conventional with paths', dict(preset='mnist16_stage3_conventional',
                                            args=['--stage_paths', '{run}']), '--stage_paths'),
    ('masked without encoder', dict(preset='mnist16_masked', args=[]), '--encoder_path'),
    ('masked encoder other arch', dict(preset='mnist16_masked', args=['--encoder_path',
                                                                      '{other}']), 'other-arch'),
    ('masked encoder pickle', dict(preset='mnist16_masked', args=['--encoder_path', '{pickle}']),
     'could run code'),
    ('imagefolder missing', dict(args=['--dataset', 'imagefolder', '--data_root',
                                       '{root}/no-images']), 'no-images'),
    ('svhn data missing', dict(args=['--dataset', 'svhn', '--image_size', '16', '--data_root',
                                     '{root}/no-svhn']), 'no-svhn'),
]


@pytest.mark.parametrize('case', RUN_CASES, ids=[c[0] for c in RUN_CASES])
def test_train_runs_paths_and_data(case, world, capsys):
    _, spec, name = case
    argv = train_argv(world, *fill(spec['args'], world), preset=spec.get('preset', 'mnist16'),
                      desc=spec.get('desc', 'new'))
    fails_cleanly(train.main, argv, world, capsys, name)


def test_a_failed_start_does_not_block_its_retry(world, capsys, tmp_path):
    argv = ['--hps', 'mnist16', *TINY_FLAGS, *TRAIN, '--save_dir', str(tmp_path), '--desc', 'x']
    assert train.main([*argv, '--restore_path', str(world['corrupt'])]) == 2
    assert not os.path.exists(tmp_path / 'x')              # nothing was started
    assert train.main(argv) == 0                           # the corrected command just works


# ------------------------------------------------------------------------------------------------
# python -m vdvae sample | summary

SAMPLE_CASES = [
    ('n 0', ['--n', '0'], '--n'),
    ('n -3', ['--n', '-3'], '--n'),
    ('ncol -1', ['--ncol', '-1'], '--ncol'),
    ('t negative', ['--t', '-1'], '--t'),
    ('t not a number', ['--t', 'warm'], '--t'),
    ('t wrong count', ['--t', '0.1,0.2'], '--t'),
    ('checkpoint missing', ['--restore_ema_path', '{root}/missing.th'], 'missing.th'),
    ('checkpoint folder', ['--restore_ema_path', '{folder}'], 'a folder'),
    ('checkpoint other architecture', ['--restore_ema_path', '{other}'], 'other-arch.th'),
    ('checkpoint pickle', ['--restore_ema_path', '{pickle}'], 'could run code'),
    ('out under a file', ['--out', '{text}/s.png'], 'notes.txt'),
    ('out is a folder', ['--out', '{folder}'], 'a folder'),
    ('width 0', ['--width', '0'], '--width'),
]


@pytest.mark.parametrize('case', SAMPLE_CASES, ids=[c[0] for c in SAMPLE_CASES])
def test_sample_command(case, world, capsys):
    _, args, name = case
    argv = ['sample', '--hps', 'mnist16', *TINY_FLAGS, '--out', str(world['root'] / 's.png')]
    fails_cleanly(cli.main, [*argv, *fill(args, world)], world, capsys, name)


SUMMARY_CASES = [
    ('unknown preset', ['--hps', 'nosuch'], 'nosuch'),
    ('bad dec_blocks', ['--hps', 'mnist16', '--dec_blocks', '1x1,4m3'], 'dec_blocks'),
    ('zdim 0', ['--hps', 'mnist16', '--zdim', '0'], '--zdim'),
    ('no command', [], 'command'),
]


@pytest.mark.parametrize('case', SUMMARY_CASES, ids=[c[0] for c in SUMMARY_CASES])
def test_summary_command(case, world, capsys):
    _, args, name = case
    fails_cleanly(cli.main, ['summary', *args] if args else [], world, capsys, name)


# ------------------------------------------------------------------------------------------------
# The experiments: every input checked before the first stage trains

def experiment_argv(world, *args):
    return ['--hps', 'mnist16', '--out', str(world['root'] / 'exp-out'), '--steps', '5',
            '--train_flags', ' '.join(TINY_FLAGS), *args]


EXPERIMENT_CASES = [
    ('table1 steps 2', table1, ['--steps', '2'], '--steps'),
    ('table1 jobs 0', table1, ['--jobs', '0'], '--jobs'),
    ('table1 seeds', table1, ['--seeds', 'a,b'], '--seeds'),
    ('table1 seeds twice', table1, ['--seeds', '1,1'], '--seeds'),
    ('table1 checkpoint missing', table1, ['--checkpoint', '{root}/missing.th'], 'missing.th'),
    ('table1 checkpoint other arch', table1, ['--checkpoint', '{other}'], 'other-arch.th'),
    ('table1 checkpoint pickle', table1, ['--checkpoint', '{pickle}'], 'could run code'),
    ('table1 bad train_flags', table1, ['--train_flags', '--lr 0'], '--lr'),
    ('table1 unknown preset', table1, ['--hps', 'nosuch'], 'nosuch'),
    ('rd_curve steps -1', rd_curve, ['--steps', '-1'], '--steps'),
    ('rd_curve targets text', rd_curve, ['--targets', 'abc'], '--targets'),
    ('rd_curve targets negative', rd_curve, ['--targets', '0.01,-0.1'], '--targets'),
    ('rd_curve n_eval negative', rd_curve, ['--n_eval', '-1'], '--n_eval'),
    ('lpips_vs_mse weights missing', lpips_vs_mse, ['--lpips_weights', '{root}/missing.pth'],
     'lpips'),
    ('lpips_vs_mse weights corrupt', lpips_vs_mse, ['--lpips_weights', '{corrupt}'], 'lpips'),
    ('table2 fid weights missing', table2, ['--fid_weights', '{root}/missing.pth'], 'fid'),
    ('table2 fid weights corrupt', table2, ['--fid_weights', '{corrupt}'], 'fid'),
    ('table2 n_samples 0', table2, ['--n_samples', '0'], '--n_samples'),
    ('table2 distortion target 0', table2, ['--distortion_target', '0'], '--distortion_target'),
    ('table2 targets text', table2, ['--targets', '0.1,x'], '--targets'),
    ('table2 lr_decay_iters negative', table2, ['--train_flags',
                                                ' '.join(TINY_FLAGS) + ' --lr_decay_iters -1'],
     '--lr_decay_iters'),
    ('profile checkpoint missing', profile, ['--checkpoint', '{root}/missing.th'], 'missing.th'),
    ('profile checkpoint folder', profile, ['--checkpoint', '{folder}'], 'a folder'),
    ('profile checkpoint other arch', profile, ['--checkpoint', '{other}'], 'other-arch.th'),
    ('profile dataset missing', profile, ['--checkpoint', '{ckpt}', '--train_flags',
                                          ' '.join(TINY_FLAGS) + ' --dataset imagefolder '
                                          '--data_root {root}/no-images'], 'no-images'),
    ('table1 dataset missing', table1, ['--train_flags', ' '.join(TINY_FLAGS) + ' --dataset svhn '
                                        '--image_size 16 --data_root {root}/no-svhn'], 'no-svhn'),
    ('table2 out is a file', table2, ['--out', '{text}'], 'notes.txt'),
    ('stages one target', stages, ['--distortion_targets', '0.01'], '--distortion_targets'),
    ('stages targets text', stages, ['--distortion_targets', 'a,b'], '--distortion_targets'),
]


@pytest.mark.parametrize('case', EXPERIMENT_CASES, ids=[c[0] for c in EXPERIMENT_CASES])
def test_experiments_check_inputs_before_training(case, world, capsys):
    _, module, args, name = case
    fails_cleanly(module.main, experiment_argv(world, *fill(args, world)), world, capsys, name)


# ------------------------------------------------------------------------------------------------
# python -m progcode_ext.codec compress | decompress

def decompress_argv(file, *args):
    return ['decompress', file, '--run', '{stage2}', '-o', '{root}/decoded', *args]


def compress_argv(*images, out='{root}/new.pgc', run='{stage2}'):
    return ['compress', '--run', run, *images, '-o', out]


CODEC_CASES = [
    ('file of another model', decompress_argv('{pgc}', '--checkpoint',
                                              '{stage2}/latest-model.th'), 'another model'),
    ('file of another architecture', decompress_argv('{pgc}', '--run', '{run}'), 'another model'),
    ('corrupted chunk', decompress_argv('{pgc_corrupt}'), 'chunk 2 is corrupted'),
    ('truncated mid-chunk', decompress_argv('{pgc_mid_chunk}'), 'chunk 2 is truncated'),
    ('header only', decompress_argv('{pgc_header_only}'), 'no chunk'),
    ('bytes after the last chunk', decompress_argv('{pgc_trailing}'), 'after its last chunk'),
    ('wrong magic', decompress_argv('{text}'), 'not a progcode compressed file'),
    ('another format version', decompress_argv('{pgc_version}'), 'format version'),
    ('missing file', decompress_argv('{root}/missing.pgc'), 'missing.pgc'),
    ('file is a folder', decompress_argv('{folder}'), 'a folder'),
    ('stages beyond the file', decompress_argv('{pgc}', '--stages', '3'), '--stages 3'),
    ('stages beyond a cut file', decompress_argv('{pgc_mid_chunk}', '--stages', '2'),
     'truncated'),
    ('stages 0', decompress_argv('{pgc}', '--stages', '0'), '--stages'),
    ('out is a file', decompress_argv('{pgc}', '-o', '{text}'), 'notes.txt'),
    ('run missing', decompress_argv('{pgc}', '--run', '{root}/no-run'), 'no-run'),
    ('run without hparams', decompress_argv('{pgc}', '--run', '{folder}'), 'hparams.json'),
    ('checkpoint of another architecture', decompress_argv('{pgc}', '--checkpoint', '{other}'),
     'other-arch.th'),
    ('image of the wrong shape', compress_argv('{npy_8}'), 'wrong-shape.npy'),
    ('image with the wrong channels', compress_argv('{npy}', '{png_rgb}'), 'rgb.png'),
    ('image not uint8', compress_argv('{npy_float}'), 'floats.npy'),
    ('image missing', compress_argv('{root}/missing.png'), 'missing.png'),
    ('image not an image', compress_argv('{text}'), 'notes.txt'),
    ('compress out is a folder', compress_argv('{npy}', out='{folder}'), 'a folder'),
    ('compress run missing', compress_argv('{npy}', run='{root}/no-run'), 'no-run'),
    ('no command', [], 'command'),
]


@pytest.mark.parametrize('case', CODEC_CASES, ids=[c[0] for c in CODEC_CASES])
def test_codec_command(case, world, capsys):
    _, args, name = case
    fails_cleanly(codec_main.main, fill(args, world), world, capsys, name)


# ------------------------------------------------------------------------------------------------
# The plug-in mode

PLUGIN_CASES = [
    ('patcher missing folder', patcher.main, ['apply', '{root}/no-checkout'], 'no-checkout'),
    ('patcher not a checkout', patcher.main, ['apply', '{folder}'], 'a_folder'),
    ('patcher no checkout given', patcher.main, ['revert'], 'checkout'),
    ('patcher unknown action', patcher.main, ['frobnicate', '{folder}'], 'action'),
    ('upstream missing root', upstream_main.main, ['--vdvae_root', '{root}/no-checkout',
                                                   '--hps', 'svhn_stage1'], 'no-checkout'),
    ('upstream root is a file', upstream_main.main, ['--vdvae_root', '{text}'], 'checkout'),
]


@pytest.mark.parametrize('case', PLUGIN_CASES, ids=[c[0] for c in PLUGIN_CASES])
def test_plugin_mode(case, world, capsys, monkeypatch):
    _, main, args, name = case
    monkeypatch.delenv('VDVAE_ROOT', raising=False)
    # 'no checkout given' means the empty submodule of a fresh clone, also where it is filled
    monkeypatch.setattr(checkout, 'SUBMODULE', str(world['folder']))
    fails_cleanly(main, fill(args, world), world, capsys, name)


# ------------------------------------------------------------------------------------------------
# The API

def test_api_temperature_lists_must_have_one_per_block():
    H = get_hparams('mnist16', **TINY)
    model = VAE(H)
    n_blocks = len(model.decoder.dec_blocks)
    for t in ([0.5] * 3, [0.5] * 30, torch.full((n_blocks + 1,), 0.5)):
        with pytest.raises(UserError, match=f'the decoder has {n_blocks} blocks'):
            model.decoder.forward_uncond(2, t=t)
        with pytest.raises(UserError, match=f'the decoder has {n_blocks} blocks'):
            model.sample(2, t=t)
    assert model.sample(2, t=[0.5] * n_blocks).shape == (2, 16, 16, 1)


@pytest.mark.parametrize('overrides, name', [
    (dict(n_batch=0), 'n_batch'), (dict(lr=0.0), 'lr'), (dict(ema_rate=1.5), 'ema_rate'),
    (dict(width=-1), 'width'), (dict(progressive_res=5), 'progressive_res')])
def test_api_hparams_are_checked_too(overrides, name):
    with pytest.raises(UserError, match=name):
        get_hparams('mnist16', **overrides)


def test_api_restore_params_names_a_folder(world):
    with pytest.raises(UserError, match='a folder'):
        from vdvae.checkpoint import restore_params
        restore_params(build_model(get_hparams('mnist16', **TINY)), world['folder'])


def test_every_surface_has_many_cases():
    counts = dict(train=len(TRAIN_CASES) + len(RUN_CASES) + 1,
                  sample_summary=len(SAMPLE_CASES) + len(SUMMARY_CASES),
                  experiments=len(EXPERIMENT_CASES), plugin=len(PLUGIN_CASES), api=3 + 5 + 1,
                  codec=len(CODEC_CASES))
    assert sum(counts.values()) >= 85 and counts['codec'] >= 20
