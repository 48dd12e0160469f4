"""The standard image codecs the progressive codec is measured against (Pillow): PNG and lossless
WebP, and JPEG and WebP at a chosen size. Each image is its own file, as these formats store
images; `payload` is what a file holds beyond its fixed headers (JPEG: the entropy-coded scan;
WebP: the bitstream after the RIFF and chunk headers; PNG: the IDAT data), for the comparison with
headers not counted."""
import io
import struct

import numpy as np

LOSSLESS = ('PNG', 'WebP lossless')
LOSSY = ('JPEG', 'WebP')
QUALITIES = {'JPEG': (1, 95), 'WebP': (0, 100)}       # Pillow's useful ranges


def _pil(image):
    from PIL import Image
    return Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image)


def encode(image, codec, quality=None):
    """The bytes of one uint8 HWC image in `codec` ('PNG', 'WebP lossless', 'JPEG', 'WebP')."""
    buf = io.BytesIO()
    img = _pil(image)
    if codec == 'PNG':
        img.save(buf, 'PNG', optimize=True)
    elif codec == 'WebP lossless':
        img.save(buf, 'WEBP', lossless=True, quality=100, method=6)
    elif codec == 'JPEG':
        img.save(buf, 'JPEG', quality=int(quality), optimize=True)
    elif codec == 'WebP':
        img.save(buf, 'WEBP', quality=int(quality), method=6)
    else:
        raise ValueError(f'unknown codec {codec!r}')
    return buf.getvalue()


def decode(data, channels):
    """uint8 HWC of a file's bytes, with `channels` channels (WebP stores gray as RGB)."""
    from PIL import Image
    img = Image.open(io.BytesIO(data))
    img = img.convert('L' if channels == 1 else 'RGB')
    out = np.asarray(img, dtype=np.uint8)
    return out[..., None] if channels == 1 else out


def payload(data, codec):
    """Bytes of `data` beyond the format's headers and markers."""
    if codec in ('JPEG',):
        sos = data.index(b'\xff\xda')
        (length,) = struct.unpack('>H', data[sos + 2:sos + 4])
        return len(data) - (sos + 2 + length) - 2                       # minus EOI
    if codec in ('WebP', 'WebP lossless'):
        return len(data) - 20                                           # RIFF(12) + chunk(8)
    if codec == 'PNG':
        total, at = 0, 8
        while at < len(data):
            (length,) = struct.unpack('>I', data[at:at + 4])
            if data[at + 4:at + 8] == b'IDAT':
                total += length
            at += 12 + length
        return total
    raise ValueError(f'unknown codec {codec!r}')


def encode_set(images, codec, quality=None):
    """(files' bytes in total, payload bytes in total, the decoded images) of a set of images."""
    files = [encode(image, codec, quality) for image in images]
    decoded = np.stack([decode(f, images.shape[-1]) for f in files])
    return sum(map(len, files)), sum(payload(f, codec) for f in files), decoded


def mse(a, b):
    """Mean squared error on the project's [-1, 1] scale of two uint8 arrays."""
    d = (a.astype(np.float64) - b.astype(np.float64)) / 127.5
    return float(np.mean(d * d))


def psnr(m):
    """PSNR in dB of an MSE on the [-1, 1] scale (peak-to-peak 2)."""
    return float('inf') if m == 0 else float(10 * np.log10(4.0 / m))


def sweep(images, codec):
    """{quality: (total bytes, payload bytes, MSE)} over the codec's whole quality range."""
    low, high = QUALITIES[codec]
    out = {}
    for q in range(low, high + 1):
        total, pay, decoded = encode_set(images, codec, q)
        out[q] = (total, pay, mse(decoded, images))
    return out


def matched(curve, target, key):
    """The quality of `curve` (from `sweep`) whose bytes (key 0: whole files, 1: payloads) are the
    largest not above `target`, or the smallest size when none fits; (quality, fits)."""
    fitting = [q for q, v in curve.items() if v[key] <= target]
    if fitting:
        return max(fitting, key=lambda q: (curve[q][key], q)), True
    return min(curve, key=lambda q: (curve[q][key], q)), False
