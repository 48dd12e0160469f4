"""The progressive codec's file and command line (progcode_ext/codec): the container frames chunks
so that a prefix cut after a whole chunk decodes and any other damage is one CodecError; with real
(tiny, briefly trained) chains of two and three stages and a plain VDVAE, compress -> decompress
is bit-exact on the whole validation split and each prefix decodes to its x_hat_k. (Other thread
counts and instruction sets: tests/test_codec_platforms.py; bad command lines:
tests/test_bad_inputs.py.)"""
import json
import os
import re
import struct
import zlib

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
              weights_sha256='ab' * 32, decoded_sha256=['cd' * 32, 'ef' * 32, '01' * 32],
              batch=100, fixed_point_bits=16, versions=dict(torch='2.0'), determinism='test')
CHUNKS = [b'first chunk!', b'2nd.', b'the third and last chunk']      # whole 4-byte words


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


def with_header(text, chunks=CHUNKS):
    """A file of header text `text` (bytes as they are, or a dict as JSON) and `chunks`, with
    every CRC right: what reaches the header's checks."""
    if not isinstance(text, bytes):
        text = json.dumps(text).encode()
    out = [container.MAGIC, bytes([container.VERSION]), struct.pack('<I', len(text)), text,
           struct.pack('<I', zlib.crc32(text))]
    for chunk in chunks:
        out += [struct.pack('<II', len(chunk), zlib.crc32(chunk)), chunk]
    return b''.join(out)


@pytest.mark.parametrize('length', [0, 1, 3, 5, 10])
def test_a_chunk_no_range_coder_writes_is_refused_before_it_is_read(length):
    chunk = bytes(range(length))
    with pytest.raises(CodecError, match=f"chunk 2's length field says {length} bytes"):
        unpack(with_header(HEADER, [CHUNKS[0], chunk, CHUNKS[2]]))
    with pytest.raises(ValueError, match='whole 4-byte words'):
        pack(HEADER, [CHUNKS[0], chunk, CHUNKS[2]])


BAD_HEADERS = [
    ('n_images', True, "n_images is true, not a whole number"),
    ('n_images', 2.0, 'n_images is 2.0'),
    ('n_images', 0, 'n_images is 0'),
    ('n_chunks', -3, 'n_chunks is -3'),
    ('batch', False, 'batch is false'),
    ('batch', 0, 'batch is 0'),
    ('fixed_point_bits', 16.0, 'fixed_point_bits is 16.0'),
    ('fixed_point_bits', '16', 'fixed_point_bits is "16"'),
    ('fixed_point_bits', 0, 'fixed_point_bits is 0'),
    ('image_shape', [4, 4, 2], 'image_shape is'),
    ('image_shape', [4, 4], 'image_shape is'),
    ('image_shape', [4, True, 1], 'image_shape is'),
    ('image_shape', [4.0, 4, 1], 'image_shape is'),
    ('bin_width', 0.0, 'bin_width is 0.0'),
    ('bin_width', -1.5, 'bin_width is -1.5'),
    ('bin_width', 1, 'bin_width is 1,'),
    ('bin_width', 'wide', 'bin_width is "wide"'),
    ('bin_width', 16.0, 'bin_width is 16.0, not a decimal number in [1.52588e-05, 16)'),
    ('bin_width', 1e-6, 'bin_width is 1e-06'),
    ('weights_sha256', 'AB' * 32, 'weights_sha256 is'),
    ('weights_sha256', 'ab' * 31, 'weights_sha256 is'),
    ('decoded_sha256', 'cd' * 32, 'decoded_sha256 is'),
    ('decoded_sha256', ['cd' * 32, 'ef' * 32, 1], 'decoded_sha256 is'),
    ('decoded_sha256', ['cd' * 32] * 2, 'lists 2 decoded_sha256 for 3 chunks'),
    ('versions', ['2.0'], 'versions is'),
    ('versions', {'torch': 2}, 'versions is'),
    ('determinism', None, 'determinism is null'),
    ('determinism', ['x' * 100], 'determinism is ["xxx'),
]


@pytest.mark.parametrize('field, value, message', BAD_HEADERS,
                         ids=[f'{f}={v!r}'[:40] for f, v, _ in BAD_HEADERS])
def test_each_header_field_is_checked_for_its_type_and_range(field, value, message):
    with pytest.raises(CodecError, match=re.escape(message)):
        unpack(with_header(dict(HEADER, **{field: value})))
    with pytest.raises(ValueError, match=re.escape(message)):
        pack(dict(HEADER, **{field: value}), CHUNKS)           # never written either


@pytest.mark.parametrize('text, message', [
    (json.dumps(dict(HEADER, extra=1)), 'unknown fields "extra"'),
    (json.dumps({k: v for k, v in HEADER.items() if k != 'batch'}), 'lacks batch'),
    ('[1, 2, 3]', 'a JSON array, not an object'),
    ('"header"', 'a JSON string, not an object'),
    ('null', 'a JSON null, not an object'),
    ('', 'not valid JSON'),
    ('{"n_images": 1, "n_images": 2}', 'not valid JSON (a field is repeated)'),
    (json.dumps(HEADER).replace('0.5', 'NaN'), 'not valid JSON (NaN'),
    (json.dumps(HEADER).replace('0.5', '1e999'), 'bin_width is Infinity'),
    ('[' * 10000 + ']' * 10000, 'not valid JSON'),
    (b'{"n_images": "\xff"}', 'not valid JSON'),
    (json.dumps(HEADER).encode('utf-16'), 'not valid JSON'),
    (json.dumps(HEADER) + ' {}', 'not valid JSON'),
])
def test_a_header_that_is_no_json_object_of_these_fields_is_one_error(text, message):
    text = text if isinstance(text, bytes) else text.encode()
    with pytest.raises(CodecError, match=re.escape(message)):
        unpack(with_header(text))


def test_the_chunks_bound_the_number_of_images():
    """A top-down pass of up to `batch` images writes at least one bit into every chunk: the
    smallest chunk (4 bytes) holds at most batch * 32 images."""
    most = HEADER['batch'] * 8 * 4
    assert unpack(with_header(dict(HEADER, n_images=most)))[0]['n_images'] == most
    with pytest.raises(CodecError, match=f"claims {most + 1} images but chunk 2's 4 bytes can "
                                         f'hold at most {most}'):
        unpack(with_header(dict(HEADER, n_images=most + 1)))
    header = dict(HEADER, n_images=40)
    container.check_n_images(header, CHUNKS, [8, 1, 1])        # chunk 1: 96 bits, 12 passes
    with pytest.raises(CodecError, match="chunk 1's 12 bytes can hold at most 1200"):
        container.check_n_images(dict(header, n_images=1201), CHUNKS, [8, 1, 1])


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


def fake_file():
    torch.manual_seed(0)
    model = VAE(get_hparams('mnist16', **TINY))
    images = np.random.default_rng(0).integers(0, 256, (2, 4, 4, 1), dtype=np.uint8)
    return model, images, FileCodec(model, FakeCoder()).compress(images)[0]


def test_the_file_codec_returns_only_the_pictures_the_encoder_made(monkeypatch):
    model, images, data = fake_file()
    header, _ = unpack(data)
    assert header['decoded_sha256'] == [container.decoded_hash(FakeCoder.x_hat(images, k))
                                        for k in (1, 2)] + [container.decoded_hash(images)]
    decode = FakeCoder.decode

    def one_pixel_off(self, chunks, n, k):
        out = decode(self, chunks, n)
        pictures = out['x_hats'] + [out['images']]
        pictures[k] = pictures[k].copy()
        pictures[k][0, 0, 0, 0] ^= 1
        return dict(x_hats=pictures[:2], images=pictures[2])
    for k in range(3):
        monkeypatch.setattr(FakeCoder, 'decode',
                            lambda self, c, n, k=k: one_pixel_off(self, c, n, k))
        with pytest.raises(CodecError, match=f'chunk {k + 1} decoded to other pictures .* '
                                             'incompatible build: it records torch '):
            FileCodec(model, FakeCoder()).decompress(data)
    monkeypatch.setattr(FakeCoder, 'decode',
                        lambda self, c, n: dict(decode(self, c, n), ends_exactly=[True, False, True]))
    with pytest.raises(CodecError, match="chunk 2's range decoder did not end at the chunk's end"):
        FileCodec(model, FakeCoder()).decompress(data)
    assert FileCodec(model, FakeCoder()).decompress(data, stages=1)['chunks'] == 1


def test_a_file_of_other_format_constants_is_refused():
    model, _, data = fake_file()
    header, chunks = unpack(data)
    for field, value in (('batch', 99), ('fixed_point_bits', 12)):
        with pytest.raises(CodecError, match=f'written with {field} {value}; this program codes '
                                             f'with {field} {header[field]}'):
            FileCodec(model, FakeCoder()).decompress(with_header(dict(header, **{field: value}),
                                                                 chunks))


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


@pytest.mark.slow
def test_the_codec_report_runs_end_to_end(tmp_path):
    from progcode_ext.experiments import compression, demo
    cfg = demo.config(str(tmp_path), 'quick', jobs=1)
    cfg.steps, cfg.n_eval, cfg.distortion_target = 5, 24, 0.05
    cfg.train_flags += ' ' + ' '.join(TINY_FLAGS)
    result = compression.run(cfg)
    folder = tmp_path / 'codec'
    assert all((folder / name).stat().st_size > 0 for name in ('report.md', 'codec.png',
                                                                'results.json'))
    chain, vdvae = result['models']['chain'], result['models']['vdvae']
    assert chain['exact'] and chain['prefix_exact'] and vdvae['exact']
    assert [s['k'] for s in chain['steps']] == [1, 2] and vdvae['n_chunks'] == 1
    assert abs(chain['overhead']) < 0.01 and chain['steps'][-1]['mse'] == 0
    assert {r['codec'] for r in result['matched']} == {'JPEG', 'WebP'}
    assert set(result['lossless']) == {'PNG', 'WebP lossless'}
