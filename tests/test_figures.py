"""The experiment drivers' figures: log axes with plain-decimal major tick labels only, which do
not overlap when drawn; readable plot size; upscaled image grids."""
import imageio.v2 as imageio
import numpy as np
import pytest

pytest.importorskip('matplotlib')

from progcode_ext.experiments.figures import grid, log_axis, plot         # noqa: E402

TARGETS = [0.0512, 0.0256, 0.0128, 0.0064, 0.0032]
PAPER_TARGETS = TARGETS + [0.0016, 0.0008]


def rd_draw(targets, axis='x'):
    """rd_curve's figure: reached distortions near the targets, a dotted line at each target."""
    def draw(ax):
        reached = [t * 1.03 for t in targets]
        rates = [0.5 / t ** 0.3 for t in targets]
        if axis == 'x':
            ax.plot(reached, rates, 'o-')
            for t in targets:
                ax.axvline(t, color='gray', lw=0.5, ls=':')
        else:
            ax.plot(rates, reached, 'o-')
        log_axis(ax, axis, targets)
        ax.set_xlabel('distortion: MSE per dim ([-1,1] scale)')
        ax.set_ylabel('rate (nats/dim)')
        ax.set_title('mnist5k: stage-1 rate vs distortion')
    return draw


def visible(labels):
    return [label for label in labels if label.get_visible() and label.get_text()]


def overlaps(fig, labels):
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = sorted((label.get_window_extent(renderer) for label in visible(labels)),
                   key=lambda b: b.x0)
    return [(a, b) for a, b in zip(boxes, boxes[1:]) if a.x1 > b.x0]


@pytest.fixture
def figure():
    import matplotlib.pyplot as plt
    figs = []
    yield figs.append
    for fig in figs:
        plt.close(fig)


def test_log_axis_ticks_are_the_values_in_plain_decimals_and_do_not_overlap(tmp_path, figure):
    path = tmp_path / 'rd_curve.png'
    fig = plot(path, rd_draw(TARGETS), close=False)
    figure(fig)
    ax = fig.axes[0]
    fig.canvas.draw()
    assert ax.get_xscale() == 'log'
    assert visible(ax.get_xticklabels(minor=True)) == []
    assert [label.get_text() for label in visible(ax.get_xticklabels())] == \
        ['0.0032', '0.0064', '0.0128', '0.0256', '0.0512']
    assert list(ax.get_xticks()) == sorted(TARGETS)
    assert overlaps(fig, ax.get_xticklabels(which='both')) == []
    image = imageio.imread(path)
    assert image.shape[:2] == (4 * 130, int(5.5 * 130))                # 5.5 x 4 in at 130 dpi


def test_the_papers_seven_targets_do_not_overlap(tmp_path, figure):
    fig = plot(tmp_path / 'rd7.png', rd_draw(PAPER_TARGETS), close=False)
    figure(fig)
    ax = fig.axes[0]
    fig.canvas.draw()
    assert [label.get_text() for label in visible(ax.get_xticklabels())] == \
        ['0.0008', '0.0016', '0.0032', '0.0064', '0.0128', '0.0256', '0.0512']
    assert overlaps(fig, ax.get_xticklabels(which='both')) == []


def test_crowded_tick_labels_are_rotated_until_they_do_not_overlap(tmp_path, figure):
    values = list(np.geomspace(0.001, 0.1, 16).round(6))
    fig = plot(tmp_path / 'crowded.png', rd_draw(values), close=False)
    figure(fig)
    ax = fig.axes[0]
    labels = visible(ax.get_xticklabels())
    assert len(labels) == 16 and all(label.get_rotation() != 0 for label in labels)
    assert overlaps(fig, ax.get_xticklabels(which='both')) == []


def test_log_axis_without_values_and_on_y(figure):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, (ax_x, ax_y) = plt.subplots(1, 2)
    figure(fig)
    ax_x.plot([0.0008, 0.05], [1, 2])
    log_axis(ax_x)                                       # no values: ticks at 1, 2, 5 x 10^k
    rd_draw(TARGETS, axis='y')(ax_y)
    fig.canvas.draw()
    texts = [label.get_text() for label in visible(ax_x.get_xticklabels())]
    assert {'0.001', '0.002', '0.005', '0.01', '0.02'} <= set(texts)
    assert visible(ax_x.get_xticklabels(minor=True)) == []
    assert all('e' not in t and '^' not in t and '$' not in t for t in texts)
    assert ax_y.get_yscale() == 'log' and visible(ax_y.get_yticklabels(minor=True)) == []
    assert [label.get_text() for label in visible(ax_y.get_yticklabels())] == \
        ['0.0032', '0.0064', '0.0128', '0.0256', '0.0512']
    with pytest.raises(ValueError, match='axis'):
        log_axis(ax_x, 'z')


def test_values_out_of_view_fall_back_to_readable_ticks(figure):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots()
    figure(fig)
    ax.plot([0.2, 0.9], [1, 2])                           # an undertrained model: far from targets
    log_axis(ax, 'x', TARGETS)
    fig.canvas.draw()
    texts = [label.get_text() for label in visible(ax.get_xticklabels())]
    assert len(texts) >= 2 and {'0.2', '0.5'} <= set(texts)


def test_grid_is_upscaled(tmp_path):
    rows = [np.zeros((4, 32, 32, 1), np.uint8), np.full((4, 32, 32, 1), 255, np.uint8)]
    path = grid(rows, tmp_path / 'g.png')
    image = imageio.imread(path)
    assert image.shape == (2 * 128 + 2, 4 * 128 + 3 * 2)
    assert (image[128:130] == 128).all() and (image[:128, :128] == 0).all()
    assert (image[130:, 130:258] == 255).all()
