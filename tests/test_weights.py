import h5py
import numpy as np
import pytest

from keras_learned_opt.errors import ArchitectureMismatchError, WeightFileError
from keras_learned_opt.network import NetworkConfig, initial_weights
from keras_learned_opt.weights import FORMAT_VERSION, load_weight_file, save_weight_file


def _write(path, config=None, **kwargs):
    config = config or NetworkConfig()
    arrays = initial_weights(config, seed=1)
    save_weight_file(path, arrays, config, provenance={"problem": "test", "seed": 1},
                     description="a test file", **kwargs)
    return arrays


def test_round_trip(tmp_path):
    path = tmp_path / "w.h5"
    arrays = _write(path)
    loaded = load_weight_file(path)
    assert loaded.config == NetworkConfig()
    assert loaded.provenance == {"problem": "test", "seed": 1}
    assert loaded.description == "a test file"
    for name, value in arrays.items():
        np.testing.assert_array_equal(loaded.arrays[name], value)
    assert not list(tmp_path.glob("*.tmp")), "temporary file left behind"


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_weight_file(tmp_path / "nope.h5")


def test_not_hdf5(tmp_path):
    path = tmp_path / "text.h5"
    path.write_text("hello, I am not HDF5")
    with pytest.raises(WeightFileError, match="not a readable HDF5"):
        load_weight_file(path)


def test_truncated(tmp_path):
    path = tmp_path / "w.h5"
    _write(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightFileError):
        load_weight_file(path)


def test_hdf5_but_foreign(tmp_path):
    path = tmp_path / "foreign.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("x", data=np.zeros(3))
    with pytest.raises(WeightFileError, match="not a keras_learned_opt weight file"):
        load_weight_file(path)


def _edit(path, fn):
    with h5py.File(path, "r+") as f:
        fn(f)


def test_missing_array_is_named(tmp_path):
    path = tmp_path / "w.h5"
    _write(path)
    _edit(path, lambda f: f["arrays/lstm_1"].__delitem__("kernel"))
    with pytest.raises(ArchitectureMismatchError, match=r"lstm_1/kernel"):
        load_weight_file(path)


def test_misshaped_array_names_expected_and_found(tmp_path):
    path = tmp_path / "w.h5"
    _write(path)

    def reshape(f):
        del f["arrays/lstm_0/kernel"]
        f["arrays/lstm_0"].create_dataset("kernel", data=np.zeros((22, 160), np.float32))

    _edit(path, reshape)
    with pytest.raises(ArchitectureMismatchError, match=r"'lstm_0/kernel' has shape \(22, 160\), expected \(22, 80\)"):
        load_weight_file(path)


def test_unknown_format_version(tmp_path):
    path = tmp_path / "w.h5"
    _write(path)
    _edit(path, lambda f: f.attrs.__setitem__("format_version", FORMAT_VERSION + 1))
    with pytest.raises(WeightFileError, match="format version 2"):
        load_weight_file(path)


def test_non_finite_weights(tmp_path):
    path = tmp_path / "w.h5"
    _write(path)

    def poison(f):
        f["arrays/output/bias"][0] = np.nan

    _edit(path, poison)
    with pytest.raises(WeightFileError, match="'output/bias' contains NaN"):
        load_weight_file(path)
    config = NetworkConfig()
    arrays = initial_weights(config)
    arrays["lstm_0/bias"][0] = np.inf
    with pytest.raises(WeightFileError, match="NaN or Inf"):
        save_weight_file(tmp_path / "bad.h5", arrays, config)
    assert not (tmp_path / "bad.h5").exists()


def test_checksum_mismatch(tmp_path):
    path = tmp_path / "w.h5"
    _write(path)

    def tamper(f):
        f["arrays/lstm_0/kernel"][0, 0] += 1.0

    _edit(path, tamper)
    with pytest.raises(WeightFileError, match="checksum mismatch"):
        load_weight_file(path)


def test_overwrite_is_atomic(tmp_path, monkeypatch):
    """A failure while writing leaves the previous file intact."""
    path = tmp_path / "w.h5"
    _write(path)
    before = path.read_bytes()

    def fail(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(h5py.Group, "create_dataset", fail)
    with pytest.raises(OSError, match="disk full"):
        _write(path)
    assert path.read_bytes() == before
    assert not list(tmp_path.glob("*.tmp"))
