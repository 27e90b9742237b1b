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
