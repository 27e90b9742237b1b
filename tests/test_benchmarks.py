"""Every benchmark runs end to end with --tiny, so that none of them rots."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
SCRIPTS = ["update_throughput.py", "fit_step_ratio.py", "memory.py", "meta_train_throughput.py",
           "first_order_headroom.py", "update_drift.py"]


@pytest.mark.slow
@pytest.mark.parametrize("script", SCRIPTS)
def test_benchmark_runs_tiny(script):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    done = subprocess.run([sys.executable, str(BENCHMARKS / script), "--tiny"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    table = [line for line in lines if line.startswith("|")]
    assert len(table) >= 3, done.stdout  # header, rule, at least one row
    assert "nan" not in done.stdout.lower(), done.stdout
