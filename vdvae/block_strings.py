"""Block-string grammar of VDVAE, with strict validation.

Tokens, comma separated, each giving one or more `(resolution, arg)` entries:
  `RxN`  N blocks at resolution R                          -> N x (R, None)
  `RmM`  decoder: a block at R that first upsamples the state at M -> (R, M)
  `RdK`  encoder: a block at R followed by K x K average pooling    -> (R, K)
  `R`    one block at resolution R                          -> (R, None)
Upstream accepts anything; here a `d` in a decoder string, an `m` in an encoder string, a
malformed token, resolutions that do not chain, or a decoder that does not end at the image size
raise `ValueError` naming the token and what was expected.
"""
import re
from collections import defaultdict

from .errors import ConfigError

_TOKEN = re.compile(r'^(\d+)(?:([xmd])(\d+))?$')


def _tokens(s, which):
    if not isinstance(s, str) or not s.strip():
        raise ConfigError(f'{which} block string is empty; expected tokens like "32x3,32d2,16x2"')
    for token in s.split(','):
        m = _TOKEN.match(token.strip())
        if not m:
            raise ConfigError(f'{which} block string {s!r}: malformed token {token!r}; expected '
                              '"RxN", "RmM", "RdK" or "R" with integers R, N, M, K')
        res, op, n = int(m.group(1)), m.group(2), m.group(3)
        yield token.strip(), res, op, (int(n) if n is not None else None)


def parse_layer_string(s):
    """Upstream's parser, without validation: [(resolution, mixin or down rate or None), ...]."""
    layers = []
    for _, res, op, n in _tokens(s, 'the'):
        if op == 'x':
            layers += [(res, None)] * n
        elif op in ('m', 'd'):
            layers.append((res, n))
        else:
            layers.append((res, None))
    return layers


def parse_enc_blocks(s, image_size):
    """Encoder blocks [(res, down_rate)], checked to start at `image_size` and to chain."""
    layers, cur = [], image_size
    for token, res, op, n in _tokens(s, '--enc_blocks: the encoder'):
        if op == 'm':
            raise ConfigError(f'--enc_blocks: token {token!r} has an "m" (decoder mix-in); '
                              'encoder tokens are "RxN", "RdK" or "R"')
        if res != cur:
            raise ConfigError(f'--enc_blocks: token {token!r} is at resolution {res}, but the '
                              f'previous blocks leave resolution {cur}; expected {cur}x..., '
                              f'{cur}d... or {cur}')
        if n is not None and n < 1:
            raise ConfigError(f'--enc_blocks: token {token!r} needs a count/rate >= 1')
        if op == 'd':
            if res % n:
                raise ConfigError(f'--enc_blocks: token {token!r} pools {res} by {n}, which '
                                  'does not divide it; expected a divisor of the resolution')
            layers.append((res, n))
            cur = res // n
        else:
            layers += [(res, None)] * (n if op == 'x' else 1)
    return layers


def parse_dec_blocks(s, image_size):
    """Decoder blocks [(res, mixin)], checked to chain upwards and to end at `image_size`."""
    layers, cur = [], None
    for token, res, op, n in _tokens(s, '--dec_blocks: the decoder'):
        if op == 'd':
            raise ConfigError(f'--dec_blocks: token {token!r} has a "d" (encoder pooling); '
                              'decoder tokens are "RxN", "RmM" or "R"')
        if op == 'm':
            if cur is None or n != cur:
                raise ConfigError(f'--dec_blocks: token {token!r} mixes in resolution {n}, '
                                  f'but the current resolution is {cur}; expected {res}m{cur}')
            if res <= n or res % n:
                raise ConfigError(f'--dec_blocks: token {token!r} must upsample by an integer '
                                  f'factor; expected a resolution that is a multiple of {n}')
            layers.append((res, n))
        elif cur is not None and res != cur:
            raise ConfigError(f'--dec_blocks: token {token!r} jumps from resolution {cur} to '
                              f'{res} without a mix-in; expected {res}m{cur}')
        elif op == 'x' and n < 1:
            raise ConfigError(f'--dec_blocks: token {token!r} needs a count >= 1')
        else:
            layers += [(res, None)] * (n if op == 'x' else 1)
        cur = res
    if cur != image_size:
        raise ConfigError(f'--dec_blocks {s!r} ends at resolution {cur}, but the image size '
                          f'is {image_size}; expected its last token at {image_size}')
    return layers


def get_width_settings(width, s):
    """Width per resolution: `width`, except where `s` ("res:width,...") says otherwise."""
    widths = defaultdict(lambda: width)
    for item in (s or '').split(','):
        if not item.strip():
            continue
        parts = item.split(':')
        if len(parts) != 2 or not parts[0].strip().isdigit() or not parts[1].strip().isdigit():
            raise ConfigError(f'--custom_width_str {s!r}: malformed item {item!r}; expected '
                              '"res:width"')
        widths[int(parts[0])] = int(parts[1])
    return widths


def check_architecture(H):
    """Validate the block strings of `H` together; returns (enc_layers, dec_layers, widths)."""
    enc = parse_enc_blocks(H.enc_blocks, H.image_size)
    dec = parse_dec_blocks(H.dec_blocks, H.image_size)
    widths = get_width_settings(H.width, H.custom_width_str)
    if widths[H.image_size] != H.width:
        raise ConfigError(f'custom_width_str gives resolution {H.image_size} width '
                          f'{widths[H.image_size]}, but width is {H.width}; they must agree')
    enc_res = {H.image_size} | {res // (down or 1) for res, down in enc}
    for res, down in enc:
        if down and widths[res // down] < widths[res]:
            raise ConfigError(f'encoder pools {res} -> {res // down}, but the width shrinks '
                              f'{widths[res]} -> {widths[res // down]}; widths may only grow there')
    for res, mixin in dec:
        if res not in enc_res:
            raise ConfigError(f'decoder has blocks at resolution {res}, but the encoder never '
                              f'produces it (encoder resolutions: {sorted(enc_res)})')
        if mixin and widths[mixin] < widths[res]:
            raise ConfigError(f'decoder mixes {mixin} into {res}, but width {widths[mixin]} at '
                              f'{mixin} is below width {widths[res]} at {res}')
    return enc, dec, widths
