"""The experiment drivers' figures: image grids (PNG, nearest-neighbour upscaled cells with thin
grey separators, see `vdvae.images.tile_images`; with row titles and a caption where given, see
`vdvae.images.label_rows`) and matplotlib plots, with log axes labelled in plain decimals at
readable, non-overlapping ticks."""
import functools

import numpy as np
import torch

from vdvae.errors import ConfigError
from vdvae.images import label_rows, tile_images, write_image
from vdvae.vae_helpers import to_uint8


def grid(rows, path, titles=None, caption=None):
    """Rows of uint8 NHWC images (same count each) -> one PNG; with `titles` (one per row) and
    `caption`, labelled by `vdvae.images.label_rows`."""
    rows = [np.asarray(r) for r in rows]
    if titles is None:
        write_image(path, tile_images(np.concatenate(rows), rows[0].shape[0]))
    else:
        write_image(path, label_rows(rows, titles, caption))
    return path


def as_uint8(x):
    return to_uint8(torch.clamp(x, -1, 1))


def plot(path, draw, close=True, panels=1):
    """Write a matplotlib figure drawn by `draw(ax)` to `path` (PNG): 5.5 x 4 in at 130 dpi a
    panel, light grid lines, tight layout, x tick labels rotated where they would overlap. With
    `panels` > 1, `draw` gets the list of side-by-side axes. Returns `path`; with `close=False`
    returns the still open Figure instead (the caller closes it)."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4), dpi=130, squeeze=False)
    axes = list(axes[0])
    for ax in axes:
        ax.grid(True, which='major', alpha=0.3)
    draw(axes if panels > 1 else axes[0])
    fig.tight_layout()
    if unoverlap_tick_labels(fig):
        fig.tight_layout()
    fig.savefig(path)
    if not close:
        return fig
    plt.close(fig)
    return path


def plain_decimal(value, digits=6):
    """0.0032 -> '0.0032', 1e-05 -> '0.00001', 100.0 -> '100': no exponent, no trailing zeros."""
    if value == 0 or not np.isfinite(value):
        return f'{value:g}'
    return np.format_float_positional(float(f'{value:.{digits}g}'), trim='-')


def log_axis(ax, axis='x', values=None):
    """Log scale on `ax`'s `axis` ('x' or 'y') with major ticks only, labelled in plain decimals
    (0.0032, 0.0128, ...), and no minor ticks or labels. With `values` (e.g. the distortion
    targets) the ticks are exactly those of the values that lie in view (where fewer than two do,
    ticks at 1, 2, 5 x 10^k instead). Tick labels that would overlap are rotated by `plot`."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter, NullLocator
    if axis not in ('x', 'y'):
        raise ConfigError(f"log_axis: axis must be 'x' or 'y', got {axis!r}")
    (ax.set_xscale if axis == 'x' else ax.set_yscale)('log')
    target = ax.xaxis if axis == 'x' else ax.yaxis
    fallback = LogLocator(base=10, subs=(1.0, 2.0, 5.0))
    if values is None:
        target.set_major_locator(fallback)
    else:
        target.set_major_locator(_values_locator_class()(values, fallback))
    target.set_major_formatter(FuncFormatter(lambda v, pos: plain_decimal(v)))
    target.set_minor_locator(NullLocator())
    target.set_minor_formatter(NullFormatter())
    return ax


@functools.lru_cache(maxsize=None)
def _values_locator_class():
    """Defined on first use: matplotlib is an optional dependency, imported only to plot."""
    from matplotlib.ticker import Locator

    class ValuesLocator(Locator):
        """Ticks exactly at the given positive values within the view; where fewer than two lie
        in it, those of `fallback`."""

        def __init__(self, values, fallback):
            self.values = np.unique([float(v) for v in values if float(v) > 0])
            self.fallback = fallback

        def set_axis(self, axis):
            super().set_axis(axis)
            self.fallback.set_axis(axis)

        def __call__(self):
            vmin, vmax = self.axis.get_view_interval()
            return self.tick_values(vmin, vmax)

        def tick_values(self, vmin, vmax):
            lo, hi = sorted((vmin, vmax))
            tol = 1e-9 * abs(hi)
            inside = self.values[(self.values >= lo - tol) & (self.values <= hi + tol)]
            if len(inside) >= 2:
                return inside
            return self.fallback.tick_values(vmin, vmax)

    return ValuesLocator


def _overlapping(labels, renderer):
    boxes = [label.get_window_extent(renderer) for label in labels
             if label.get_visible() and label.get_text()]
    boxes.sort(key=lambda b: b.x0)
    return any(a.x1 > b.x0 for a, b in zip(boxes, boxes[1:]))


def unoverlap_tick_labels(fig):
    """Rotate the x tick labels of each axes of `fig` whose labels overlap when drawn: by 30
    degrees, or 90 where that is not enough. Returns whether any were rotated."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    rotated = False
    for ax in fig.axes:
        for angle in (30, 90):
            labels = ax.get_xticklabels(which='both')
            if not _overlapping(labels, renderer):
                break
            ax.tick_params(axis='x', which='both', labelrotation=angle)
            for label in labels:
                label.set_horizontalalignment('right' if angle < 90 else 'center')
                label.set_rotation_mode('anchor' if angle < 90 else 'default')
            rotated = True
            fig.canvas.draw()
    return rotated
