"""Image grids: nearest-neighbour upscaled cells (at least 128 px on a side), separated by thin
mid-grey lines, 1 or 3 channels, written atomically as PNG."""
import imageio.v2 as imageio
import numpy as np
import pytest

from vdvae.images import tile_images, write_image

GAP, GREY = 2, 128


def random_images(n, size, c=3, seed=0):
    """Images whose pixels are never the separator value, so a cell can't pass for a gap."""
    images = np.random.default_rng(seed).integers(0, 255, (n, size, size, c), dtype=np.uint8)
    images[images == GREY] = GREY + 1
    return images


def cell(grid, r, col, side):
    y, x = r * (side + GAP), col * (side + GAP)
    return grid[y:y + side, x:x + side]


@pytest.mark.parametrize('size,scale', [(16, 8), (32, 4), (64, 2), (128, 1), (200, 1)])
def test_grid_shape_upscales_each_cell_to_at_least_128(size, scale):
    grid = tile_images(random_images(5, size), 3)              # 2 rows x 3 columns, one blank
    side = size * scale
    assert grid.dtype == np.uint8
    assert grid.shape == (2 * side + GAP, 3 * side + 2 * GAP, 3)
    if size <= 64:
        assert grid.shape == (2 * 128 + 2, 3 * 128 + 4, 3)


@pytest.mark.parametrize('size,scale,c', [(16, 8, 1), (32, 4, 3), (64, 2, 3)])
def test_each_cell_is_the_nearest_neighbour_upscaled_image(size, scale, c):
    images = random_images(5, size, c)
    grid = tile_images(images, 3)
    side = size * scale
    src = np.arange(side) // scale                      # source row/column of each cell pixel
    for i, image in enumerate(images):
        r, col = divmod(i, 3)
        np.testing.assert_array_equal(cell(grid, r, col, side), image[src][:, src])
    assert (cell(grid, 1, 2, side) == 0).all()          # the cell after the last image is blank
    assert grid[0, 0, 0] == images[0, 0, 0, 0]          # no border around the outside
    assert grid[-1, 0, 0] == images[3, -1, 0, 0]


@pytest.mark.parametrize('size', [16, 32, 64])
def test_separator_pixels_are_mid_grey(size):
    images = random_images(4, size)
    images[:] = 0                                      # black MNIST-like background ...
    images[1] = 255                                    # ... and a white image
    grid = tile_images(images, 2)
    side = size * (128 // size)
    gap_rows = grid[side:side + GAP]                   # the line between the two rows
    gap_cols = grid[:, side:side + GAP]                # the line between the two columns
    assert gap_rows.shape == (GAP, 2 * side + GAP, 3) and gap_cols.shape == (2 * side + GAP, GAP, 3)
    assert (gap_rows == GREY).all() and (gap_cols == GREY).all()
    mask = np.ones(grid.shape[:2], bool)               # everything else is image: 0 or 255
    mask[side:side + GAP] = mask[:, side:side + GAP] = False
    assert set(np.unique(grid[mask])) == {0, 255}


def test_explicit_scale_and_gap_and_the_plain_tiling():
    images = random_images(3, 8)
    grid = tile_images(images, 2, scale=3, gap=1, gap_value=7)
    assert grid.shape == (2 * 24 + 1, 2 * 24 + 1, 3)
    assert (grid[24] == 7).all() and (grid[:, 24] == 7).all()
    np.testing.assert_array_equal(grid[25:, :24], images[2].repeat(3, 0).repeat(3, 1))
    plain = tile_images(images, 2, scale=1, gap=0)      # the layout of before
    assert plain.shape == (16, 16, 3)
    np.testing.assert_array_equal(plain[:8, 8:], images[1])
    assert (plain[8:, 8:] == 0).all()


@pytest.mark.parametrize('c', [1, 3])
def test_write_image_round_trips_one_and_three_channels(tmp_path, c):
    grid = tile_images(random_images(3, 16, c), 3)
    path = tmp_path / 'sub' / 'grid.png'
    write_image(path, grid)
    back = imageio.imread(path)
    expected = grid[..., 0] if c == 1 else grid
    assert back.shape == expected.shape == ((128, 3 * 128 + 4) if c == 1 else (128, 3 * 128 + 4, 3))
    np.testing.assert_array_equal(back, expected)
    assert [p.name for p in path.parent.iterdir()] == ['grid.png']     # no temporary file left
