"""Labelled sample grids (issue 30): row titles in a left margin and a caption (the temperature)
above, the images themselves pixel for pixel inside; the pictures progcode writes for people."""
import imageio.v2 as imageio
import numpy as np
import pytest

from vdvae.__main__ import main, temperature_caption
from vdvae.errors import ConfigError
from vdvae.images import LABEL_BACKGROUND, label_rows, tile_images

TINY8 = ['--width', '32', '--zdim', '4', '--num_mixtures', '2', '--enc_blocks', '8x3',
         '--dec_blocks', '8x3', '--image_size', '8']


def rows_of(n_rows, n, size, c, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (n, size, size, c), dtype=np.uint8) for _ in range(n_rows)]


def inner(labelled, grid):
    """The bottom-right block of `labelled` the size of `grid`."""
    return labelled[labelled.shape[0] - grid.shape[0]:, labelled.shape[1] - grid.shape[1]:]


@pytest.mark.parametrize('c,size', [(1, 16), (3, 32), (3, 8)])
def test_the_grid_is_inside_pixel_for_pixel(c, size):
    rows = rows_of(3, 4, size, c)
    grid = tile_images(np.concatenate(rows), 4)
    labelled = label_rows(rows, [r'$\hat{x}_1$ (stage 1)', 'sample (stage 2)', 'original'],
                          'temperature 0.9')
    assert labelled.dtype == np.uint8 and labelled.shape[2] == c
    assert labelled.shape[0] > grid.shape[0] and labelled.shape[1] > grid.shape[1]
    assert np.array_equal(inner(labelled, grid), grid)


def test_text_is_drawn_where_the_titles_and_the_caption_are():
    rows = rows_of(2, 3, 16, 1)
    grid = tile_images(np.concatenate(rows), 3)
    labelled = label_rows(rows, ['first', ''], 'temperature 0.9')[..., 0]
    top, left = labelled.shape[0] - grid.shape[0], labelled.shape[1] - grid.shape[1]
    cell = 16 * 8 + 2                                   # 16x16 cells upscaled 8x, 2 px gap
    ink = labelled < LABEL_BACKGROUND // 2              # dark text on the white background
    assert ink[top:top + cell, :left].any()             # row 1's title, next to its row
    assert not ink[top + cell:, :left].any()            # row 2: an empty title, no text
    assert ink[:top].any()                              # the caption
    assert top > 0 and left > 0


def test_no_caption_no_top_line_and_no_titles_no_margin():
    rows = rows_of(2, 2, 16, 3)
    grid = tile_images(np.concatenate(rows), 2)
    assert label_rows(rows, ['a', 'b']).shape[0] == grid.shape[0]
    assert label_rows(rows, ['', ''], 'temperature 1').shape[1] >= grid.shape[1]
    assert np.array_equal(label_rows(rows, ['', '']), grid)


def test_a_wide_caption_keeps_the_grid_at_the_bottom_right():
    rows = rows_of(1, 1, 16, 3)
    grid = tile_images(np.concatenate(rows), 1)
    labelled = label_rows(rows, ['s'], 'a caption much wider than one 128-pixel cell ' * 2)
    assert labelled.shape[1] > 300 and np.array_equal(inner(labelled, grid), grid)


@pytest.mark.parametrize('titles', [['one'], ['one', 'two', 'three'], 'one'])
def test_titles_that_do_not_match_the_rows_are_a_clear_error(titles):
    with pytest.raises(ConfigError, match=r'row titles for 2 rows of images; give one title per'):
        label_rows(rows_of(2, 3, 16, 3), titles)


def test_rows_of_different_shapes_are_a_clear_error():
    rows = rows_of(1, 3, 16, 3) + rows_of(1, 2, 16, 3)
    with pytest.raises(ConfigError, match='same shape'):
        label_rows(rows, ['a', 'b'])


def test_temperature_caption():
    assert temperature_caption([0.9]) == 'temperature 0.9'
    assert temperature_caption([None]) == 'temperature 1'
    assert temperature_caption([1.0, 1.0]) == 'temperature 1'
    assert temperature_caption([1.0, 0.5]) == 'temperatures stage 1: 1; stage 2: 0.5'
    assert temperature_caption([[0.1, 0.5]]) == 'temperature 0.1, 0.5 (per block)'


@pytest.mark.parametrize('channels', ['1', '3'])
def test_the_sample_command_writes_a_labelled_grid(tmp_path, channels):
    out = tmp_path / 'g.png'
    assert main(['sample', *TINY8, '--image_channels', channels, '--n', '3', '--ncol', '2',
                 '--t', '0.9', '--out', str(out)]) == 0
    labelled = imageio.imread(out)
    assert labelled.ndim == (2 if channels == '1' else 3)
    grey = labelled if labelled.ndim == 2 else labelled[..., 0]
    side = 2 * 128 + 2                                   # 2x2 cells of 8x8 upscaled 16x
    top, left = grey.shape[0] - side, grey.shape[1] - side
    assert top > 0 and left > 0                          # grew by the margins
    assert (grey[:top] < 128).any() and (grey[top:, :left] < 128).any()     # caption, titles
    assert (labelled[-128:, -128:] == 0).all()           # the 4th cell: no 4th draw, blank
