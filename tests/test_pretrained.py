import json

import pytest

import keras_learned_opt as klo
from keras_learned_opt import bundled as pretrained
from keras_learned_opt.errors import NoPretrainedWeightsError, UnknownPretrainedError
from keras_learned_opt.weights import load_weight_file


def test_every_bundled_file_is_valid_and_described():
    listing = klo.list_pretrained()
    for name, description in listing.items():
        weight_file = load_weight_file(pretrained.pretrained_dir() / f"{name}.h5")
        assert description, f"{name} has no description"
        assert weight_file.provenance.get("command"), f"{name} does not record its command"
    default = json.loads((pretrained.pretrained_dir() / "index.json").read_text())["default"]
    assert default is None or default in listing



# The arrays' checksum (its first 16 hex digits) of each bundled file, as measured in
# README's and pretrained/README.md's tables: a file replaced without re-measuring fails
# here. (load_weight_file checks each file's arrays against its own stored checksum.)
BUNDLED_CHECKSUMS = {
    "antisymmetric-horizon-mix": "12d4dc06361042b6",
    "antisymmetric-horizon-mix2": "52c11ef992dbc44f",
    "antisymmetric-horizon-mix3": "938f5ee068651974",
    "antisymmetric-horizon-mix4": "68dfe0987af9b8a8",
    "antisymmetric-horizon-mix5": "8dd4dd4ed8734805",
    "antisymmetric-imitation-mix": "aaed641d1772fb14",
    "antisymmetric-mix": "643fd89c465f2f61",
    "antisymmetric-mix-u100": "d8daccfc94a309a1",
    "antisymmetric-rms-mix": "5cf352fc4463c045",
    "antisymmetric-rms-soup": "f9043954bb38deac",
    "antisymmetric-window-mix": "1c987553d049bc9c",
    "paper-fmnist-mlp": "6db01fa2e5e29e35",
    "paper-fmnist-mlp-dbd": "22e5ed1bcd29444d",
    "paper-fmnist-mlp-dbd-rms": "318365b93c4deb88",
    "paper-fmnist-mlp-dbd-rms2": "47c65940a0976cdd",
    "paper-fmnist-mlp-imitation": "e415bf091cc4e52c",
}


def test_bundled_files_are_the_measured_ones():
    assert set(klo.list_pretrained()) == set(BUNDLED_CHECKSUMS)
    for name, checksum in BUNDLED_CHECKSUMS.items():
        weight_file = load_weight_file(pretrained.pretrained_dir() / f"{name}.h5")
        assert weight_file.checksum.startswith(checksum), name

def test_unknown_name_lists_valid_names():
    with pytest.raises(UnknownPretrainedError, match="bundled names"):
        klo.LearnedOptimizer(weights="no-such-optimizer")


def test_missing_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        klo.LearnedOptimizer(weights=str(tmp_path / "missing.h5"))


def test_default_without_bundled_file_says_so(tmp_path, monkeypatch):
    (tmp_path / "index.json").write_text('{"default": null}')
    monkeypatch.setattr(pretrained, "pretrained_dir", lambda: tmp_path)
    with pytest.raises(NoPretrainedWeightsError, match="no pretrained weights are bundled"):
        klo.LearnedOptimizer()


def test_bundled_name_resolves(tmp_path, monkeypatch, sign_descent_file):
    (tmp_path / "index.json").write_text('{"default": "sign_descent"}')
    (tmp_path / "sign_descent.h5").write_bytes(sign_descent_file.read_bytes())
    monkeypatch.setattr(pretrained, "pretrained_dir", lambda: tmp_path)
    assert klo.list_pretrained() == {"sign_descent": "hand-set sign descent (tests only)"}
    assert klo.LearnedOptimizer().weights_source == "sign_descent"
    assert klo.LearnedOptimizer("sign_descent").network_config.hidden_sizes == (20, 20)
