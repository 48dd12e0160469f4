"""The compressed file: a header, then one chunk per stage, each framed so that damage is found.

    magic  b'PGCODEC' + format version (1 byte)
    header length (4 bytes, little-endian) + header (compact JSON, UTF-8) + its CRC32 (4 bytes)
    per chunk: length (4 bytes) + CRC32 (4 bytes) + the chunk's bytes

The header (`HEADER_KEYS`, docs/codec.md) names the image shape, the number of images and of
chunks, the bin width, the SHA-256 of the model's weights (`weights_hash`), the SHA-256 of what
each chunk decodes to (`decoded_hash`: x_hat_k, the images for the last chunk), the coder's format
constants (`batch`, `fixed_point_bits`), the library versions that compressed the file, and the
determinism the decoder relies on. A file cut after its k-th whole chunk is a valid prefix: it
reads as the first k chunks (x_hat_k). Everything else that is wrong raises one `CodecError`
naming the problem and the fix: a chunk cut mid-way, a CRC mismatch, bytes after the last chunk,
another magic or version, a header that is not a JSON object of exactly these fields, each of its
type and range, a chunk whose length cannot be a range coder's output (a whole number of 4-byte
words, at least one), more images than the chunks can hold (`check_n_images`), and, with the
model at hand (`files.FileCodec.decompress`), another model's weights, image shape, chunk count
or format constants.
"""
import hashlib
import json
import re
import struct
import zlib

import numpy as np
import torch

from vdvae.errors import UserError

MAGIC = b'PGCODEC'
VERSION = 3                            # 2: decoded_sha256, versions, batch; 3: fixed-point networks
_U32 = struct.Struct('<I')
_FRAME = struct.Struct('<II')          # chunk length, CRC32
WORD = 4                               # bytes of one word of constriction's range coder (uint32)
HEADER_KEYS = ('image_shape', 'n_images', 'n_chunks', 'bin_width', 'weights_sha256',
               'decoded_sha256', 'batch', 'fixed_point_bits', 'versions', 'determinism')
DAMAGED = 'the file is damaged or was not written by this program'
# the latents' bins in prior stds: the fixed-point coder takes them in integers of 2^-16 below 16
MIN_BIN_WIDTH, MAX_BIN_WIDTH = 2.0 ** -16, 16.0
_SHA256 = re.compile('[0-9a-f]{64}')


class CodecError(UserError, ValueError):
    """A compressed file, or an input to the codec, that cannot be used."""


def weights_hash(model):
    """SHA-256 (hex) of the model's state_dict: each entry's name, shape and values in key order.
    Floating-point values are hashed as float64 (exact for float32/16), so the hash is the same
    before and after the codec moves the model to float64."""
    h = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu()
        if t.is_floating_point():
            t = t.to(torch.float64)
        t = t.contiguous()
        h.update(f'{name}:{t.dtype}:{tuple(t.shape)};'.encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b'')
    return h.hexdigest()


def decoded_hash(pictures):
    """SHA-256 (hex) of uint8 NHWC pictures as `decoded_sha256` records them: the bytes of the
    C-contiguous array (all images of the file, in file order)."""
    pictures = np.ascontiguousarray(pictures)
    if pictures.dtype != np.uint8:
        raise TypeError(f'decoded pictures are uint8, got {pictures.dtype}')
    return hashlib.sha256(pictures.tobytes()).hexdigest()


def header_for(codec, model_hash, n_images, determinism, decoded_sha256, batch, fixed_point_bits,
               versions):
    """The header of a file of `n_images` coded by `codec` (a ProgressiveCodec): `decoded_sha256`
    one `decoded_hash` per chunk, `batch` and `fixed_point_bits` the coder's format constants,
    `versions` {library: version} of this build."""
    return dict(image_shape=[int(v) for v in codec.image_shape], n_images=int(n_images),
                n_chunks=int(codec.n_chunks), bin_width=float(codec.bin_width),
                weights_sha256=model_hash, decoded_sha256=list(decoded_sha256), batch=int(batch),
                fixed_point_bits=int(fixed_point_bits),
                versions={str(k): str(v) for k, v in versions.items()}, determinism=determinism)


def _header_text(header):
    return json.dumps(header, sort_keys=True, separators=(',', ':')).encode()


def pack(header, chunks):
    """The file's bytes. A header or chunks that `unpack` would refuse are a bug: ValueError."""
    try:
        check_header(header, 'the header to write')
    except CodecError as e:
        raise ValueError(str(e)) from None
    if len(chunks) != header['n_chunks']:
        raise ValueError(f"{len(chunks)} chunks for a header of {header['n_chunks']}")
    if any(not len(c) or len(c) % WORD for c in chunks):
        raise ValueError(f'chunks of {[len(c) for c in chunks]} bytes: a range coder writes whole '
                         f'{WORD}-byte words, at least one')
    text = _header_text(header)
    parts = [MAGIC, bytes([VERSION]), _U32.pack(len(text)), text, _U32.pack(zlib.crc32(text))]
    for chunk in chunks:
        parts += [_FRAME.pack(len(chunk), zlib.crc32(chunk)), bytes(chunk)]
    return b''.join(parts)


def header_size(header):
    """Bytes of a file before its first chunk (magic, version, header and its framing)."""
    return len(MAGIC) + 1 + 2 * _U32.size + len(_header_text(header))


FRAME_SIZE = _FRAME.size               # bytes of framing per chunk


def unpack(data, name='the file'):
    """(header, chunks) of a file's bytes: all chunks, or the first k of a file cut after its
    k-th chunk (k >= 1), the header checked field by field (`check_header`) and against the
    chunks' sizes (`check_n_images`, one bit per top-down pass). `name` names the file in errors.
    Any bytes that are not such a file raise one CodecError."""
    data = bytes(data)
    start = len(MAGIC) + 1
    if data[:len(MAGIC)] != MAGIC:
        raise CodecError(f'{name} is not a progcode compressed file (it does not start with '
                         f'{MAGIC!r}); pass a file written by `python -m progcode_ext.codec '
                         'compress`')
    if len(data) < start or data[len(MAGIC)] != VERSION:
        version = data[len(MAGIC)] if len(data) >= start else 'no'
        raise CodecError(f'{name} has format version {version}; this program reads version '
                         f'{VERSION}: decompress it with the progcode version that wrote it')
    header, at = _read_header(data, start, name)
    chunks = []
    while at < len(data):
        k = len(chunks) + 1
        if k > header['n_chunks']:
            raise CodecError(f"{name} has {len(data) - at} bytes after its last chunk (chunk "
                             f"{header['n_chunks']}): it is damaged; compress the images again")
        if len(data) - at < FRAME_SIZE:
            raise CodecError(f'{name}: chunk {k} is cut off in its length field; the file is '
                             f'truncated mid-chunk: keep whole chunks only (decode the first '
                             f'{k - 1} with --stages {k - 1}) or copy it again')
        length, crc = _FRAME.unpack_from(data, at)
        at += FRAME_SIZE
        if not length or length % WORD:
            raise CodecError(f"{name}: chunk {k}'s length field says {length} bytes, which no "
                             f'range coder writes (a whole number of {WORD}-byte words, at least '
                             f'one); {DAMAGED}: copy it again or compress the images again')
        chunk = data[at:at + length]
        if len(chunk) < length:
            raise CodecError(f'{name}: chunk {k} is truncated ({len(chunk)} of {length} bytes); '
                             f'copy the file again, or cut it after a whole chunk')
        if zlib.crc32(chunk) != crc:
            raise CodecError(f'{name}: chunk {k} is corrupted (its CRC32 does not match); copy '
                             'the file again')
        chunks.append(chunk)
        at += length
    if not chunks:
        raise CodecError(f"{name} holds no chunk (only its header): there is nothing to decode; "
                         'copy the whole file')
    check_n_images(header, chunks, name=name)
    return header, chunks


def _read_header(data, start, name):
    if len(data) < start + _U32.size:
        raise CodecError(f'{name} is truncated inside its header; copy the whole file again')
    (size,) = _U32.unpack_from(data, start)
    text = data[start + _U32.size:start + _U32.size + size]
    end = start + _U32.size + size + _U32.size
    if len(data) < end:
        raise CodecError(f'{name} is truncated inside its header; copy the whole file again')
    if zlib.crc32(text) != _U32.unpack_from(data, end - _U32.size)[0]:
        raise CodecError(f'{name}: its header is corrupted (its CRC32 does not match); copy the '
                         'file again')
    return check_header(_parse(text, name), name), end


def _unique_fields(pairs):
    fields = dict(pairs)
    if len(fields) != len(pairs):
        raise ValueError('a field is repeated')
    return fields


def _no_constant(word):
    raise ValueError(f'{word} is not a number JSON allows')


def _parse(text, name):
    """The header's JSON: UTF-8, no repeated field, no NaN or Infinity."""
    try:
        return json.loads(text.decode('utf-8'), object_pairs_hook=_unique_fields,
                          parse_constant=_no_constant)
    except (ValueError, RecursionError) as e:   # UnicodeDecodeError, JSONDecodeError: ValueErrors
        reason = ' '.join(str(e).split())[:100] or type(e).__name__
        raise CodecError(f'{name}: its header is not valid JSON ({reason}); {DAMAGED}') from None


def _shown(value, limit=40):
    """A header value in an error message: JSON, ASCII, one line, at most `limit` characters."""
    try:
        text = json.dumps(value)
    except (ValueError, TypeError, RecursionError):
        text = type(value).__name__
    return text if len(text) <= limit else text[:limit - 3] + '...'


def _is_int(value):
    return isinstance(value, int) and not isinstance(value, bool)


def _is_sha256(value):
    return isinstance(value, str) and _SHA256.fullmatch(value) is not None


_JSON_TYPES = {dict: 'object', list: 'array', str: 'string', bool: 'boolean', int: 'number',
               float: 'number', type(None): 'null'}


def check_header(header, name='the file'):
    """`header` (parsed JSON) if it is an object of exactly HEADER_KEYS, each of its type and range
    (ints are never bools or floats); else one CodecError naming the field."""
    if not isinstance(header, dict):
        raise CodecError(f'{name}: its header is a JSON {_JSON_TYPES.get(type(header), "value")}, '
                         f'not an object; {DAMAGED}')
    missing = [k for k in HEADER_KEYS if k not in header]
    if missing:
        raise CodecError(f'{name}: its header lacks {", ".join(missing)}; it was not written by '
                         'this program (or by an older one: decompress it with that)')
    extra = sorted(set(header) - set(HEADER_KEYS))
    if extra:
        raise CodecError(f'{name}: its header has unknown fields '
                         f'{", ".join(_shown(k) for k in extra[:5])}; {DAMAGED}')

    def bad(field, expected):
        return CodecError(f"{name}: its header's {field} is {_shown(header[field])}, not "
                          f'{expected}; {DAMAGED}')

    shape = header['image_shape']
    if not (isinstance(shape, list) and len(shape) == 3 and all(_is_int(v) and v >= 1
                                                                for v in shape)
            and shape[2] in (1, 3)):
        raise bad('image_shape', 'a list of 3 positive whole numbers (height, width, and 1 or 3 '
                                 'channels)')
    for field, least in (('n_images', 1), ('n_chunks', 1), ('batch', 1)):
        if not (_is_int(header[field]) and header[field] >= least):
            raise bad(field, f'a whole number of at least {least}')
    if not (_is_int(header['fixed_point_bits']) and header['fixed_point_bits'] >= 1):
        raise bad('fixed_point_bits', 'a whole number of at least 1')
    width = header['bin_width']
    if not (isinstance(width, float) and MIN_BIN_WIDTH <= width < MAX_BIN_WIDTH):
        raise bad('bin_width', f'a decimal number in [{MIN_BIN_WIDTH:g}, {MAX_BIN_WIDTH:g})')
    if not _is_sha256(header['weights_sha256']):
        raise bad('weights_sha256', 'a SHA-256 (64 lowercase hex digits)')
    decoded = header['decoded_sha256']
    if not (isinstance(decoded, list) and all(_is_sha256(h) for h in decoded)):
        raise bad('decoded_sha256', 'a list of SHA-256s (64 lowercase hex digits each)')
    if len(decoded) != header['n_chunks']:
        raise CodecError(f"{name}: its header lists {len(decoded)} decoded_sha256 for "
                         f"{header['n_chunks']} chunks; {DAMAGED}")
    versions = header['versions']
    if not (isinstance(versions, dict) and all(isinstance(v, str) for v in versions.values())):
        raise bad('versions', 'an object of library names and version strings')
    if not isinstance(header['determinism'], str):
        raise bad('determinism', 'a string')
    return header


def check_n_images(header, chunks, mask_bits=None, name='the file'):
    """That the header's n_images fit the chunks: each top-down pass codes up to `batch` images
    and puts at least `mask_bits[k]` bits into chunk k (the coder's mask: one bit per latent
    channel of each of the stage's decoder blocks; 1 where not given), so chunk k of L bytes holds
    at most batch * (8 L // mask_bits[k]) images. This bounds the decoder's time and memory by the
    file's size."""
    n, batch = header['n_images'], header['batch']
    for k, chunk in enumerate(chunks):
        bits = mask_bits[k] if mask_bits is not None and k < len(mask_bits) else 1
        if bits < 1:
            continue
        most = batch * (8 * len(chunk) // bits)
        if n > most:
            raise CodecError(f"{name}: the header claims {n} images but chunk {k + 1}'s "
                             f'{len(chunk)} bytes can hold at most {most}; {DAMAGED}')


def check_weights(header, model_hash, name='the file'):
    """That the model at hand is the one the file was coded with."""
    if header['weights_sha256'] != model_hash:
        raise CodecError(f"{name} was coded with another model (weights SHA-256 "
                         f"{header['weights_sha256'][:16]}..., this model's {model_hash[:16]}...); "
                         'decompress it with the run and checkpoint that compressed it')


def check_shape(header, image_shape, name='the file'):
    if tuple(header['image_shape']) != tuple(image_shape):
        raise CodecError(f"{name} holds {tuple(header['image_shape'])} images, the model codes "
                         f'{tuple(image_shape)}; use the run that compressed it')


def check_format(header, batch, fixed_point_bits, name='the file'):
    """That the file's format constants are this program's: the coder's `batch` (images per
    top-down pass) and its networks' fixed point (activations in integers of
    2^-fixed_point_bits). Another value means the decoder would compute other probabilities than
    the encoder did."""
    for field, ours in (('batch', batch), ('fixed_point_bits', fixed_point_bits)):
        if header[field] != ours:
            raise CodecError(f'{name} was written with {field} {_shown(header[field])}; this '
                             f'program codes with {field} {ours}, so it would decode other '
                             'pictures: decompress it with the progcode version that compressed '
                             'it, or compress the images again with this one')
