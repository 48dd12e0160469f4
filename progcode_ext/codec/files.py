"""Images to a compressed file's bytes and back: the coder (`coder.ProgressiveCodec`) makes the
chunks, the container (`container.py`) frames them with a header that ties the file to the
model's weights."""
import numpy as np

from . import container
from .container import CodecError, header_for, pack, unpack, weights_hash

# What decoding bit for bit relies on, written into every header (the coder's own `determinism`
# note when it has one): coder.py's module docstring explains each part.
DETERMINISM = ('float64 forward pass; prior means, log-stds and mixture parameters rounded to a '
               'grid of 2^-20 before coding; latents coded as offsets from the prior mean in bins '
               'of bin_width prior stds, closed loop, a mask of the coded channels first; '
               'constriction range coder; images in file order, in batches of {batch}')


class FileCodec:
    """A model's codec with its file format: `compress(images) -> (bytes, info)`,
    `decompress(bytes, stages) -> dict`. `codec`: the ProgressiveCodec of `model` (default: made
    here, with `bin_width` and `active_kl` where given; decoding takes the file's bin width)."""

    def __init__(self, model, codec=None, bin_width=None, active_kl=None):
        # The hash first: the coder runs the model in float64 (the hash does not depend on it).
        self.model_hash = weights_hash(model)
        self.model, self._codec = model, codec
        self.settings = {k: v for k, v in (('bin_width', bin_width), ('active_kl', active_kl))
                         if v is not None}

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

    def check_images(self, images, name='the images'):
        images = np.asarray(images)
        shape = self.image_shape
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != shape:
            raise CodecError(f'{name} are a {images.dtype} array of shape {images.shape}; the '
                             f'model codes uint8 images of shape (n, {", ".join(map(str, shape))})')
        if not len(images):
            raise CodecError(f'{name}: no images to compress')
        return images

    def header(self, n_images):
        return header_for(self.codec, self.model_hash, n_images, self.determinism)

    def compress(self, images):
        """(the file's bytes, the coder's info plus 'header_bytes' and 'chunk_bytes': each chunk's
        bytes with its framing)."""
        images = self.check_images(images)
        chunks, info = self.codec.encode(images)
        header = self.header(len(images))
        data = pack(header, chunks)
        info = dict(info, header_bytes=container.header_size(header),
                    chunk_bytes=[len(c) + container.FRAME_SIZE for c in chunks])
        return data, info

    def decompress(self, data, stages=None, name='the file'):
        """{'x_hats': [uint8 NHWC per decoded stage with a mean head], 'images': uint8 NHWC or None
        (a prefix), 'chunks': chunks decoded, 'header': the header} of a file's bytes (possibly
        cut after a whole chunk); `stages`: decode only the first that many chunks."""
        header, chunks = unpack(data, name)
        container.check_weights(header, self.model_hash, name)
        container.check_shape(header, self.image_shape, name)
        if header['n_chunks'] != self.n_chunks:
            raise CodecError(f"{name} has {header['n_chunks']} chunks, this model codes "
                             f'{self.n_chunks}; use the run that compressed it')
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
            codec = ProgressiveCodec(self.model, bin_width=header['bin_width'])
        decoded = codec.decode(chunks, header['n_images'])
        return dict(decoded, chunks=len(chunks), header=header)
