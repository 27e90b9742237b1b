"""A picture grid of image batches side by side (e.g. input / warped / target)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np


def save_image_grid(columns: Mapping[str, np.ndarray], path: str | os.PathLike,
                    title: str | None = None, row_labels: Sequence[str] | None = None) -> Path:
    """One row per example, one column per named batch.

    Args:
        columns: ``{column title: images [rows, H, W, C]}``, all with the same
            number of rows; values are shown on a fixed [0, 1] scale.
        path: the PNG to write.
        title: figure title.
        row_labels: optional text left of each row.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    names = list(columns)
    count = len(next(iter(columns.values())))
    if any(len(images) != count for images in columns.values()):
        raise ValueError("every column needs the same number of images")
    figure, axes = plt.subplots(count, len(names), figsize=(1.4 * len(names) + 0.6, 1.4 * count + 0.6),
                                squeeze=False)
    for col, name in enumerate(names):
        for row in range(count):
            image = np.clip(np.asarray(columns[name][row], np.float32), 0.0, 1.0)
            axis = axes[row, col]
            axis.imshow(image[..., 0] if image.shape[-1] == 1 else image, cmap="gray", vmin=0, vmax=1)
            axis.set_xticks([])
            axis.set_yticks([])
            if row == 0:
                axis.set_title(name, fontsize=8)
            if col == 0 and row_labels is not None:
                axis.set_ylabel(row_labels[row], fontsize=7)
    if title:
        figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
