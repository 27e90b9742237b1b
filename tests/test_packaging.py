"""The wheel carries pretrained/ so an installed package works without the source tree."""

import os
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_contains_pretrained_and_finds_it_when_installed(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         str(ROOT), "-w", str(dist)],
        check=True, cwd=tmp_path, capture_output=True,
    )
    wheel = next(dist.glob("keras_learned_opt-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "keras_learned_opt/pretrained/index.json" in names
    bundled = sorted(p.name for p in (ROOT / "pretrained").glob("*.h5"))
    assert sorted(Path(n).name for n in names if n.endswith(".h5")) == bundled

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    target = venv / "lib" / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q",
                    "--target", str(target), str(wheel)], check=True, capture_output=True)
    # Dependencies (keras, tensorflow, h5py) come from this environment; the
    # package itself only from the installed wheel, run away from the source tree.
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(target), sysconfig.get_paths()["purelib"]]))
    script = textwrap.dedent("""
        import json, keras_learned_opt as klo
        from pathlib import Path
        where = Path(klo.__file__).parent
        assert klo.pretrained_dir() == where / "pretrained", klo.pretrained_dir()
        names = klo.list_pretrained()
        default = json.loads((where / "pretrained" / "index.json").read_text())["default"]
        if default:
            klo.LearnedOptimizer()
        for name in names:
            klo.LearnedOptimizer(name)
        print("OK", where, sorted(names))
    """)
    result = subprocess.run([str(venv / "bin" / "python"), "-c", script],
                            capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode == 0 and "OK" in result.stdout, result.stderr[-3000:]
    assert str(target) in result.stdout
