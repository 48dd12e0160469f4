"""Images to a compressed file's bytes and back: the coder (`coder.ProgressiveCodec`) makes the
chunks, the container (`container.py`) frames them with a header that ties the file to the
model's weights, the coder's format constants and what each chunk decodes to. Decoding never
returns a picture other than the one the encoder made: every decoded x_hat_k and the images are
checked against the header's SHA-256s."""
import functools
import importlib.metadata

import numpy as np

from . import container
from .container import CodecError, decoded_hash, header_for, pack, unpack, weights_hash

# What decoding bit for bit relies on, written into every header (the coder's own `determinism`
# note when it has one): coder.py's module docstring explains each part. It documents; decoding
# checks the header's numbers (batch, fixed_point_bits) and the decoded pictures' SHA-256s instead.
DETERMINISM = ('networks in fixed point: integer activations of 2^-16 and weights, exact float64 '
               'sums below 2^53, tabulated GELU and exp (progcode_ext/codec/fixed_point.py); '
               'integer probability tables (progcode_ext/codec/integer.py); '
               'latents coded as offsets from the prior mean in bins of bin_width prior stds, '
               'closed loop, a mask of the coded channels (from the closed-loop KLs) first; '
               'constriction range coder; images in file order, in batches of {batch}')
LIBRARIES = ('torch', 'numpy', 'constriction', 'progcode')


def _distribution_version(name):
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return 'unknown'


def library_versions():
    """{library: version} of the build that runs here, for LIBRARIES: what a file's pictures
    depend on besides the model, written into every header and named when a file decodes to other
    pictures than it records ('unknown' where a version cannot be told)."""
    return dict(_library_versions())


@functools.lru_cache(maxsize=None)
def _library_versions():
    import constriction
    import torch
    return dict(torch=str(torch.__version__), numpy=str(np.__version__),
                constriction=str(getattr(constriction, '__version__', None)
                                 or _distribution_version('constriction')),
                progcode=_distribution_version('progcode'))


def _versions_text(versions):
    """'torch 2.x, numpy 1.y, ...': printable ASCII, whatever a file's header holds."""
    def clean(text):
        text = text if isinstance(text, str) else 'unknown'
        return ''.join(c if ' ' <= c <= '~' else '?' for c in text[:40]) or '?'
    return ', '.join(f'{lib} {clean(versions.get(lib, "unknown"))}' for lib in LIBRARIES)


# What the range coder and the networks may raise on data that is not what the encoder wrote:
# constriction raises AssertionError ("Tried to decode from compressed data that is invalid for the
# employed entropy model") and ValueError; the tables made from such data need not be finite.
# Each becomes a CodecError, never a traceback.
DECODE_ERRORS = (AssertionError, ValueError, RuntimeError, OverflowError, FloatingPointError,
                 ZeroDivisionError)


class FileCodec:
    """A model's codec with its file format: `compress(images) -> (bytes, info)`,
    `decompress(bytes, stages) -> dict`. `codec`: the ProgressiveCodec of `model` (default: made
    here, with `bin_width` and `active_kl` where given; decoding takes the file's bin width)."""

    def __init__(self, model, codec=None, bin_width=None, active_kl=None, device=None):
        # The hash first: the coder runs the model in float64 (the hash does not depend on it).
        self.model_hash = weights_hash(model)
        self.model, self._codec = model, codec
        self.settings = {k: v for k, v in (('bin_width', bin_width), ('active_kl', active_kl),
                                           ('device', device)) if v is not None}

    @property
    def codec(self):
        """The coder, made on first use: a file of another model is refused before it is made."""
        if self._codec is None:
            from .coder import ProgressiveCodec
            self._codec = ProgressiveCodec(self.model, **self.settings)
        return self._codec

    @property
    def determinism(self):
        return getattr(self.codec, 'determinism', None) or \
            DETERMINISM.format(batch=getattr(self.codec, 'batch', '?'))

    @property
    def n_chunks(self):
        return self.codec.n_chunks

    @property
    def image_shape(self):
        return tuple(self.codec.image_shape)

    @property
    def format_constants(self):
        """(batch, fixed_point_bits) of the coder: images per top-down pass, and the fixed point
        of its networks (activations in integers of 2^-fixed_point_bits)."""
        from . import coder
        batch = getattr(self.codec, 'batch', coder.BATCH)
        bits = getattr(self.codec, 'fixed_point_bits', coder.ACT_BITS)
        return int(batch), int(bits)

    def mask_bits(self):
        """Per chunk, the bits each top-down pass puts into it at least: the coder's mask, one bit
        per latent channel (`zdim`) of each of the stage's decoder blocks. None for a coder
        without `stages` (a stand-in): the container then counts one bit per pass."""
        stages = getattr(self.codec, 'stages', None)
        if stages is None:
            return None
        return [sum(int(block.zdim) for block in stage.decoder.dec_blocks) for stage in stages]

    def check_images(self, images, name='the images'):
        images = np.asarray(images)
        shape = self.image_shape
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != shape:
            raise CodecError(f'{name} are a {images.dtype} array of shape {images.shape}; the '
                             f'model codes uint8 images of shape (n, {", ".join(map(str, shape))})')
        if not len(images):
            raise CodecError(f'{name}: no images to compress')
        return images

    def header(self, n_images, decoded_sha256):
        """The header of a file of `n_images` whose chunks decode to pictures of these SHA-256s
        (`container.decoded_hash`, one per chunk)."""
        batch, bits = self.format_constants
        return header_for(self.codec, self.model_hash, n_images, self.determinism, decoded_sha256,
                          batch, bits, library_versions())

    def compress(self, images):
        """(the file's bytes, the coder's info plus 'header_bytes' and 'chunk_bytes': each chunk's
        bytes with its framing)."""
        images = self.check_images(images)
        chunks, info = self.codec.encode(images)
        decoded = [decoded_hash(x) for x in info['x_hats']] + [decoded_hash(images)]
        header = self.header(len(images), decoded)
        data = pack(header, chunks)
        info = dict(info, header_bytes=container.header_size(header),
                    chunk_bytes=[len(c) + container.FRAME_SIZE for c in chunks])
        return data, info

    def decompress(self, data, stages=None, name='the file'):
        """{'x_hats': [uint8 NHWC per decoded stage with a mean head], 'images': uint8 NHWC or None
        (a prefix), 'chunks': chunks decoded, 'header': the header} of a file's bytes (possibly
        cut after a whole chunk); `stages`: decode only the first that many chunks. Whatever it
        returns is what the encoder made: each decoded x_hat_k and the images are checked against
        the header's `decoded_sha256`, and each chunk's range decoder must end at the chunk's end
        (the coder's `ends_exactly`). Any file that cannot give that raises one CodecError (also one
        the range coder rejects outright), and nothing is returned."""
        header, chunks = unpack(data, name)
        container.check_weights(header, self.model_hash, name)
        container.check_shape(header, self.image_shape, name)
        if header['n_chunks'] != self.n_chunks:
            raise CodecError(f"{name} has {header['n_chunks']} chunks, this model codes "
                             f'{self.n_chunks}; use the run that compressed it')
        container.check_format(header, *self.format_constants, name=name)
        container.check_n_images(header, chunks, self.mask_bits(), name)
        if stages is not None:
            if not 1 <= stages <= header['n_chunks']:
                raise CodecError(f"--stages {stages}: {name} has stages 1 to "
                                 f"{header['n_chunks']}; choose one of them")
            if stages > len(chunks):
                raise CodecError(f'--stages {stages}: {name} holds only {len(chunks)} whole '
                                 f'chunk{"s" * (len(chunks) != 1)} (it was cut); decode at most '
                                 f'{len(chunks)}')
            chunks = chunks[:stages]
        codec = self.codec
        if header['bin_width'] != codec.bin_width:         # compressed with --bin_width
            from .coder import ProgressiveCodec
            codec = ProgressiveCodec(self.model, bin_width=header['bin_width'],
                                     device=getattr(codec, 'device', 'cpu'))
            codec.batch = header['batch']                  # this coder's, as checked above
        try:
            with np.errstate(all='ignore'):     # what a damaged chunk makes of the tables
                decoded = codec.decode(chunks, header['n_images'])
        except DECODE_ERRORS as e:
            raise CodecError(self._not_decoded(header, name, 'its chunks could not be decoded '
                                               f'({type(e).__name__}: '
                                               f'{" ".join(str(e).split())[:100]})')) from None
        self.check_decoded(header, decoded, len(chunks), name)
        return dict(decoded, chunks=len(chunks), header=header)

    def check_decoded(self, header, decoded, n_chunks, name='the file'):
        """That the first `n_chunks` chunks decoded (`decoded`, the coder's output) to the
        pictures the header records (`decoded_sha256`: x_hat_k, the images for the last chunk)
        and, where the coder tells (`ends_exactly`, one bool per chunk), that each chunk's range
        decoder ended exactly at the chunk's end."""
        pictures = list(decoded['x_hats'][:n_chunks])
        if decoded.get('images') is not None:
            pictures.append(decoded['images'])
        ends = decoded.get('ends_exactly')
        for k in range(n_chunks):
            what = 'the images' if k == header['n_chunks'] - 1 else f'x_hat_{k + 1}'
            if k >= len(pictures) or decoded_hash(pictures[k]) != header['decoded_sha256'][k]:
                raise CodecError(self._not_decoded(
                    header, name, f'chunk {k + 1} decoded to other pictures than the file records '
                                  f'({what}: its SHA-256 differs)'))
            if ends is not None and not (k < len(ends) and bool(ends[k])):
                raise CodecError(self._not_decoded(
                    header, name, f"chunk {k + 1}'s range decoder did not end at the chunk's end"))

    @staticmethod
    def _not_decoded(header, name, what):
        return (f'{name}: {what}. It was probably compressed on an incompatible build: it records '
                f"{_versions_text(header['versions'])}; this machine has "
                f'{_versions_text(library_versions())} (another platform or thread library can '
                'also change the probabilities). Decompress it on the machine and build that '
                'compressed it, or compress the images again here')
