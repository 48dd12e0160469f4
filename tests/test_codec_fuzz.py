"""The codec never returns a wrong image (issue 28): from one real file (three images compressed
with the small trained two-stage chain of tests/golden), over 10,000 malformed files, made
deterministically (byte flips, cuts at every offset, bytes appended, header edits with the header's
CRC recomputed, chunk lengths and contents edited with their CRCs recomputed, chunks swapped and
duplicated), each either raise one CodecError (from `unpack`, or from `FileCodec.decompress` for
those that pass it) or, where the mutation leaves a valid file (a cut after a whole chunk, a
changed note), decode to the right pictures. Never another exception. A file whose chunks decode
to other pictures than it records, or that a coder of other format constants wrote, is refused
naming the builds; through the command line each is one `error:` line, exit status 2, and no
output written."""
import collections
import json
import os
import struct
import subprocess
import sys
import time
import zlib
from types import SimpleNamespace

import numpy as np
import pytest

from progcode_ext.codec import coder as coder_module
from progcode_ext.codec import container
from progcode_ext.codec.__main__ import main
from progcode_ext.codec.container import CodecError, unpack
from progcode_ext.codec.files import FileCodec, library_versions
from progcode_ext.codec.model import load_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = os.path.join(REPO, 'tests', 'golden', 'two_stage', 'conventional')
HEAD = len(container.MAGIC) + 1                 # magic and version; then the header's length
N_MUTANTS = 10_000
MAX_DECODES = 50                                # mutants that reach the real decoder


# ------------------------------------------------------------------------------------------------
# The file and how to take it apart and put it back together

def dumps(header):
    return json.dumps(header, sort_keys=True, separators=(',', ':')).encode()


def frame(text, chunks, version=container.VERSION):
    """A file of header text `text` (bytes, as they are) and `chunks`, every CRC right."""
    out = [container.MAGIC, bytes([version]), struct.pack('<I', len(text)), text,
           struct.pack('<I', zlib.crc32(text))]
    for chunk in chunks:
        out += [struct.pack('<II', len(chunk), zlib.crc32(chunk)), bytes(chunk)]
    return b''.join(out)


@pytest.fixture(scope='module')
def original():
    """Three images compressed with the golden two-stage chain, every latent channel coded: the
    codec, the images, the file, its header, header text, chunks, where each chunk's frame
    starts, and the most images the chunks can hold (with the model's mask bits, and with one bit
    a pass as `unpack` counts)."""
    _, model = load_model(RUN)
    codec = FileCodec(model, active_kl=0.0)          # every latent channel coded: longer chunks
    images = np.random.default_rng(0).integers(0, 256, (3, 16, 16, 1), dtype=np.uint8)
    data, info = codec.compress(images)
    (size,) = struct.unpack_from('<I', data, HEAD)
    text = data[HEAD + 4:HEAD + 4 + size]
    header, chunks = unpack(data)
    assert frame(text, chunks) == data and len(chunks) == 2
    frames = [info['header_bytes']]
    for chunk in chunks[:-1]:
        frames.append(frames[-1] + container.FRAME_SIZE + len(chunk))
    mask = codec.mask_bits()
    bound = header['batch'] * min(8 * len(c) // m for c, m in zip(chunks, mask))
    loose = header['batch'] * 8 * min(len(c) for c in chunks)      # unpack's, one bit a pass
    return SimpleNamespace(codec=codec, images=images, data=data, info=info, header=header,
                           text=text, chunks=chunks, frames=frames, bound=bound, loose=loose)


def edited(o, **fields):
    """The file with header fields replaced (a value of DROP removes the field)."""
    header = dict(o.header, **fields)
    return frame(dumps({k: v for k, v in header.items() if v is not DROP}), o.chunks)


DROP = object()


# ------------------------------------------------------------------------------------------------
# The mutants: (class, bytes), deterministic

def random_json(rng, depth=0):
    """A random JSON value: numbers of every size, strings with odd characters, nesting."""
    kind = int(rng.integers(0, 10 if depth < 3 else 7))
    if kind == 0:
        return None
    if kind == 1:
        return bool(rng.integers(2))
    if kind == 2:
        return int(rng.integers(-2 ** 62, 2 ** 62)) * 10 ** int(rng.integers(0, 40))
    if kind == 3:
        return int(rng.integers(-3, 5))
    if kind == 4:
        return float(rng.normal()) * 10.0 ** int(rng.integers(-300, 300))
    if kind == 5:
        chars = rng.integers(0, 0x3000, size=int(rng.integers(0, 12)))
        return ''.join(chr(int(c)) for c in chars) + ('\ud800' if rng.random() < 0.1 else '')
    if kind == 6:
        digits = '0123456789abcdefABCDEF'
        n = int(rng.choice([63, 64, 64, 65]))
        return ''.join(digits[int(i)] for i in rng.integers(0, len(digits), size=n))
    if kind in (7, 8):
        return [random_json(rng, depth + 1) for _ in range(int(rng.integers(0, 4)))]
    keys = rng.choice(list(container.HEADER_KEYS) + ['x', ''], size=int(rng.integers(0, 4)))
    return {str(random_json(rng, 3)) if rng.random() < 0.5 else str(k):
            random_json(rng, depth + 1) for k in keys}


BAD_VALUES = [None, True, False, 0, -1, 1, 2, 3, 1.5, 3.0, -0.5, 0.0, 2 ** 31, 2 ** 64,
              10 ** 30, -10 ** 30, 1e308, 1e-308, '', 'x', '3', 'ab' * 32, 'AB' * 32, 'ab' * 31,
              [], {}, [1, 2, 3], [16, 16, 1], [16, 16, 2], [16, 16], [16.0, 16, 1],
              [True, 16, 1], [0, 16, 1], ['ab' * 32], ['ab' * 32] * 2, ['ab' * 32, 'AB' * 32],
              ['ab' * 32, 3], {'torch': 1}, {'torch': '2'}, {'a': {'b': []}}, [[[[]]]]]


def header_mutants(o, rng, n_random):
    """Each field: every BAD_VALUE, removed; extra fields; n_images at and above both bounds;
    JSON that is no object, not UTF-8, nested deep, repeated fields, NaN; then random values and
    random edits of the header's text. Random ones that pass `unpack` are mostly dropped (the
    deterministic ones cover them) so that few reach the decoder."""
    for field in container.HEADER_KEYS:
        for value in BAD_VALUES:
            if field == 'n_images' and _is_int(value) and 4 < value <= o.bound:
                continue                                  # a valid count: decoding is slow
            if field == 'determinism' and isinstance(value, str) and value not in ('', 'x'):
                continue                                  # valid: two suffice
            yield 'header field edits', edited(o, **{field: value})
        yield 'header field edits', edited(o, **{field: DROP})
    for extra in ({'extra': 1}, {'': None}, {'versions2': {}}, {'N_IMAGES': 3}):
        yield 'header field edits', frame(dumps(dict(o.header, **extra)), o.chunks)
    for n in (o.bound + 1, o.bound + o.header['batch'], o.loose + 1, 2 ** 40):
        yield 'header field edits', edited(o, n_images=n)
    for sha in (o.header['decoded_sha256'][:1], o.header['decoded_sha256'] * 2,
                [o.header['decoded_sha256'][1], o.header['decoded_sha256'][0]]):
        yield 'header field edits', edited(o, decoded_sha256=sha)
    raw = [b'', b' ', b'null', b'true', b'3', b'"x"', b'[]', b'[1,2]', b'{}', b'{"a":1}',
           b'\xff\xfe{}', b'\xef\xbb\xbf' + o.text, o.text + b'x', o.text + b' ', b' ' + o.text,
           o.text[:-1], o.text.replace(b'{', b'[', 1), b'[' * 100_000 + b']' * 100_000,
           b'{"a":' * 50_000 + b'1' + b'}' * 50_000, o.text.replace(b'"batch"', b'"n_images"'),
           o.text.replace(b':3,', b':NaN,'), o.text.replace(b':3,', b':Infinity,'),
           o.text.replace(b':3,', b':3' + b'0' * 5000 + b','), o.text.replace(b'"', b"'"),
           o.text.decode().encode('utf-16'), bytes(range(256))]
    for text in raw:
        yield 'header JSON garbage', frame(text, o.chunks)
    kept = 0
    for i in range(n_random):
        if i % 2:
            field = str(rng.choice(container.HEADER_KEYS))
            data = edited(o, **{field: random_json(rng)})
            kind = 'header random values'
        else:
            text = bytearray(o.text)
            for _ in range(int(rng.integers(1, 4))):
                at = int(rng.integers(0, len(text)))
                op = int(rng.integers(0, 3))
                if op == 0:
                    text[at] = int(rng.integers(0, 256))
                elif op == 1:
                    del text[at]
                else:
                    text.insert(at, int(rng.choice(list(b'{}[],:"0123456789-.eE \\tnfu'))))
            data = frame(bytes(text), o.chunks)
            kind = 'header text edits'
        if passes_unpack(data):
            kept += 1
            if kept > 5:
                continue
        yield kind, data


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def passes_unpack(data):
    try:
        unpack(data)
    except CodecError:
        return False
    return True


def relengthed(o, k, length):
    """Chunk k's length field set to `length`, its CRC that of the bytes it now covers."""
    at = o.frames[k]
    body = o.data[at + container.FRAME_SIZE:at + container.FRAME_SIZE + length]
    return (o.data[:at] + struct.pack('<II', length, zlib.crc32(body))
            + o.data[at + container.FRAME_SIZE:])


def chunk_mutants(o, rng, n_random):
    """Length fields edited (CRC recomputed over what they cover), chunks shortened, lengthened
    and changed with the file framed anew (valid CRCs), chunks swapped and duplicated."""
    for k, chunk in enumerate(o.chunks):
        n = len(chunk)
        for length in sorted({0, 1, 2, 3, 4, 5, n - 8, n - 5, n - 4, n - 1, n + 1, n + 4,
                              n + 8, 2 * n, 2 ** 31, 2 ** 32 - 1, 2 ** 32 - 4} - {n}):
            if 0 <= length < 2 ** 32:
                yield 'chunk length edits', relengthed(o, k, length)
    for _ in range(n_random):
        k = int(rng.integers(0, len(o.chunks)))
        length = int(rng.choice([rng.integers(0, 4 * len(o.chunks[k])),
                                 rng.integers(0, 2 ** 32)]))
        if length != len(o.chunks[k]):
            yield 'chunk length edits', relengthed(o, k, length)
    words = lambda n: rng.integers(0, 256, size=4 * n, dtype=np.uint8).tobytes()  # noqa: E731
    for k, chunk in enumerate(o.chunks):
        for new in (chunk[:-4], chunk[:-8], chunk[:4], chunk + words(1), chunk + words(2),
                    chunk + b'\0' * 4, words(1) + chunk):
            if new:
                yield 'chunks reframed', frame(o.text, o.chunks[:k] + [new] + o.chunks[k + 1:])
        for _ in range(2):
            new = bytearray(chunk)
            at = 4 * int(rng.integers(0, len(chunk) // 4))
            new[at:at + 4] = words(1)
            yield 'chunks reframed', frame(o.text, o.chunks[:k] + [bytes(new)]
                                           + o.chunks[k + 1:])
    c1, c2 = o.chunks
    for chunks in ([c2, c1], [c1, c1], [c2, c2], [c2], [c1, c2, c1], [c1, c2, c2], [c1, c1, c2]):
        yield 'chunks swapped or duplicated', frame(o.text, chunks)


def mutants(o, seed=0):
    """(class, bytes) of every mutant, N_MUTANTS or more, the same on every run."""
    rng = np.random.default_rng(seed)
    data = o.data
    out = [('cuts', data[:cut]) for cut in range(len(data))]
    for _ in range(1000):
        tail = rng.integers(0, 256, size=int(rng.integers(1, 64)), dtype=np.uint8).tobytes()
        base = data if rng.random() < 0.5 else data[:o.frames[1]]          # whole, or chunk 1
        out.append(('bytes appended', base + tail))
    for chunk in (o.chunks[0], o.chunks[1], b'\0' * 4):
        out.append(('bytes appended', data + struct.pack('<II', len(chunk), zlib.crc32(chunk))
                    + chunk))
    out.append(('other version', data[:HEAD - 1] + bytes([container.VERSION - 1]) + data[HEAD:]))
    out += list(header_mutants(o, rng, 2000))
    out += list(chunk_mutants(o, rng, 1000))
    while len(out) < N_MUTANTS + 500:
        damaged = bytearray(data)
        near = rng.random() < 0.3               # a third in the header and framing
        for _ in range(int(rng.integers(1, 5))):
            at = int(rng.integers(0, o.frames[1] + container.FRAME_SIZE if near else len(data)))
            damaged[at] ^= int(rng.integers(1, 256))
        out.append(('byte flips', bytes(damaged)))
    return out


# ------------------------------------------------------------------------------------------------
# The fuzz

@pytest.fixture
def decodes(monkeypatch):
    """Counts the real decoder's calls (any ProgressiveCodec, also one made for another bin
    width)."""
    calls = []
    decode = coder_module.ProgressiveCodec.decode

    def counted(self, chunks, n):
        calls.append(n)
        return decode(self, chunks, n)
    monkeypatch.setattr(coder_module.ProgressiveCodec, 'decode', counted)
    return calls


def test_ten_thousand_malformed_files_are_each_one_codec_error(original, decodes, capsys):
    o = original
    start = time.perf_counter()
    cases = mutants(o)
    made = time.perf_counter() - start
    assert len(cases) >= N_MUTANTS
    counts = collections.defaultdict(collections.Counter)
    for i, (kind, data) in enumerate(cases):
        try:
            unpack(data)
        except CodecError:
            counts[kind]['unpack'] += 1
            continue
        except Exception as e:                 # noqa: BLE001 - the point of the test
            pytest.fail(f'{kind} #{i}: unpack raised {type(e).__name__}: {e}')
        before = len(decodes)
        try:
            out = o.codec.decompress(data)
        except CodecError:
            counts[kind]['decoded, refused' if len(decodes) > before else 'refused'] += 1
            continue
        except Exception as e:                 # noqa: BLE001
            pytest.fail(f'{kind} #{i}: decompress raised {type(e).__name__}: {e}')
        # a mutation that left a valid file: the right pictures, or none
        for k, x_hat in enumerate(out['x_hats']):
            assert np.array_equal(x_hat, o.info['x_hats'][k]), (kind, i)
        assert out['images'] is None or np.array_equal(out['images'], o.images), (kind, i)
        counts[kind]['valid'] += 1
    seconds = time.perf_counter() - start
    with capsys.disabled():
        print(f'\n{len(cases)} mutants in {seconds:.1f} s ({made:.1f} s to make them), '
              f'{len(decodes)} reached the decoder:')
        for kind, c in counts.items():
            print(f'  {kind}: {sum(c.values())} ({", ".join(f"{k} {v}" for k, v in c.items())})')
    assert len(decodes) <= MAX_DECODES
    # what must have been seen: the valid cut after chunk 1, refusals after decoding (a chunk
    # that decodes to other pictures), refusals by the container and by the model's checks
    assert counts['cuts']['valid'] == 1
    assert counts['chunks reframed']['decoded, refused'] >= 5
    assert counts['header field edits']['refused'] >= 10
    assert counts['byte flips']['unpack'] == sum(counts['byte flips'].values()) > 3000   # CRC32


# ------------------------------------------------------------------------------------------------
# Items 1-3 of the issue with the real model: decoded pictures, format constants, bounds

def test_the_header_records_what_the_file_decodes_to_and_the_build(original):
    o = original
    h = o.header
    assert h['decoded_sha256'] == [container.decoded_hash(o.info['x_hats'][0]),
                                   container.decoded_hash(o.images)]
    assert h['versions'] == library_versions() and set(h['versions']) == {
        'torch', 'numpy', 'constriction', 'progcode'}
    assert h['batch'] == coder_module.BATCH and h['fixed_point_bits'] == 16
    assert isinstance(h['determinism'], str)


def test_pictures_that_decode_differently_are_refused_naming_the_builds(original, monkeypatch):
    o = original
    decode = coder_module.ProgressiveCodec.decode

    def one_pixel_off(self, chunks, n):
        out = decode(self, chunks, n)
        out['x_hats'][0][1, 2, 3, 0] ^= 1
        return out
    monkeypatch.setattr(coder_module.ProgressiveCodec, 'decode', one_pixel_off)
    for data in (o.data, o.data[:o.frames[1]]):                  # the file, and its prefix
        with pytest.raises(CodecError) as e:
            o.codec.decompress(data)
        message = str(e.value)
        assert 'chunk 1 decoded to other pictures' in message and 'incompatible build' in message
        for lib, version in library_versions().items():
            assert f'{lib} {version}' in message
        assert 'compress the images again here' in message and '\n' not in message


def test_a_header_that_records_other_pictures_is_refused(original):
    o = original
    other = ['0' * 64, o.header['decoded_sha256'][1]]
    with pytest.raises(CodecError, match='chunk 1 decoded to other pictures'):
        o.codec.decompress(edited(o, decoded_sha256=other))
    other = [o.header['decoded_sha256'][0], '0' * 64]
    with pytest.raises(CodecError, match=r'chunk 2 decoded .* \(the images'):
        o.codec.decompress(edited(o, decoded_sha256=other))
    # the prefix needs only its own chunk's record
    assert np.array_equal(o.codec.decompress(edited(o, decoded_sha256=other), stages=1)
                          ['x_hats'][0], o.info['x_hats'][0])
    old = dict(torch='0.1', numpy='0.2', constriction='0.3', progcode='0.4')
    with pytest.raises(CodecError, match='it records torch 0.1, numpy 0.2, constriction 0.3, '
                                         'progcode 0.4; this machine has torch'):
        o.codec.decompress(edited(o, decoded_sha256=['0' * 64] * 2, versions=old))


@pytest.mark.parametrize('ends', [[True, False], [False, True]])
def test_a_chunk_not_decoded_to_its_end_is_refused(original, monkeypatch, ends):
    o = original
    decode = coder_module.ProgressiveCodec.decode
    monkeypatch.setattr(coder_module.ProgressiveCodec, 'decode',
                        lambda self, chunks, n: dict(decode(self, chunks, n), ends_exactly=ends))
    k = ends.index(False) + 1
    with pytest.raises(CodecError, match=f"chunk {k}'s range decoder did not end at the chunk"):
        o.codec.decompress(o.data)
    monkeypatch.setattr(coder_module.ProgressiveCodec, 'decode',
                        lambda self, chunks, n: dict(decode(self, chunks, n),
                                                     ends_exactly=[True] * len(chunks)))
    assert np.array_equal(o.codec.decompress(o.data)['images'], o.images)


@pytest.mark.parametrize('k', [0, 1])
def test_a_chunk_with_a_word_more_is_refused(original, k):
    """A chunk with one more word than its encoder wrote (CRC right) still decodes to the right
    pictures (constriction's `maybe_exhausted` allows that much slack), but it is not the
    encoder's chunk: the decoder's re-encoding (`coder.CheckedDecoder`) differs from it."""
    o = original
    chunks = list(o.chunks)
    chunks[k] = chunks[k] + bytes(4)
    with pytest.raises(CodecError, match=f"chunk {k + 1}'s range decoder did not end at the chunk"):
        o.codec.decompress(frame(o.text, chunks))
    checked = coder_module.CheckedDecoder(o.chunks[k])
    assert not checked.ends_exactly()          # nothing decoded yet: the chunk is not read


@pytest.mark.parametrize('field, value', [('batch', 7), ('batch', 1000), ('fixed_point_bits', 15),
                                          ('fixed_point_bits', 52)])
def test_a_file_of_other_format_constants_is_refused(original, field, value):
    with pytest.raises(CodecError, match=f'written with {field} {value}; this program codes '
                                         f'with {field} {original.header[field]}'):
        original.codec.decompress(edited(original, **{field: value}))


def test_a_coder_of_other_format_constants_refuses_the_file(original, monkeypatch):
    o = original
    monkeypatch.setattr(o.codec.codec, 'batch', 5)
    with pytest.raises(CodecError, match='written with batch 100; this program codes with batch 5'):
        o.codec.decompress(o.data)
    monkeypatch.undo()
    monkeypatch.setattr(o.codec.codec, 'fixed_point_bits', 24)
    with pytest.raises(CodecError, match='fixed_point_bits 16; this program codes with '
                                         'fixed_point_bits 24'):
        o.codec.decompress(o.data)


def test_more_images_than_the_chunks_can_hold_are_refused(original):
    o = original
    assert o.loose > o.bound > len(o.images)
    with pytest.raises(CodecError, match=f'claims {o.bound + 1} images but chunk .* can hold at '
                                         f'most {o.bound};'):
        o.codec.decompress(edited(o, n_images=o.bound + 1))
    with pytest.raises(CodecError, match=f'claims {o.loose + 1} images'):
        unpack(edited(o, n_images=o.loose + 1))               # the container alone: a bit a pass
    assert passes_unpack(edited(o, n_images=o.bound + 1))


# ------------------------------------------------------------------------------------------------
# Through the command line: one error line, status 2, nothing written

def cli_cases(o):
    return {'decodes differently': edited(o, decoded_sha256=['0' * 64] * 2),
            'other batch': edited(o, batch=7),
            'too many images': edited(o, n_images=o.bound + 1),
            'chunks swapped': frame(o.text, o.chunks[::-1]),
            'not JSON': frame(b'[' * 100_000, o.chunks),
            'bool for int': edited(o, n_images=True),
            'unknown field': edited(o, extra=1)}


def test_the_command_line_writes_nothing_for_a_malformed_file(original, tmp_path, capsys):
    for name, data in cli_cases(original).items():
        file = tmp_path / f'{name}.pgc'
        file.write_bytes(data)
        out = tmp_path / f'out-{name}'
        capsys.readouterr()
        assert main(['decompress', str(file), '--run', RUN, '-o', str(out)]) == 2, name
        err = capsys.readouterr().err
        assert err.startswith('error: ') and err.count('\n') == 1, (name, err)
        assert not out.exists(), name


@pytest.mark.slow
def test_a_fresh_process_fails_cleanly_on_malformed_files(original, tmp_path):
    cases, errors = cli_cases(original), {}
    for name in ('decodes differently', 'too many images', 'chunks swapped'):
        file = tmp_path / f'{name}.pgc'
        file.write_bytes(cases[name])
        out = tmp_path / f'out-{name}'
        done = subprocess.run([sys.executable, '-m', 'progcode_ext.codec', 'decompress',
                               str(file), '--run', RUN, '-o', str(out)], cwd=REPO,
                              capture_output=True, text=True, timeout=300)
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert done.returncode == 2, (name, done.stderr)
        assert len(lines) == 1 and lines[0].startswith('error: '), (name, done.stderr)
        assert 'Traceback' not in done.stderr and not out.exists(), name
        errors[name] = lines[0]
    assert 'incompatible build' in errors['decodes differently']
    assert 'can hold at most' in errors['too many images']
