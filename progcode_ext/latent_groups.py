"""Which latents are z_1..z_K (Section 4.1).

VDVAE's decoder runs from the lowest resolution up, so z_1..z_K are its first K blocks: all blocks
whose resolution is at most `progressive_res` (default: image size / 8, i.e. 4x4 for 32x32 images
and 8x8 for 64x64, as in the paper).
"""
from vdvae.block_strings import parse_dec_blocks
from vdvae.errors import ConfigError


def default_progressive_res(H):
    return H.image_size // 8


def progressive_blocks(H, res=None):
    """K: the number of decoder blocks at resolution <= res (`progressive_res` or image size / 8)."""
    res = res or H.get('progressive_res') or default_progressive_res(H)
    layers = parse_dec_blocks(H.dec_blocks, H.image_size)
    k = sum(r <= res for r, _ in layers)
    if k == 0 or any(r > res for r, _ in layers[:k]):
        raise ConfigError(f'--progressive_res {res} selects no leading decoder blocks (the decoder '
                          f'starts at resolution {layers[0][0]}); choose at least that')
    return k

