"""python -m vdvae: sample grids and summaries, with upstream's flags."""
import imageio.v2 as imageio
import numpy as np
import pytest
import torch

from vdvae.__main__ import main
from vdvae.images import tile_images

TINY8 = ['--width', '32', '--zdim', '4', '--num_mixtures', '2', '--enc_blocks', '8x3',
         '--dec_blocks', '8x3', '--image_size', '8']


def test_sample_from_upstream_weights_reproduces_upstream_samples(reference_dir, tmp_path):
    ref = torch.load(reference_dir / 'upstream_tiny8' / 'reference.pt', weights_only=True)
    out = tmp_path / 'grid.png'
    rc = main(['sample', *TINY8, '--restore_ema_path',
               str(reference_dir / 'upstream_tiny8' / 'model.th'),
               '--n', '4', '--t', '1.0', '--seed', '7', '--ncol', '4', '--out', str(out)])
    assert rc == 0
    labelled = imageio.imread(out)
    expected = tile_images(ref['uncond']['t_1.0']['samples_uint8'].numpy(), 4)
    assert expected.shape == (128, 4 * 128 + 3 * 2, 3)                  # 8x8 cells upscaled 16x
    grid = labelled[-128:, -expected.shape[1]:]        # below the caption, right of the titles
    assert labelled.shape[0] > 128 and labelled.shape[1] > expected.shape[1]
    diff = np.abs(grid.astype(int) - expected.astype(int))
    assert diff.max() <= 1 and (diff > 0).sum() <= 3


def test_sample_random_init_says_so_and_accepts_per_block_t(tmp_path, capsys):
    out = tmp_path / 'sub' / 'grid.png'
    assert main(['sample', *TINY8, '--n', '3', '--t', '0.1,0.5,0.9', '--out', str(out)]) == 0
    assert 'RANDOMLY INITIALISED' in capsys.readouterr().err
    labelled = imageio.imread(out)                         # 2x2 grid, one blank cell, labelled
    assert labelled.shape[0] > 258 and labelled.shape[1] > 258 and labelled.shape[2] == 3
    assert (labelled[-128:, -128:] == 0).all()


def test_one_channel_grid(tmp_path):
    out = tmp_path / 'g.png'
    assert main(['sample', *TINY8, '--image_channels', '1', '--n', '2', '--out', str(out)]) == 0
    labelled = imageio.imread(out)                          # 1 x 2 cells, labelled
    assert labelled.ndim == 2 and labelled.shape[0] > 128 and labelled.shape[1] > 258


@pytest.mark.parametrize('args,message', [
    (['--hps', 'cifar11'], "unknown preset 'cifar11'"),
    (['--restore_ema_path', '/does/not/exist.th'], 'does not exist'),
    (['--t', '0.1,0.2'], '2 temperatures, but the decoder has 3 blocks'),
    (['--n', '0'], '--n must be at least 1'),
    (['--dec_blocks', '8x3,8d2'], "token '8d2' has a \"d\""),
])
def test_bad_input_is_one_clear_error(tmp_path, capsys, args, message):
    out = tmp_path / 'grid.png'
    out.write_bytes(b'keep me')
    assert main(['sample', *TINY8, *args, '--out', str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith('error: ') and message in err and 'Traceback' not in err
    assert out.read_bytes() == b'keep me'


def test_negative_temperature_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(['sample', *TINY8, '--t', '-1'])
    assert e.value.code == 2
    assert capsys.readouterr().err.endswith(
        "error: argument --t: temperatures must be >= 0, got '-1'\n")


def test_summary(capsys):
    assert main(['summary', '--hps', 'cifar10']) == 0
    out = capsys.readouterr().out
    assert '39,145,700 parameters' in out and '43 decoder blocks' in out


@pytest.mark.parametrize('preset', ['mnist5k_stage1', 'mnist5k_conventional'])
def test_sample_from_the_papers_models(tmp_path, preset):
    out = tmp_path / 'g.png'
    assert main(['sample', '--hps', preset, '--width', '16', '--zdim', '4', '--n', '2',
                 '--out', str(out)]) == 0
    labelled = imageio.imread(out)                          # 1 x 2 cells, labelled
    assert labelled.ndim == 2 and labelled.shape[0] > 128 and labelled.shape[1] > 258
