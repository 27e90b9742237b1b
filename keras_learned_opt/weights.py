"""HDF5 weight files: the network's arrays with their configuration and provenance.

Layout of a file (format version 1)::

    /                      attributes: format, format_version, network_config (JSON),
                           provenance (JSON), description, checksum (sha256 hex)
    /arrays/<name>         one float32 dataset per network array, e.g. "lstm_0/kernel"

Files are written to a temporary file in the same folder and moved into place,
so a reader never sees a half-written file.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Mapping

import h5py
import numpy as np

from keras_learned_opt.errors import ArchitectureMismatchError, WeightFileError
from keras_learned_opt.network import NetworkConfig, weight_shapes

FORMAT_NAME = "keras_learned_opt.network_weights"
FORMAT_VERSION = 1


@dataclasses.dataclass
class WeightFile:
    """The validated content of a weight file."""

    arrays: dict[str, np.ndarray]
    config: NetworkConfig
    provenance: dict[str, Any]
    description: str
    checksum: str
    path: str | None = None


def arrays_checksum(arrays: Mapping[str, np.ndarray]) -> str:
    """sha256 over names, shapes and float32 bytes of the arrays, in name order."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        value = np.ascontiguousarray(arrays[name], dtype="<f4")
        digest.update(name.encode())
        digest.update(repr(tuple(value.shape)).encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def validate_arrays(arrays: Mapping[str, np.ndarray], config: NetworkConfig, source: str) -> None:
    """Raise a specific error unless ``arrays`` fit ``config`` exactly and are finite."""
    expected = weight_shapes(config)
    missing = [name for name in expected if name not in arrays]
    if missing:
        raise ArchitectureMismatchError(
            f"{source}: missing array(s) {missing} required by the network configuration"
        )
    extra = sorted(set(arrays) - set(expected))
    if extra:
        raise ArchitectureMismatchError(
            f"{source}: unexpected array(s) {extra} not used by the network configuration"
        )
    for name, shape in expected.items():
        found = tuple(np.shape(arrays[name]))
        if found != shape:
            raise ArchitectureMismatchError(
                f"{source}: array '{name}' has shape {found}, expected {shape} "
                f"for hidden_sizes={list(config.hidden_sizes)}"
            )
        if not np.all(np.isfinite(arrays[name])):
            raise WeightFileError(f"{source}: array '{name}' contains NaN or Inf")


def default_provenance(**fields: Any) -> dict[str, Any]:
    """Provenance with the package version and the current UTC date filled in."""
    from keras_learned_opt import __version__

    provenance = {
        "package_version": __version__,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    provenance.update(fields)
    return provenance


def save_weight_file(
    path: str | os.PathLike,
    arrays: Mapping[str, np.ndarray],
    config: NetworkConfig,
    provenance: Mapping[str, Any] | None = None,
    description: str = "",
) -> str:
    """Validate and write a weight file atomically; returns the checksum."""
    path = Path(path)
    arrays = {name: np.asarray(value, dtype=np.float32) for name, value in arrays.items()}
    validate_arrays(arrays, config, source=f"arrays for {path}")
    checksum = arrays_checksum(arrays)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o644)  # mkstemp makes 0600; weight files are meant to be shared
    try:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = FORMAT_NAME
            f.attrs["format_version"] = FORMAT_VERSION
            f.attrs["network_config"] = config.to_json()
            f.attrs["provenance"] = json.dumps(dict(provenance or {}), sort_keys=True)
            f.attrs["description"] = description
            f.attrs["checksum"] = checksum
            group = f.create_group("arrays")
            for name, value in arrays.items():
                group.create_dataset(name, data=value)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return checksum


def _read_attr(f: h5py.File, key: str, source: str) -> Any:
    if key not in f.attrs:
        raise WeightFileError(f"{source}: attribute '{key}' is missing; not a complete weight file")
    value = f.attrs[key]
    return value.decode() if isinstance(value, bytes) else value


def load_weight_file(path: str | os.PathLike) -> WeightFile:
    """Read and validate a weight file.

    Raises:
        FileNotFoundError: the file does not exist.
        WeightFileError: not HDF5, truncated, wrong format or version, bad
            checksum, non-finite values.
        ArchitectureMismatchError: arrays missing or mis-shaped for the
            configuration stored in the file.
    """
    path = Path(path)
    source = f"weight file '{path}'"
    if not path.is_file():
        raise FileNotFoundError(f"{source} does not exist")
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise WeightFileError(f"{source} is not a readable HDF5 file (truncated or corrupt?): {err}") from err
    try:
        with f:
            if f.attrs.get("format") not in (FORMAT_NAME, FORMAT_NAME.encode()):
                raise WeightFileError(f"{source} is HDF5 but not a keras_learned_opt weight file")
            version = int(_read_attr(f, "format_version", source))
            if version != FORMAT_VERSION:
                raise WeightFileError(
                    f"{source} has format version {version}; this package reads version "
                    f"{FORMAT_VERSION} (upgrade keras_learned_opt for newer files)"
                )
            try:
                config = NetworkConfig.from_dict(json.loads(_read_attr(f, "network_config", source)))
                provenance = json.loads(_read_attr(f, "provenance", source))
            except (ValueError, TypeError) as err:
                raise WeightFileError(f"{source}: invalid configuration: {err}") from err
            description = str(_read_attr(f, "description", source))
            stored_checksum = str(_read_attr(f, "checksum", source))
            if "arrays" not in f:
                raise ArchitectureMismatchError(f"{source}: group 'arrays' is missing")
            arrays = {}
            f["arrays"].visititems(
                lambda name, obj: arrays.__setitem__(name, np.asarray(obj, dtype=np.float32))
                if isinstance(obj, h5py.Dataset) else None
            )
    except (OSError, KeyError, RuntimeError) as err:
        raise WeightFileError(f"{source} could not be read (truncated or corrupt?): {err}") from err
    validate_arrays(arrays, config, source)
    checksum = arrays_checksum(arrays)
    if checksum != stored_checksum:
        raise WeightFileError(
            f"{source}: checksum mismatch (stored {stored_checksum[:12]}..., "
            f"computed {checksum[:12]}...); the arrays were modified or damaged"
        )
    return WeightFile(arrays, config, provenance, description, checksum, str(path))
