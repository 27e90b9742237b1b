"""Bundled weight files: where they live and how names resolve to paths.

Shipped files live in the top-level ``pretrained/`` folder of the source tree,
which is installed as the ``keras_learned_opt.pretrained`` package data.
``pretrained/index.json`` names the recommended (default) file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from keras_learned_opt.errors import NoPretrainedWeightsError, UnknownPretrainedError

_PACKAGE_DIR = Path(__file__).resolve().parent


def pretrained_dir() -> Path:
    """The folder of bundled weight files (installed wheel or source tree)."""
    for candidate in (_PACKAGE_DIR / "pretrained", _PACKAGE_DIR.parent / "pretrained"):
        if (candidate / "index.json").is_file():
            return candidate
    raise FileNotFoundError(
        f"bundled 'pretrained' folder not found next to {_PACKAGE_DIR}; the installation is incomplete"
    )


def _index() -> dict:
    return json.loads((pretrained_dir() / "index.json").read_text())


def list_pretrained() -> dict[str, str]:
    """Bundled weight names mapped to their descriptions (read from the files)."""
    from keras_learned_opt.weights import load_weight_file

    return {
        path.stem: load_weight_file(path).description
        for path in sorted(pretrained_dir().glob("*.h5"))
    }


def default_pretrained_name() -> str:
    """The name ``LearnedOptimizer()`` uses when no weights are given."""
    name = _index().get("default")
    if not name:
        raise NoPretrainedWeightsError(
            "LearnedOptimizer() needs weights, and no pretrained weights are bundled yet; "
            "pass weights='path/to/file.h5' (meta-train one with "
            "`python -m keras_learned_opt.meta_train`)"
        )
    return name


def resolve_weights(weights: str | os.PathLike | None) -> Path:
    """Turn ``None``, a bundled name or a path into the path of a weight file."""
    if weights is None:
        weights = default_pretrained_name()
    text = os.fspath(weights)
    path = Path(text).expanduser()
    if path.is_file():
        return path
    looks_like_path = os.sep in text or "/" in text or path.suffix in (".h5", ".hdf5")
    if looks_like_path:
        raise FileNotFoundError(f"weight file '{text}' does not exist")
    bundled = pretrained_dir() / f"{text}.h5"
    if bundled.is_file():
        return bundled
    names = sorted(p.stem for p in pretrained_dir().glob("*.h5"))
    raise UnknownPretrainedError(
        f"'{text}' is neither an existing file nor a bundled weight name; "
        f"bundled names: {names or 'none yet'}"
    )
