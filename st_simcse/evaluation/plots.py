"""PNG plots of what people look at after a run: the dev curve and the alignment/uniformity trajectory."""

from __future__ import annotations

import math
from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # files only: recipes run on headless machines
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axis import Axis  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import Formatter, MaxNLocator  # noqa: E402

# Ticks per axis: five readable numbers, on steps of 1, 2 or 5 times a power of ten, so that "%.{d}f" shows each.
TICKS = 5


def plot_dev_curve(
    steps: Sequence[int], scores: Sequence[float], path: str, label: str = "STS-B dev Spearman"
) -> None:
    """Dev Spearman (x 100) against training steps, the best point marked."""
    figure, axes = plt.subplots(figsize=(6, 4))
    values = [100 * score for score in scores]
    axes.plot(steps, values, marker="o")
    if values:
        best = max(range(len(values)), key=values.__getitem__)
        axes.scatter([steps[best]], [values[best]], color="red", zorder=3, label=f"best {values[best]:.2f}")
        axes.legend()
    axes.set_xlabel("training step")
    axes.set_ylabel(label)
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def plot_alignment_uniformity(points: Sequence[tuple[int, float, float]], path: str) -> None:
    """The paper's Figure 2 (:func:`alignment_uniformity_figure`), saved as a PNG at ``path``."""
    figure = alignment_uniformity_figure(points)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def alignment_uniformity_figure(points: Sequence[tuple[int, float, float]]) -> Figure:
    """The paper's Figure 2: l_uniform on x, l_align on y, one point per evaluated checkpoint ``(step, alignment,
    uniformity)``, arrows in training order (lower-left is better). The values of a run often span a tiny range
    (uniformity -3.72 to -3.69): the ticks are plain numbers with as many decimals as their step needs, never an
    offset or a power of ten, and the step labels keep inside the figure. The caller closes the figure."""
    figure, axes = plt.subplots(figsize=(5.5, 4.5))
    uniform = [point[2] for point in points]
    align = [point[1] for point in points]
    axes.scatter(uniform, align, c=range(len(points)), cmap="viridis", zorder=3)
    for start, end in zip(points, points[1:]):
        axes.annotate(
            "", xy=(end[2], end[1]), xytext=(start[2], start[1]), arrowprops={"arrowstyle": "->", "color": "gray"}
        )
    for step, a, u in points:
        axes.annotate(str(step), (u, a), textcoords="offset points", xytext=(4, 4), fontsize=7)
    for axis in (axes.xaxis, axes.yaxis):
        _plain_ticks(axis)
    # Room around the points for their step labels, which are drawn up and right of each point.
    axes.margins(x=0.12, y=0.12)
    axes.tick_params(axis="x", labelrotation=30)
    axes.set_xlabel(r"$\ell_{uniform}$")
    axes.set_ylabel(r"$\ell_{align}$")
    axes.set_title("alignment vs uniformity (step labels)")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    return figure


class _PlainFormatter(Formatter):
    """Tick labels as plain decimals, as many as the tick step needs (a step of 0.005: 3), with no offset and no
    power of ten: matplotlib's default turns -3.70012 ... -3.70001 into "-0.00012 ... + -3.7", hard to read."""

    def __init__(self) -> None:
        self.decimals = 2

    def set_locs(self, locs: Sequence[float]) -> None:
        steps = [b - a for a, b in zip(sorted(locs), sorted(locs)[1:]) if b > a]
        # A step of 1, 2 or 5 x 10^-d needs d decimals; at least 2 keeps the labels of both axes alike.
        self.decimals = min(8, max(2, -math.floor(math.log10(min(steps)) + 1e-9))) if steps else 2

    def __call__(self, value: float, pos: int | None = None) -> str:
        return self.fix_minus(f"{value:.{self.decimals}f}")


def _plain_ticks(axis: Axis) -> None:
    axis.set_major_locator(MaxNLocator(TICKS, steps=[1, 2, 5, 10]))
    axis.set_major_formatter(_PlainFormatter())
