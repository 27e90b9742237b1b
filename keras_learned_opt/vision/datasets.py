"""Image classification datasets as float arrays, with a clear error when a download fails."""

from __future__ import annotations

import numpy as np

DATASETS = ("fashion_mnist", "mnist", "cifar10")


class DatasetUnavailableError(RuntimeError):
    """A dataset is neither on disk nor downloadable (e.g. no internet)."""


def _download(name: str) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    import keras

    try:
        return getattr(keras.datasets, name).load_data()
    except Exception as err:  # network failures come in many types
        raise DatasetUnavailableError(
            f"could not load {name} through keras.datasets.{name}.load_data() "
            f"({type(err).__name__}: {err}). It is downloaded once from the internet into "
            "~/.keras/datasets; connect to the internet or copy the file there, or use "
            "--dataset fashion_mnist, which the Debian package dataset-fashion-mnist provides offline."
        ) from err


def load_image_dataset(name: str) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """``((x_train, y_train), (x_test, y_test))``: images ``[N, H, W, C]`` float32 in [0, 1], labels int32 ``[N]``.

    ``fashion_mnist`` (28x28x1) comes from ``data.load_fashion_mnist`` (Debian
    package, Keras cache, then download); ``mnist`` (28x28x1) and ``cifar10``
    (32x32x3) from ``keras.datasets``, which needs the internet the first time.

    Raises:
        ValueError: an unknown name.
        DatasetUnavailableError: the download failed.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown dataset '{name}'; choose one of {list(DATASETS)}")
    if name == "fashion_mnist":
        from keras_learned_opt.data import load_fashion_mnist

        splits = load_fashion_mnist()
    else:
        splits = _download(name)
    out = []
    for x, y in splits:
        x = np.asarray(x)
        if x.ndim == 3:
            x = x[..., None]  # grey images get a channel axis
        out.append(((x.astype(np.float32) / 255.0), np.asarray(y).reshape(-1).astype(np.int32)))
    return out[0], out[1]
