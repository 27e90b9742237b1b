"""Compare optimizers on one problem with the same seeds, initializations and batches.

Every optimizer trains the episodes of the same seeds (default: 5 seeds from
``EVALUATION_SEED_BASE``, which meta-training never sees), so they start from
the same weights and see the same minibatches in the same order. Hand-made
optimizers are tuned over a learning-rate grid and reported at their best
rate; a learned optimizer runs at learning rate 1.0 (the update it was
meta-trained to make) unless a learned grid is given. See ``compare_result``
for the metric, the divergence rule and the selection.

Python::

    from keras_learned_opt.compare import compare
    result = compare("fmnist_mlp", ["learned:my.h5", "adam", "rmsprop", "sgd", "nag"])
    print(result.table())
    result.to_json("results.json"); result.plot("curves.png")

    # your own model and data:
    result = compare(build_model, data=(x, y), batch_size=64, optimizers=["adam", "nag"])
    # a model with BatchNorm/Dropout, trained with model.fit (see fit_runner.FitProblem
    # for held-out metrics such as test accuracy):
    result = compare(build_model, data=(x, y), fit=True, optimizers=["adam"])

Command line::

    python -m keras_learned_opt.compare --problem fmnist_mlp \\
        --optimizer learned:my.h5 --optimizer adam,rmsprop,sgd,nag \\
        --out results.json --plot curves.png
    python -m keras_learned_opt.compare --model mypackage.models:build --data xy.npz [--fit] ...
    python -m keras_learned_opt.compare --replot results.json --plot curves.png
"""

from __future__ import annotations

import argparse
import gc
import importlib
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from keras_learned_opt.compare_result import CompareResult, LrRuns, OptimizerResult
from keras_learned_opt.meta_train import EVALUATION_SEED_BASE
from keras_learned_opt.optimizer_specs import OptimizerSpec, parse_optimizer_spec

# Half-decade steps from 1e-3 to 1 (the grid of the hand-made baselines).
DEFAULT_LR_GRID = (1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0)
DEFAULT_LEARNED_LR_GRID = (1.0,)
HAND_MADE_DEFAULTS = ("adam", "rmsprop", "sgd", "nag")


def default_optimizers() -> list[str]:
    """The four hand-made baselines, preceded by ``learned`` when a default file is bundled."""
    from keras_learned_opt.bundled import default_pretrained_name

    try:
        default_pretrained_name()
    except (ValueError, FileNotFoundError):
        return list(HAND_MADE_DEFAULTS)
    return ["learned", *HAND_MADE_DEFAULTS]


def _check_grid(grid: Sequence[float], what: str) -> list[float]:
    grid = [float(v) for v in grid]
    if not grid:
        raise ValueError(f"the {what} learning-rate grid is empty; give at least one rate")
    bad = [v for v in grid if not (math.isfinite(v) and v > 0)]
    if bad:
        raise ValueError(f"the {what} learning-rate grid must hold positive numbers, got {bad}")
    if len(set(grid)) != len(grid):
        raise ValueError(f"the {what} learning-rate grid has duplicates: {grid}")
    return grid


def _resolve_problem(problem: Any, data: tuple[np.ndarray, np.ndarray] | None, batch_size: int,
                     loss_fn: Callable | None, name: str | None, fit: bool = False):
    """A registry name, a Problem, a FitProblem, or a model-building function (with ``data``)."""
    from keras_learned_opt.fit_runner import FitProblem
    from keras_learned_opt.problems import KerasProblem, Problem, get_problem

    if isinstance(problem, (Problem, FitProblem)):
        return problem
    if isinstance(problem, str):
        if data is not None:
            raise ValueError("data= is only used with a model-building function, not a problem name")
        return get_problem(problem)
    if callable(problem):
        if data is None:
            raise ValueError("a model-building function needs data=(x, y)")
        x, y = data
        label = name or getattr(problem, "__name__", "custom_model")
        if fit:
            return FitProblem(label, problem, (np.asarray(x), np.asarray(y)), batch_size=batch_size,
                              loss=loss_fn)
        options = {} if loss_fn is None else {"loss_fn": loss_fn}
        return KerasProblem(label, problem, (np.asarray(x), np.asarray(y)), batch_size=batch_size,
                            **options)
    raise TypeError(
        "problem must be a registered name, a Problem, a FitProblem or a model-building function, "
        f"got {type(problem).__name__}"
    )


def make_runner(problem: Any, optimizer: Any):
    """The runner for a problem: ``FitRunner`` (model.fit) for a FitProblem, else ``ProblemRunner``."""
    from keras_learned_opt.fit_runner import FitProblem, FitRunner
    from keras_learned_opt.runner import ProblemRunner

    if isinstance(problem, FitProblem):
        return FitRunner(problem, optimizer)
    return ProblemRunner(problem, optimizer)


def _stack_metrics(measured: list[dict[str, float]]) -> dict[str, np.ndarray]:
    """Per-seed metric dicts -> ``{name: [seeds]}``, nan where a seed was not measured."""
    names = list(dict.fromkeys(name for values in measured for name in values))
    return {name: np.array([values.get(name, math.nan) for values in measured], np.float64)
            for name in names}


def compare(
    problem: Any,
    optimizers: Sequence[str | OptimizerSpec] | None = None,
    seeds: int | Sequence[int] = 5,
    steps: int = 100,
    lr_grid: Sequence[float] = DEFAULT_LR_GRID,
    learned_lr_grid: Sequence[float] = DEFAULT_LEARNED_LR_GRID,
    *,
    data: tuple[np.ndarray, np.ndarray] | None = None,
    batch_size: int = 128,
    loss_fn: Callable | None = None,
    name: str | None = None,
    fit: bool = False,
    final_window: int = 10,
    verbose: int = 1,
    on_run_end: Callable[[str, float, int, Any], None] | None = None,
    metadata: dict[str, Any] | None = None,
    tell_horizon: bool = True,
) -> CompareResult:
    """Run every optimizer at every rate of its grid on the same seeds.

    Args:
        problem: a registered problem name (``problems.list_problems()``), a
            ``Problem``, a ``fit_runner.FitProblem`` (trained with
            ``model.fit``), or a function returning a fresh Keras model (then
            ``data=(x, y)`` is required and ``batch_size``/``loss_fn``/``name``
            configure a ``KerasProblem``, or a ``FitProblem`` with ``fit=True``,
            which models with BatchNormalization need).
        optimizers: specs (``"adam"``, ``"rmsprop"``, ``"sgd"``, ``"nag"``,
            ``"learned:<name or path>"``) or ``OptimizerSpec`` objects; default
            ``default_optimizers()``.
        seeds: a number of seeds counted from ``EVALUATION_SEED_BASE``, or the
            seeds themselves.
        steps: training steps per run.
        lr_grid: learning rates tried for hand-made optimizers.
        learned_lr_grid: learning rates tried for learned optimizers.
        final_window: steps averaged into the final loss (protocol: 10).
        verbose: 1 shows a progress bar, 0 is silent.
        on_run_end: called as ``on_run_end(label, learning_rate, seed, runner)``
            after every run, e.g. to keep trained weights
            (``runner.model.get_weights()`` for a FitProblem).
        metadata: JSON-serialisable facts stored with the result.
        tell_horizon: give ``steps`` as ``total_steps`` to learned optimizers
            whose weight file reads the horizon (``uses_horizon``) and that were
            not given one, as a user who knows the length of the run would.
            The hand-made baselines run at a constant rate either way; the
            result's metadata records which learned optimizers were told.

    Returns:
        A ``CompareResult`` holding every run's loss curve ``[seeds, steps]``
        and the runner's metrics after each run (``Problem.evaluate``, or
        ``FitRunner.metrics``: held-out loss/accuracy, step time, optimizer memory).
    """
    specs = [parse_optimizer_spec(s) for s in (default_optimizers() if optimizers is None else optimizers)]
    if not specs:
        raise ValueError("no optimizers to compare")
    labels = [s.label for s in specs]
    if len(set(labels)) != len(labels):
        raise ValueError(f"optimizer specs must be distinct, got {labels}")
    lr_grid = _check_grid(lr_grid, "hand-made")
    learned_lr_grid = _check_grid(learned_lr_grid, "learned")
    seed_list = (list(range(EVALUATION_SEED_BASE, EVALUATION_SEED_BASE + seeds))
                 if isinstance(seeds, (int, np.integer)) else [int(s) for s in seeds])
    if not seed_list:
        raise ValueError("need at least one seed")
    if steps < 1 or final_window < 1:
        raise ValueError(f"steps and final_window must be >= 1, got {steps} and {final_window}")
    problem = _resolve_problem(problem, data, batch_size, loss_fn, name, fit)

    import keras

    metadata = dict(metadata or {})
    total = sum(len(learned_lr_grid if s.learned else lr_grid) for s in specs) * len(seed_list)
    progbar = keras.utils.Progbar(total, verbose=verbose, unit_name="run")
    done = 0
    results = []
    for spec in specs:
        grid = learned_lr_grid if spec.learned else lr_grid
        # One optimizer instance and one traced step for the whole sweep (see ProblemRunner).
        optimizer = spec.make(grid[0])
        if tell_horizon and getattr(optimizer, "uses_horizon", False) \
                and optimizer.total_steps is None:
            optimizer.total_steps = steps
        if getattr(optimizer, "uses_horizon", False):
            metadata.setdefault("total_steps_told", {})[spec.label] = optimizer.total_steps
        runner = make_runner(problem, optimizer)
        runs = []
        started = time.monotonic()
        for rate in grid:
            curves, measured = [], []
            for seed in seed_list:
                losses = runner.run(seed, steps, learning_rate=rate)
                curves.append(losses)
                # A run whose loss went non-finite left nothing meaningful to measure.
                measured.append(runner.metrics() if np.all(np.isfinite(losses)) else {})
                if on_run_end is not None:
                    on_run_end(spec.label, rate, seed, runner)
                done += 1
                progbar.update(done)
            runs.append(LrRuns(rate, np.stack(curves), final_window, _stack_metrics(measured)))
        results.append(OptimizerResult(spec.label, spec.baseline, runs, time.monotonic() - started))
        del runner, optimizer
        gc.collect()  # free this optimizer's model and slots before the next one builds its own
    return CompareResult(problem.name, steps, seed_list, results, final_window, metadata)


# ----- command line ----------------------------------------------------------------
def _load_function(text: str) -> Callable:
    module_name, sep, attribute = text.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"--model must look like 'package.module:function', got {text!r}")
    sys.path.insert(0, str(Path.cwd()))  # like `python -m`, let users name modules in the current folder
    function = getattr(importlib.import_module(module_name), attribute, None)
    if not callable(function):
        raise ValueError(f"--model {text!r}: {attribute!r} is not a function of {module_name}")
    return function


def _load_data(path: str) -> tuple[np.ndarray, np.ndarray]:
    with np.load(path) as arrays:
        if "x" not in arrays or "y" not in arrays:
            raise ValueError(f"--data {path}: expected arrays named 'x' and 'y', found {list(arrays)}")
        return arrays["x"].astype(np.float32), arrays["y"]


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m keras_learned_opt.compare",
        description="Compare a learned optimizer with tuned hand-made ones on the same seeds and batches.",
    )
    source = parser.add_argument_group("what to train")
    source.add_argument("--problem", help="registered problem name (e.g. quadratic, fmnist_mlp)")
    source.add_argument("--model", help="'module:function' returning a fresh Keras model (with --data)")
    source.add_argument("--data", help=".npz file with arrays x and y (integer labels) for --model")
    source.add_argument("--batch-size", type=int, default=128, help="minibatch size for --model")
    source.add_argument("--fit", action="store_true",
                        help="train --model with model.fit (needed for BatchNormalization)")
    parser.add_argument("--optimizer", action="append", dest="optimizers", metavar="SPEC",
                        help="adam, rmsprop, sgd, nag or learned:<name or file>; repeat or comma-separate "
                             "(default: the hand-made four, plus 'learned' when a default is bundled)")
    parser.add_argument("--seeds", type=int, default=5, help="number of seeds")
    parser.add_argument("--seed-base", type=int, default=EVALUATION_SEED_BASE,
                        help="first seed (default: the evaluation range, unseen in meta-training)")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--lr-grid", type=float, nargs="*", default=list(DEFAULT_LR_GRID),
                        help="learning rates for hand-made optimizers")
    parser.add_argument("--learned-lr-grid", type=float, nargs="*", default=list(DEFAULT_LEARNED_LR_GRID),
                        help="learning rates for learned optimizers (default 1.0 only)")
    parser.add_argument("--out", help="write results as JSON here, plus <stem>.csv (table) and "
                                      "<stem>_curves.csv")
    parser.add_argument("--plot", help="draw the learning curves to this image file")
    parser.add_argument("--replot", metavar="RESULTS_JSON",
                        help="read results written by --out instead of running (with --plot)")
    parser.add_argument("--per-lr", action="store_true", help="also print the final loss at every rate")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--no-horizon", action="store_true",
                        help="do not tell learned optimizers whose file reads the horizon the "
                             "number of steps (by default they get total_steps=--steps)")
    return parser.parse_args(argv)


def _run_from_args(args: argparse.Namespace) -> CompareResult:
    if args.replot:
        if args.problem or args.model:
            raise ValueError("--replot reads finished results; do not combine it with --problem/--model")
        return CompareResult.from_json(args.replot)
    if bool(args.problem) == bool(args.model):
        raise ValueError("give exactly one of --problem NAME or --model module:function (with --data)")
    if args.model and not args.data:
        raise ValueError("--model needs --data file.npz")
    if args.fit and not args.model:
        raise ValueError("--fit applies to --model only")
    optimizers = None
    if args.optimizers:
        optimizers = [part for text in args.optimizers for part in text.split(",") if part.strip()]
    problem: Any = args.problem
    data = None
    if args.model:
        problem, data = _load_function(args.model), _load_data(args.data)
    seeds = list(range(args.seed_base, args.seed_base + args.seeds))
    return compare(problem, optimizers, seeds=seeds, steps=args.steps, lr_grid=args.lr_grid,
                   learned_lr_grid=args.learned_lr_grid, data=data, batch_size=args.batch_size,
                   name=args.model, fit=args.fit, verbose=0 if args.quiet else 1,
                   tell_horizon=not args.no_horizon)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        if args.replot and not args.plot:
            raise ValueError("--replot needs --plot out.png")
        result = _run_from_args(args)
    except (ValueError, TypeError, FileNotFoundError, ImportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print()
    print(result.table())
    if args.per_lr:
        print()
        print(result.lr_table())
    if args.out and not args.replot:
        out = Path(args.out)
        result.to_json(out)
        result.to_csv(out.with_suffix(".csv"), out.with_name(out.stem + "_curves.csv"))
        print(f"\nwrote {out}, {out.with_suffix('.csv')} and {out.with_name(out.stem + '_curves.csv')}")
    if args.plot:
        print(f"wrote {result.plot(args.plot)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
