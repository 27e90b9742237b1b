"""Command-line plumbing shared by the examples: arguments, optimizer specs, output files.

The comparison itself is ``keras_learned_opt.compare.compare``; this module only
turns an example's arguments into its inputs and writes its outputs.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from keras_learned_opt.compare import DEFAULT_LEARNED_LR_GRID, DEFAULT_LR_GRID, compare  # noqa: E402
from keras_learned_opt.compare_result import CompareResult  # noqa: E402
from keras_learned_opt.errors import NoPretrainedWeightsError, UnknownPretrainedError  # noqa: E402
from keras_learned_opt.optimizer_specs import OptimizerSpec, parse_optimizer_spec  # noqa: E402
from keras_learned_opt.vision.datasets import DatasetUnavailableError  # noqa: E402


def make_parser(description: str, *, steps: int, seeds: int, out: str, batch_size: int,
                baselines: str = "adam,rmsprop,sgd,nag") -> argparse.ArgumentParser:
    """The arguments every example takes, with that example's fast defaults."""
    parser = argparse.ArgumentParser(description=description,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--steps", type=int, default=steps, help="training steps per run")
    parser.add_argument("--seeds", type=int, default=seeds,
                        help="seeds per optimizer and rate (the same initial weights and batches for all)")
    parser.add_argument("--out", default=out, help="output folder (JSON, CSV, PNG)")
    parser.add_argument("--weights", default=None,
                        help="learned optimizer: bundled weight name or file (default: the bundled default)")
    parser.add_argument("--baselines", default=baselines,
                        help="comma-separated hand-made optimizers from adam, rmsprop, sgd, nag ('' for none)")
    parser.add_argument("--lr-grid", type=float, nargs="+", default=list(DEFAULT_LR_GRID),
                        help="learning rates tried for each hand-made optimizer")
    parser.add_argument("--learned-lr-grid", type=float, nargs="+", default=list(DEFAULT_LEARNED_LR_GRID),
                        help="learning rates tried for the learned optimizer")
    parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def learned_spec(weights: str | None) -> OptimizerSpec:
    """The learned optimizer, labelled ``learned:<bundled name or file stem>``."""
    spec = parse_optimizer_spec(f"learned:{weights}" if weights else "learned")
    name = Path(weights).stem if weights else "default"
    return dataclasses.replace(spec, label=f"learned:{name}")


def optimizer_specs(args: argparse.Namespace) -> list[OptimizerSpec]:
    """The learned optimizer first, then the hand-made baselines."""
    baselines = [name.strip() for name in args.baselines.split(",") if name.strip()]
    return [learned_spec(args.weights), *(parse_optimizer_spec(name) for name in baselines)]


def run_comparison(problem: Any, args: argparse.Namespace, metadata: dict[str, Any],
                   on_run_end: Callable | None = None) -> CompareResult:
    """``compare`` with the example's optimizers (``args.specs``), seeds, steps and grids."""
    return compare(problem, args.specs, seeds=args.seeds, steps=args.steps,
                   lr_grid=args.lr_grid, learned_lr_grid=args.learned_lr_grid,
                   verbose=0 if args.quiet else 1, on_run_end=on_run_end,
                   metadata={"command": args.command, "weights": args.weights or "bundled default",
                             **metadata})


def save_result(result: CompareResult, out: str | os.PathLike, stem: str, title: str | None = None,
                legend_metric: str | None = None) -> dict[str, Path]:
    """Print the table; write ``<stem>.json``, ``<stem>.csv``, ``<stem>_curves.csv`` and ``<stem>.png``."""
    out = Path(out)
    print()
    print(result.table())
    paths = {"json": result.to_json(out / f"{stem}.json")}
    paths["csv"], paths["curves_csv"] = result.to_csv(out / f"{stem}.csv", out / f"{stem}_curves.csv")
    paths["plot"] = result.plot(out / f"{stem}.png", title=title, legend_metric=legend_metric)
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return paths


def subset(x: np.ndarray, y: np.ndarray, size: int | None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A fixed random subset of ``size`` rows (all rows when ``size`` is None or too large)."""
    if size is None or size >= len(x):
        return x, y
    rows = np.sort(np.random.default_rng(seed).choice(len(x), size, replace=False))
    return x[rows], y[rows]


def run_main(body: Callable[[], None], args: argparse.Namespace) -> int:
    """Run an example; expected failures (missing weights or data) print one line and return 2.

    The optimizer specs are made first (into ``args.specs``), so a bad
    ``--weights`` fails before any data is loaded.
    """
    started = time.monotonic()
    try:
        args.specs = optimizer_specs(args)
        body()
    except (NoPretrainedWeightsError, UnknownPretrainedError, FileNotFoundError,
            DatasetUnavailableError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wall time: {time.monotonic() - started:.1f} s")
    return 0


def record_wall_time(result: CompareResult, started: float) -> None:
    """Store the wall time so far in the result's metadata (written with the JSON)."""
    result.metadata["wall_seconds"] = round(time.monotonic() - started, 1)


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None,
               script: str) -> argparse.Namespace:
    """Parse ``argv`` (default ``sys.argv[1:]``) and remember the command line for the JSON."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    if args.steps < 1 or args.seeds < 1:
        parser.error("--steps and --seeds must be at least 1")
    args.command = " ".join(["python", f"examples/{Path(script).name}", *argv])
    return args
