"""Block-string grammar and its validation."""
import pytest

from vdvae import VAE, get_hparams
from vdvae.block_strings import (check_architecture, get_width_settings, parse_dec_blocks,
                                 parse_enc_blocks, parse_layer_string)


def test_grammar():
    assert parse_layer_string('1x2,4m1,4,8d2') == [(1, None), (1, None), (4, 1), (4, None), (8, 2)]
    assert parse_enc_blocks('32x2,32d2,16x1,16d4,4', 32) == [
        (32, None), (32, None), (32, 2), (16, None), (16, 4), (4, None)]
    assert parse_dec_blocks('1x1,4m1,4x2,8m4', 8) == [(1, None), (4, 1), (4, None), (4, None), (8, 4)]


@pytest.mark.parametrize('enc,message', [
    ('32x2,32m16', "token '32m16' has an \"m\""),
    ('32x2,3a2', "malformed token '3a2'"),
    ('32x2,,16x1', "malformed token ''"),
    ('32x2,16x1', "token '16x1' is at resolution 16, but the previous blocks leave resolution 32"),
    ('16x2', "token '16x2' is at resolution 16"),
    ('32d3', 'does not divide'),
    ('32x0', 'count/rate >= 1'),
    ('', 'empty'),
])
def test_bad_encoder_strings(enc, message):
    with pytest.raises(ValueError, match=message.replace('(', r'\(')):
        parse_enc_blocks(enc, 32)


@pytest.mark.parametrize('dec,message', [
    ('1x1,4d1', "token '4d1' has a \"d\""),
    ('1x1,4m2', "mixes in resolution 2, but the current resolution is 1; expected 4m1"),
    ('4m1', 'current resolution is None'),
    ('1x1,4x2', "jumps from resolution 1 to 4 without a mix-in; expected 4m1"),
    ('1x1,4m1,4x2', 'ends at resolution 4, but the image size is 32'),
    ('1x1,1m1', 'integer factor'),
    ('4x1,6m4', 'integer factor'),
    ('1x1,4m1,4x0', 'count >= 1'),
    ('1,x', "malformed token 'x'"),
])
def test_bad_decoder_strings(dec, message):
    with pytest.raises(ValueError, match=message):
        parse_dec_blocks(dec, 32)


def test_widths():
    w = get_width_settings(16, '4:32, 1:64')
    assert (w[32], w[4], w[1]) == (16, 32, 64)
    with pytest.raises(ValueError, match="malformed item '4-32'"):
        get_width_settings(16, '4-32')


def test_architecture_cross_checks():
    base = dict(width=16, zdim=2)
    with pytest.raises(ValueError, match='encoder never produces it'):
        check_architecture(get_hparams('cifar10', enc_blocks='32x1,32d2,16x1',
                                       dec_blocks='1x1,32m1', **base))
    with pytest.raises(ValueError, match='width shrinks'):
        check_architecture(get_hparams('cifar10', enc_blocks='32x1,32d2,16x1',
                                       dec_blocks='16x1,32m16', custom_width_str='16:8', **base))
    with pytest.raises(ValueError, match='width is 16; they must agree'):
        check_architecture(get_hparams('cifar10', enc_blocks='32x1', dec_blocks='32x1',
                                       custom_width_str='32:8', **base))
    with pytest.raises(ValueError, match="token '32m16' has an"):
        VAE(get_hparams('cifar10', dec_blocks='32m16', enc_blocks='32m16', **base))
