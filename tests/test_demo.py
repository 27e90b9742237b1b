import json

import pytest

from keras_learned_opt import demo


@pytest.mark.slow
def test_demo_runs_learned_beside_tuned_adam(tmp_path, capsys):
    assert demo.main(["--steps", "20", "--seeds", "1", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    from keras_learned_opt.bundled import default_pretrained_name

    assert f"learned:{default_pretrained_name()}" in printed and "| adam |" in printed
    result = json.loads((tmp_path / "fmnist_mlp.json").read_text())
    assert result["steps"] == 20
    assert (tmp_path / "fmnist_mlp.png").stat().st_size > 0
