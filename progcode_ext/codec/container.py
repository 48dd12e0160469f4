"""The compressed file: a header, then one chunk per stage, each framed so that damage is found.

    magic  b'PGCODEC' + format version (1 byte)
    header length (4 bytes, little-endian) + header (compact JSON, UTF-8) + its CRC32 (4 bytes)
    per chunk: length (4 bytes) + CRC32 (4 bytes) + the chunk's bytes

The header names the image shape, the number of images and of chunks, the bin width, the SHA-256
of the model's weights (`weights_hash`) and the determinism the decoder relies on. A file cut
after its k-th whole chunk is a valid prefix: it reads as the first k chunks (x_hat_k). A chunk
cut mid-way, a CRC mismatch, bytes after the last chunk, another magic or version, or a model
whose weights hash differs, each raise one `CodecError` naming the problem and the fix.
"""
import hashlib
import json
import struct
import zlib

import torch

from vdvae.errors import UserError

MAGIC = b'PGCODEC'
VERSION = 1
_U32 = struct.Struct('<I')
_FRAME = struct.Struct('<II')          # chunk length, CRC32
HEADER_KEYS = ('image_shape', 'n_images', 'n_chunks', 'bin_width', 'weights_sha256',
               'determinism')


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


def header_for(codec, model_hash, n_images, determinism):
    """The header of a file of `n_images` coded by `codec` (a ProgressiveCodec)."""
    return dict(image_shape=list(codec.image_shape), n_images=int(n_images),
                n_chunks=int(codec.n_chunks), bin_width=codec.bin_width,
                weights_sha256=model_hash, determinism=determinism)


def pack(header, chunks):
    """The file's bytes."""
    if len(chunks) != header['n_chunks']:
        raise ValueError(f"{len(chunks)} chunks for a header of {header['n_chunks']}")
    text = json.dumps(header, sort_keys=True, separators=(',', ':')).encode()
    parts = [MAGIC, bytes([VERSION]), _U32.pack(len(text)), text, _U32.pack(zlib.crc32(text))]
    for chunk in chunks:
        parts += [_FRAME.pack(len(chunk), zlib.crc32(chunk)), bytes(chunk)]
    return b''.join(parts)


def header_size(header):
    """Bytes of a file before its first chunk (magic, version, header and its framing)."""
    return len(MAGIC) + 1 + 2 * _U32.size + len(json.dumps(header, sort_keys=True,
                                                           separators=(',', ':')).encode())


FRAME_SIZE = _FRAME.size               # bytes of framing per chunk


def unpack(data, name='the file'):
    """(header, chunks) of a file's bytes: all chunks, or the first k of a file cut after its
    k-th chunk (k >= 1). `name` names the file in errors."""
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
    try:
        header = json.loads(text)
        missing = [k for k in HEADER_KEYS if k not in header]
    except (ValueError, TypeError):
        header, missing = None, HEADER_KEYS
    if missing:
        raise CodecError(f'{name}: its header lacks {", ".join(missing)}; it was not written by '
                         'this program')
    return header, end


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
