import numpy as np
import pytest

from keras_learned_opt.errors import ArchitectureMismatchError
from keras_learned_opt.network import NetworkConfig, initial_weights
from keras_learned_opt.soup import average_weight_files, main
from keras_learned_opt.weights import load_weight_file, save_weight_file


def _write(path, config, seed, command):
    rng = np.random.default_rng(seed)  # every array differs between ingredients
    arrays = {name: value + rng.normal(size=value.shape)
              for name, value in initial_weights(config, seed=seed).items()}
    save_weight_file(path, arrays, config, {"command": command})
    return str(path)


def test_soup_is_the_mean_of_its_ingredients_and_records_them(tmp_path):
    config = NetworkConfig()
    paths = [_write(tmp_path / f"{i}.h5", config, seed=i, command=f"make {i}") for i in range(3)]
    out = average_weight_files(paths, tmp_path / "soup.h5", command="soup cmd")
    soup = load_weight_file(out)
    ingredients = [load_weight_file(p) for p in paths]
    assert soup.config == config
    for name, value in soup.arrays.items():
        expected = (ingredients[0].arrays[name] + ingredients[1].arrays[name]
                    + ingredients[2].arrays[name]) / 3
        np.testing.assert_allclose(value, expected, rtol=1e-6, atol=1e-7)
        assert not np.allclose(value, ingredients[0].arrays[name])
    assert soup.provenance["command"] == "soup cmd"
    assert [i["provenance"]["command"] for i in soup.provenance["soup_of"]] == [
        "make 0", "make 1", "make 2"]
    assert [i["checksum"] for i in soup.provenance["soup_of"]] == [f.checksum for f in ingredients]


def test_soup_of_one_file_is_refused(tmp_path):
    path = _write(tmp_path / "a.h5", NetworkConfig(), seed=0, command="")
    with pytest.raises(ValueError, match="at least two"):
        average_weight_files([path], tmp_path / "soup.h5")


def test_soup_of_different_architectures_names_the_mismatch(tmp_path):
    a = _write(tmp_path / "a.h5", NetworkConfig(), seed=0, command="")
    b = _write(tmp_path / "b.h5", NetworkConfig(hidden_sizes=(10, 10)), seed=0, command="")
    with pytest.raises(ArchitectureMismatchError, match="b.h5"):
        average_weight_files([a, b], tmp_path / "soup.h5")
    assert not (tmp_path / "soup.h5").exists()


def test_soup_command_line_writes_the_file(tmp_path, capsys):
    config = NetworkConfig()
    a = _write(tmp_path / "a.h5", config, seed=0, command="")
    b = _write(tmp_path / "b.h5", config, seed=1, command="")
    out = tmp_path / "soup.h5"
    assert main(["--out", str(out), a, b]) == 0
    assert "wrote" in capsys.readouterr().out
    assert load_weight_file(out).provenance["command"].startswith(
        "python -m keras_learned_opt.soup --out")


def test_weighted_soup_interpolates_and_records_the_shares(tmp_path):
    config = NetworkConfig()
    a = _write(tmp_path / "a.h5", config, seed=0, command="")
    b = _write(tmp_path / "b.h5", config, seed=1, command="")
    out = tmp_path / "mix.h5"
    assert main(["--out", str(out), a, b, "--coefficients", "3", "1"]) == 0
    mix, fa, fb = (load_weight_file(p) for p in (out, a, b))
    for name, value in mix.arrays.items():
        np.testing.assert_allclose(value, 0.75 * fa.arrays[name] + 0.25 * fb.arrays[name],
                                   rtol=1e-6, atol=1e-7)
    assert [i["share"] for i in mix.provenance["soup_of"]] == [0.75, 0.25]
    assert "0.75 x a" in mix.description
    # equal coefficients are the plain mean
    plain = average_weight_files([a, b], tmp_path / "plain.h5")
    even = average_weight_files([a, b], tmp_path / "even.h5", coefficients=[2, 2])
    for name, value in load_weight_file(plain).arrays.items():
        np.testing.assert_allclose(load_weight_file(even).arrays[name], value, rtol=1e-6)


@pytest.mark.parametrize("coefficients, message", [
    ([1.0], "1 coefficients for 2 ingredients"),
    ([1.0, -0.5], "non-negative"),
    ([0.0, 0.0], "not all zero"),
    ([1.0, float("nan")], "finite"),
])
def test_bad_coefficients_are_refused_before_writing(tmp_path, coefficients, message):
    a = _write(tmp_path / "a.h5", NetworkConfig(), seed=0, command="")
    b = _write(tmp_path / "b.h5", NetworkConfig(), seed=1, command="")
    with pytest.raises(ValueError, match=message):
        average_weight_files([a, b], tmp_path / "mix.h5", coefficients=coefficients)
    assert not (tmp_path / "mix.h5").exists()
