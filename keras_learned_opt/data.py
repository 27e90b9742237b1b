"""Fashion-MNIST loading: Debian package first, then the Keras cache, then download."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
_FILES = {
    "x_train": "train-images-idx3-ubyte.gz",
    "y_train": "train-labels-idx1-ubyte.gz",
    "x_test": "t10k-images-idx3-ubyte.gz",
    "y_test": "t10k-labels-idx1-ubyte.gz",
}


def _read_idx(path: Path) -> np.ndarray:
    """Read a (gzipped) IDX file into a uint8 array."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 8:
        raise ValueError(f"{path} is not an unsigned-byte IDX file")
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(dims)):
        raise ValueError(f"{path} is truncated: expected {int(np.prod(dims))} values, found {array.size}")
    return array.reshape(dims)


def _candidate_dirs() -> list[Path]:
    dirs = []
    if os.environ.get("FASHION_MNIST_DIR"):
        dirs.append(Path(os.environ["FASHION_MNIST_DIR"]))
    dirs.append(DEBIAN_DIR)
    keras_home = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras"))
    dirs.append(keras_home / "datasets" / "fashion-mnist")
    return dirs


def load_fashion_mnist() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """``((x_train, y_train), (x_test, y_test))`` as uint8 arrays, 28x28 images.

    Looks in ``$FASHION_MNIST_DIR``, the Debian package ``dataset-fashion-mnist``
    (``/usr/share/datasets/fashion-mnist``), the Keras cache
    (``~/.keras/datasets/fashion-mnist``), and finally downloads through
    ``keras.datasets.fashion_mnist``.
    """
    for directory in _candidate_dirs():
        if all((directory / name).is_file() for name in _FILES.values()):
            arrays = {key: _read_idx(directory / name) for key, name in _FILES.items()}
            return (arrays["x_train"], arrays["y_train"]), (arrays["x_test"], arrays["y_test"])
    import keras

    try:
        return keras.datasets.fashion_mnist.load_data()
    except Exception as err:  # network failures come in many types
        raise FileNotFoundError(
            "Fashion-MNIST not found in "
            + ", ".join(str(d) for d in _candidate_dirs())
            + f" and the download failed ({err}); on Debian/Ubuntu: apt-get install dataset-fashion-mnist"
        ) from err
