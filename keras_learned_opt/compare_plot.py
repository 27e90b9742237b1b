"""Learning-curve plot of a comparison: one line per optimizer at its best learning rate."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from keras_learned_opt.compare_result import CompareResult


def plot_learning_curves(result: "CompareResult", path: str | os.PathLike,
                         title: str | None = None, legend_metric: str | None = None) -> Path:
    """Draw mean loss over seeds per step, shaded between the min and max seed.

    The loss axis is logarithmic when every plotted loss is positive. Optimizers
    that diverged at every learning rate appear in the legend only. With
    ``legend_metric``, each legend entry also shows that metric's mean over the
    seeds at the selected learning rate.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only; never needs a display
        import matplotlib.pyplot as plt
        from matplotlib.ticker import MaxNLocator
    except ImportError as err:
        raise ImportError("plotting needs matplotlib: pip install 'keras-learned-opt[plots]'") from err

    figure, axes = plt.subplots(figsize=(7, 4.5))
    steps = np.arange(result.steps)
    positive = True
    for opt in result.optimizers:
        best = opt.best
        if best is None:
            axes.plot([], [], linestyle="none", label=f"{opt.label}: diverged at every rate")
            continue
        losses = best.losses  # [seeds, steps], all finite: a selectable rate never diverged
        mean = losses.mean(axis=0)
        label = f"{opt.label} (lr {best.learning_rate:g})"
        if legend_metric is not None and legend_metric in best.metrics:
            label += f", {legend_metric} {np.mean(best.metrics[legend_metric]):.4g}"
        (line,) = axes.plot(steps, mean, label=label)
        axes.fill_between(steps, losses.min(axis=0), losses.max(axis=0),
                          color=line.get_color(), alpha=0.2, linewidth=0)
        positive = positive and bool(np.all(losses > 0))
    if positive:
        axes.set_yscale("log")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("step")
    axes.set_ylabel("training minibatch loss")
    axes.set_title(title or f"{result.problem}: mean and min-max over {len(result.seeds)} seeds")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
