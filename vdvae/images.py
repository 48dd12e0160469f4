"""Image grids written with imageio (PNG), atomically, optionally labelled (row titles in a left
margin, a caption above) with text drawn by matplotlib's Agg canvas."""
import math

import imageio.v2 as imageio
import numpy as np
import torch

from .errors import ConfigError

CELL = 128            # grid cells are upscaled to at least this many pixels on a side
GAP_VALUE = 128       # mid-grey: visible against black (MNIST) and white images alike
GAP = 2               # pixels between cells
LABEL_FONT_PX = 13    # the labels' text height (font size in pixels)
LABEL_PAD = 6         # pixels around the labels
LABEL_BACKGROUND = 255


def grid_scale(h, w, cell=CELL):
    """The integer nearest-neighbour factor that brings an h x w image to at least `cell` pixels
    on its longer side: 4 for 32x32, 8 for 16x16, 2 for 64x64, 1 for 128x128 and above."""
    return max(1, cell // max(h, w))


def tile_images(images, ncol, scale=None, gap=GAP, gap_value=GAP_VALUE):
    """(N, H, W, C) uint8 (C = 1 or 3) -> one uint8 image of the images in `ncol` columns,
    row-major. Each image is upscaled by nearest neighbour by `scale` (None: `grid_scale`); cells
    are separated by `gap` pixels (at the upscaled size) of the value `gap_value`, with no border
    around the outside; the cells after the last image are blank (0). `scale=1, gap=0` gives the
    plain (rows*H, ncol*W, C) tiling."""
    images = np.asarray(images)
    if images.ndim != 4:
        raise ConfigError(f'tile_images expects (N, H, W, C) images, got shape {images.shape}')
    n, h, w, c = images.shape
    s = grid_scale(h, w) if scale is None else int(scale)
    if s < 1 or gap < 0 or ncol < 1:
        raise ConfigError(f'tile_images: need scale >= 1, gap >= 0, ncol >= 1 '
                          f'(got {s}, {gap}, {ncol})')
    rows = -(-n // ncol)
    ch, cw = h * s, w * s
    grid = np.full((rows * ch + max(rows - 1, 0) * gap, ncol * cw + (ncol - 1) * gap, c),
                   gap_value, dtype=np.uint8)
    for i in range(rows * ncol):
        r, col = divmod(i, ncol)
        y, x = r * (ch + gap), col * (cw + gap)
        cell = images[i].repeat(s, axis=0).repeat(s, axis=1) if i < n else 0
        grid[y:y + ch, x:x + cw] = cell
    return grid


def label_rows(rows, titles, caption=None, scale=None):
    """Rows of uint8 NHWC images (the same count n in each, C = 1 or 3) -> one uint8 HWC image:
    `tile_images` of the rows (n columns, one grid row per entry), with each row's title in a
    left margin, right-aligned and centred on its row, and `caption` (e.g. 'temperature 0.9') on
    a line above, centred over the grid. The grid's pixels appear unchanged (no interpolation) at
    the bottom right: `labelled[top:, left:] == tile_images(concatenate(rows), n, scale)`. Text is
    black on white; a 1-channel grid gives a 1-channel picture. Empty titles leave their row
    unlabelled."""
    rows = [np.asarray(r) for r in rows]
    titles = [titles] if isinstance(titles, str) else list(titles)
    if not rows or len(titles) != len(rows):
        raise ConfigError(f'label_rows: {len(titles)} row titles for {len(rows)} rows of images; '
                          'give one title per row')
    if any(r.ndim != 4 or r.dtype != np.uint8 or r.shape != rows[0].shape for r in rows):
        raise ConfigError('label_rows: every row must be a uint8 (n, H, W, C) array of the same '
                          f'shape, got {[(str(r.dtype), r.shape) for r in rows]}')
    n, h, w, c = rows[0].shape
    grid = tile_images(np.concatenate(rows), n, scale)
    s = grid_scale(h, w) if scale is None else int(scale)
    centres = [r * (h * s + GAP) + h * s / 2 for r in range(len(rows))]
    return _draw_labels(grid, titles, centres, caption)


def _draw_labels(grid, titles, centres, caption):
    """`grid` (HWC uint8) below a caption line and right of a margin holding titles[i] centred on
    pixel row centres[i] of the grid."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    titles = [str(t) for t in titles]
    caption = str(caption) if caption else ''
    dpi = 72                                        # one point is one pixel

    def extent(text):                              # (width, height) in pixels, 0 for ''
        if not text:
            return 0, 0
        fig = Figure(figsize=(1, 1), dpi=dpi)
        canvas = FigureCanvasAgg(fig)
        box = fig.text(0, 0, text, fontsize=LABEL_FONT_PX).get_window_extent(canvas.get_renderer())
        return math.ceil(box.width), math.ceil(box.height)

    gh, gw, c = grid.shape
    widest = max(extent(t)[0] for t in titles)
    left = widest + 2 * LABEL_PAD if widest else 0
    cap_w, cap_h = extent(caption)
    top = cap_h + 2 * LABEL_PAD if caption else 0
    width = max(left + gw, cap_w + 2 * LABEL_PAD)           # a wide caption widens the margin
    left = width - gw                                       # (the grid stays at the bottom right)
    cap_x = min(max(left + gw / 2, cap_w / 2 + LABEL_PAD),  # centred over the grid, never cut
                width - cap_w / 2 - LABEL_PAD)
    height = top + gh
    # half a pixel more than needed, so that float rounding never drops a row; cropped below
    fig = Figure(figsize=((width + 0.5) / dpi, (height + 0.5) / dpi), dpi=dpi,
                 facecolor=[LABEL_BACKGROUND / 255] * 3)
    canvas = FigureCanvasAgg(fig)
    rh = canvas.get_renderer().height                       # text at display pixels, y up
    for title, centre in zip(titles, centres):
        if title:
            fig.text(left - LABEL_PAD, rh - (top + centre), title, transform=None, ha='right',
                     va='center', fontsize=LABEL_FONT_PX, color='black')
    if caption:
        fig.text(cap_x, rh - top / 2, caption, transform=None, ha='center', va='center',
                 fontsize=LABEL_FONT_PX, color='black')
    canvas.draw()
    picture = np.asarray(canvas.buffer_rgba())[:height, :width, :3].copy()
    if c == 1:                                  # black text on white: the channels are equal
        picture = picture[..., :1]
    picture[top:, left:left + gw] = grid
    return np.ascontiguousarray(picture)


def write_image(path, image):
    """Write a uint8 HWC image (C = 1 or 3) as PNG, atomically."""
    from .checkpoint import atomic_write
    image = image[..., 0] if image.shape[-1] == 1 else image
    atomic_write(path, lambda f: imageio.imwrite(f, image, format='png'))


@torch.no_grad()
def write_images(H, ema_model, originals, x_in, path):
    """The model's sample grid (`Model.sample_grid`: upstream's layout unless the model lays out
    its own), one row per line, written as a PNG; labelled (`label_rows`) where the model gives
    row titles (`Model.sample_grid_titles`; upstream's grid has none)."""
    rows = ema_model.sample_grid(originals, x_in, H)
    titles = getattr(ema_model, 'sample_grid_titles', lambda H: None)(H)
    if titles is None:                  # upstream's grid: unlabelled
        write_image(path, tile_images(np.concatenate(rows), originals.shape[0]))
    else:
        write_image(path, label_rows(rows, titles, ema_model.sample_grid_caption(H)))
