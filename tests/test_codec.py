"""The progressive codec's file and command line (progcode_ext/codec): the container frames chunks
so that a prefix cut after a whole chunk decodes and any other damage is one CodecError; with real
(tiny, briefly trained) chains of two and three stages and a plain VDVAE, compress -> decompress
is bit-exact on the whole validation split, each prefix decodes to its x_hat_k, and a fresh
process with another thread count decodes the same bytes. (Bad command lines:
tests/test_bad_inputs.py.)"""
import os
import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from progcode_ext.codec import container
from progcode_ext.codec.__main__ import main
from progcode_ext.codec.container import CodecError, pack, unpack, weights_hash
from progcode_ext.codec.files import FileCodec
from progcode_ext.codec.model import load_model
from vdvae import train
from vdvae.data import load_splits
from vdvae.hps import get_hparams
from vdvae.vae import VAE

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(width=8, zdim=2, num_mixtures=2, enc_blocks='16x1,16d2,8x1,8d2,4x1,4d4,1x1',
            dec_blocks='1x1,4m1,4x1,8m4,8x1,16m8,16x1')
TINY_FLAGS = [a for k, v in TINY.items() for a in (f'--{k}', str(v))]
TRAIN = ['--num_iters', '3', '--iters_per_save', '3', '--quiet', '--num_images_visualize', '2',
         '--epochs_per_eval', '100000', '--iters_per_images', '100000']


# ------------------------------------------------------------------------------------------------
# The container, with made-up chunks

HEADER = dict(image_shape=[4, 4, 1], n_images=2, n_chunks=3, bin_width=0.5,
              weights_sha256='ab' * 32, determinism='test')
CHUNKS = [b'first chunk', b'', b'the third and last chunk']


def test_a_file_reads_back_and_each_whole_chunk_prefix_is_valid():
    data = pack(HEADER, CHUNKS)
    assert unpack(data) == (HEADER, CHUNKS)
    end = container.header_size(HEADER)
    for k, chunk in enumerate(CHUNKS, 1):
        end += container.FRAME_SIZE + len(chunk)
        assert unpack(data[:end]) == (HEADER, CHUNKS[:k])


def test_every_other_cut_is_one_codec_error():
    data = pack(HEADER, CHUNKS)
    ends, end = set(), container.header_size(HEADER)
    for chunk in CHUNKS:
        end += container.FRAME_SIZE + len(chunk)
        ends.add(end)
    for cut in range(len(data)):
        if cut in ends:
            continue
        with pytest.raises(CodecError):
            unpack(data[:cut])


def test_every_flipped_byte_is_one_codec_error():
    data = pack(HEADER, CHUNKS)
    for at in range(len(data)):
        damaged = bytearray(data)
        damaged[at] ^= 0x41
        with pytest.raises(CodecError):
            unpack(bytes(damaged))
    with pytest.raises(CodecError, match='after its last chunk'):
        unpack(data + b'\0')


def test_the_weights_hash_sees_every_weight_but_not_the_dtype():
    torch.manual_seed(0)
    model = VAE(get_hparams('mnist16', **TINY))
    h = weights_hash(model)
    assert weights_hash(model.double()) == h              # the coder runs the model in float64
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] += 1e-12
    assert weights_hash(model) != h


class FakeCoder:
    """The coder's API without the model: chunk k holds the images' top 2k bits (its x_hat), the
    last one the images."""
    n_chunks, image_shape, bin_width = 3, (4, 4, 1), 0.5

    @staticmethod
    def x_hat(images, k):
        return (images >> (8 - 2 * k)) << (8 - 2 * k)

    def encode(self, images):
        chunks = [self.x_hat(images, k).tobytes() for k in (1, 2)] + [images.tobytes()]
        return chunks, dict(ideal_bits=[8.0 * len(c) for c in chunks], latent_bits=[0.0] * 3,
                            pixel_bits=8.0 * images.size,
                            x_hats=[self.x_hat(images, k) for k in (1, 2)])

    def decode(self, chunks, n):
        arrays = [np.frombuffer(c, np.uint8).reshape(n, *self.image_shape) for c in chunks]
        return dict(x_hats=arrays[:2], images=arrays[2] if len(arrays) == 3 else None)


def test_the_file_codec_ties_a_file_to_its_model():
    torch.manual_seed(0)
    model = VAE(get_hparams('mnist16', **TINY))
    codec = FileCodec(model, FakeCoder())
    images = np.random.default_rng(0).integers(0, 256, (2, 4, 4, 1), dtype=np.uint8)
    data, info = codec.compress(images)
    assert info['header_bytes'] + sum(info['chunk_bytes']) == len(data)
    whole = codec.decompress(data)
    assert np.array_equal(whole['images'], images) and whole['chunks'] == 3
    first = codec.decompress(data, stages=1)
    assert first['images'] is None and np.array_equal(first['x_hats'][0], info['x_hats'][0])
    with pytest.raises(CodecError, match='--stages 4'):
        codec.decompress(data, stages=4)
    with pytest.raises(CodecError, match='shape'):
        codec.compress(images[:, :2])
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] += 1
    with pytest.raises(CodecError, match='another model'):
        FileCodec(model, FakeCoder()).decompress(data)


# ------------------------------------------------------------------------------------------------
# Real models through the command line

def trained(root, desc, preset, *args):
    assert train.main(['--hps', preset, *TINY_FLAGS, *TRAIN, '--save_dir', str(root),
                       '--desc', desc, *args]) == 0
    return root / desc


@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    """{name: run folder}: a two-stage chain, a three-stage chain and a VDVAE, 3 steps each."""
    root = tmp_path_factory.mktemp('codec-runs')
    s1 = trained(root, 's1', 'mnist16_stage1')
    a = trained(root, 'a1', 'mnist16_stage3', '--distortion_targets', '4,2')
    b = trained(root, 'a2', 'mnist16_stage3', '--distortion_targets', '4,2', '--stage_paths',
                str(a))
    return dict(two_stage=trained(root, 's2', 'mnist16_stage2', '--stage1_path', str(s1)),
                three_stages=trained(root, 'a3', 'mnist16_stage3', '--distortion_targets', '4,2',
                                     '--stage_paths', f'{a},{b}'),
                vdvae=trained(root, 'v', 'mnist16'))


@pytest.fixture(scope='module')
def valid(tmp_path_factory):
    """(the whole validation split of mnist16, uint8 NHWC; a .npy of it)."""
    images = load_splits('mnist16', REPO)['valid']
    path = tmp_path_factory.mktemp('valid') / 'valid.npy'
    np.save(path, images)
    return images, path


def read_pngs(folder, names):
    return np.stack([iio.imread(os.path.join(folder, n)) for n in names])[..., None]


def names(prefix, n):
    return [f'{prefix}{i:05d}.png' for i in range(n)]


@pytest.mark.slow
@pytest.mark.parametrize('model', ['two_stage', 'three_stages', 'vdvae'])
def test_the_whole_validation_split_round_trips_bit_exact(model, runs, valid, tmp_path):
    images, npy = valid
    file = tmp_path / 'valid.pgc'
    assert main(['compress', '--run', str(runs[model]), str(npy), '-o', str(file)]) == 0
    header, chunks = unpack(file.read_bytes())
    assert header['n_images'] == len(images) and len(chunks) == {'vdvae': 1, 'two_stage': 2,
                                                                  'three_stages': 3}[model]
    assert main(['decompress', str(file), '--run', str(runs[model]), '-o', str(tmp_path)]) == 0
    assert np.array_equal(read_pngs(tmp_path, names('', len(images))), images)


@pytest.mark.slow
def test_each_prefix_decodes_to_its_x_hat(runs, valid, tmp_path):
    images = valid[0][:40]
    _, model = load_model(runs['three_stages'])
    data, info = FileCodec(model).compress(images)
    file = tmp_path / 'f.pgc'
    file.write_bytes(data)
    end = info['header_bytes']
    for k in (1, 2):
        end += info['chunk_bytes'][k - 1]
        cut = tmp_path / f'cut{k}.pgc'
        cut.write_bytes(data[:end])                        # the file as sent up to chunk k
        for source, extra, out in ((cut, [], f'cut{k}'), (file, ['--stages', str(k)], f'st{k}')):
            assert main(['decompress', str(source), '--run', str(runs['three_stages']),
                         *extra, '-o', str(tmp_path / out)]) == 0
            assert sorted(os.listdir(tmp_path / out)) == sorted(
                n for j in range(1, k + 1) for n in names(f'xhat{j}-', len(images)))
            for j in range(1, k + 1):
                assert np.array_equal(read_pngs(tmp_path / out, names(f'xhat{j}-', len(images))),
                                      info['x_hats'][j - 1])


def in_fresh_process(threads, *argv):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    done = subprocess.run([sys.executable, '-m', 'progcode_ext.codec', *map(str, argv)], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr


@pytest.mark.slow
def test_fresh_processes_with_other_thread_counts_agree_bit_for_bit(runs, valid, tmp_path):
    run = runs['two_stage']
    images, npy = valid
    file = tmp_path / 'here.pgc'
    assert main(['compress', '--run', str(run), str(npy), '-o', str(file)]) == 0
    for threads in (1, 2):
        in_fresh_process(threads, 'compress', '--run', run, npy, '-o', tmp_path / f'{threads}.pgc')
        assert (tmp_path / f'{threads}.pgc').read_bytes() == file.read_bytes()
        in_fresh_process(threads, 'decompress', file, '--run', run, '-o',
                         tmp_path / f'out{threads}')
    for name in sorted(os.listdir(tmp_path / 'out1')):
        assert (tmp_path / 'out1' / name).read_bytes() == (tmp_path / 'out2' / name).read_bytes()
    assert np.array_equal(read_pngs(tmp_path / 'out2', names('', len(images))), images)


@pytest.mark.slow
def test_the_codec_report_runs_end_to_end(tmp_path):
    from progcode_ext.experiments import codec, demo
    cfg = demo.config(str(tmp_path), 'quick', jobs=1)
    cfg.steps, cfg.n_eval, cfg.distortion_target = 5, 24, 0.05
    cfg.train_flags += ' ' + ' '.join(TINY_FLAGS)
    result = codec.run(cfg)
    folder = tmp_path / 'codec'
    assert all((folder / name).stat().st_size > 0 for name in ('report.md', 'codec.png',
                                                                'results.json'))
    chain, vdvae = result['models']['chain'], result['models']['vdvae']
    assert chain['exact'] and chain['prefix_exact'] and vdvae['exact']
    assert [s['k'] for s in chain['steps']] == [1, 2] and vdvae['n_chunks'] == 1
    assert abs(chain['overhead']) < 0.01 and chain['steps'][-1]['mse'] == 0
    assert {r['codec'] for r in result['matched']} == {'JPEG', 'WebP'}
    assert set(result['lossless']) == {'PNG', 'WebP lossless'}
