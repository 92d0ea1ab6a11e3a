"""PNG plots of what people look at after a run: the dev curve and the alignment/uniformity trajectory."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")  # files only: recipes run on headless machines
import matplotlib.pyplot as plt  # noqa: E402


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
    """The paper's Figure 2: l_uniform on x, l_align on y, one point per evaluated checkpoint, arrows in
    training order (lower-left is better)."""
    figure, axes = plt.subplots(figsize=(5, 4.5))
    uniform = [point[2] for point in points]
    align = [point[1] for point in points]
    axes.scatter(uniform, align, c=range(len(points)), cmap="viridis", zorder=3)
    for start, end in zip(points, points[1:]):
        axes.annotate(
            "", xy=(end[2], end[1]), xytext=(start[2], start[1]), arrowprops={"arrowstyle": "->", "color": "gray"}
        )
    for step, a, u in points:
        axes.annotate(str(step), (u, a), textcoords="offset points", xytext=(4, 4), fontsize=7)
    axes.set_xlabel(r"$\ell_{uniform}$")
    axes.set_ylabel(r"$\ell_{align}$")
    axes.set_title("alignment vs uniformity (step labels)")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
