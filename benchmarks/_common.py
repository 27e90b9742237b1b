"""Shared helpers of the benchmarks: side-by-side timing, tables, reference rates.

Every benchmark times its variants *interleaved*: in each round every variant
runs once, and the reported figure is the median over rounds. Background load
then slows all variants alike, so the ratios printed stay meaningful on a busy
machine even when the absolute figures do not.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

# Measure the checkout these scripts live in, not some installed copy.
ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# tf.function retracing notices: each variant is traced once on purpose.
logging.getLogger("tensorflow").setLevel(logging.ERROR)

import numpy as np  # noqa: E402

from keras_learned_opt.network import NetworkConfig, initial_weights, weight_shapes  # noqa: E402

PAPER_CONFIG = NetworkConfig(hidden_sizes=(20, 20), input_features="log_and_sign")


def parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the options every benchmark takes."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--tiny", action="store_true",
                   help="smallest sizes and one or two rounds: checks the script runs (CI)")
    p.add_argument("--rounds", type=int, default=None,
                   help="interleaved timing rounds (median reported)")
    p.add_argument("--weights", default=None,
                   help="weight file for the learned optimizer (default: random 2x20 weights; "
                        "speed does not depend on the values)")
    return p


def weight_file(path: str | None) -> str:
    """``path``, or a weight file of small random 2x20 weights in a temporary folder."""
    if path:
        return path
    from keras_learned_opt.weights import save_weight_file

    rng = np.random.default_rng(0)
    arrays = {k: (0.1 * rng.standard_normal(v.shape)).astype(np.float32)
              for k, v in initial_weights(PAPER_CONFIG).items()}
    out = Path(tempfile.mkdtemp(prefix="klo_bench_")) / "random_2x20.h5"
    save_weight_file(out, arrays, PAPER_CONFIG, provenance={"made_by": "benchmarks/_common.py"},
                     description="random weights for benchmarks")
    return str(out)


def interleaved(variants: Mapping[str, Callable[[], object]], rounds: int,
                calls: int = 1, warmup: int = 1) -> dict[str, float]:
    """Median seconds per call of each variant, timed side by side.

    Each variant is first called ``warmup`` times (tracing, compilation), then
    in each of ``rounds`` rounds every variant is timed over ``calls`` calls.
    A variant's callable must block until its work is done.
    """
    for fn in variants.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            samples[name].append((time.perf_counter() - start) / calls)
    return {name: statistics.median(s) for name, s in samples.items()}


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A markdown table (pastes straight into benchmarks/README.md)."""
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |" for row in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


def _fmt(value: object) -> str:
    if isinstance(value, float):
        if value == 0 or 1e-2 <= abs(value) < 1e5:
            return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"
        return f"{value:.3g}"
    return str(value)


def lstm_flops_per_coordinate(config: NetworkConfig = PAPER_CONFIG) -> int:
    """Multiply-add FLOPs (2 per MAC) of the network's matmuls for one coordinate."""
    return sum(2 * s[0] * s[1] for n, s in weight_shapes(config).items() if n.endswith("kernel"))


def thin_matmul_fn(rows: int, config: NetworkConfig = PAPER_CONFIG, jit: bool = False):
    """A compiled function running the network's matmuls alone on ``rows`` rows.

    The forward products ``[rows, in] x [in, out]`` for every kernel of the
    network (for 2x20: 22x80, 40x80, 20x1): the work no implementation of the
    update can avoid, run at the machine's rate for such thin shapes.
    """
    import tensorflow as tf

    rng = np.random.default_rng(0)
    pairs = [
        (tf.constant(rng.standard_normal((rows, s[0]), dtype=np.float32)),
         tf.constant(rng.standard_normal(s, dtype=np.float32)))
        for n, s in weight_shapes(config).items() if n.endswith("kernel")
    ]

    @tf.function(jit_compile=jit)
    def products():
        return [tf.matmul(x, k) for x, k in pairs]

    return lambda: products()


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (Linux: ru_maxrss is in kB)."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def machine_note() -> str:
    """One line on the machine: CPU count and current load (figures on a loaded machine vary)."""
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = float("nan")
    import tensorflow as tf

    return (f"machine: {os.cpu_count()} CPUs, load average {load:.2f} at start; "
            f"TensorFlow {tf.__version__}, devices {[d.device_type for d in tf.config.list_logical_devices()]}")
