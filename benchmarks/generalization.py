"""Generalization suite: each bundled optimizer against tuned baselines beyond its training task.

    python benchmarks/generalization.py                      # every bundled optimizer, full size
    python benchmarks/generalization.py --weights NAME --tiny  # seconds, for CI
    python benchmarks/generalization.py --weights A.h5 B.h5 --selection  # choose among candidates
    python benchmarks/generalization.py --cases fmnist_mlp_1000 --seeds 20  # one case, more seeds

For each learned optimizer and each case below, the ratio
final-loss(learned) / final-loss(best tuned baseline), where the baselines
(Adam, RMSProp, SGD, SGD+Nesterov 0.9) are tuned over the learning-rate grid
in the same run, on the same seeds and batches (protocol of issue 3: Keras
default initialization, batch 128, mean training loss of the last 10 steps,
seeds never used in meta-training). A run that ends non-finite or above its
starting loss is flagged as diverged. Writes a markdown table (to paste into
README), a JSON with every comparison, and a bar plot.

``--selection`` runs the suite on a separate block of seeds (from
``VALIDATION_SEED_BASE + SELECTION_OFFSET``: neither the meta-trainer's
validation seeds nor the evaluation seeds) for choosing which candidate file
to ship, so that the reported figures are not also the ones it was chosen on.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# (label, problem, steps): the trained task at 1x and 10x its horizon, then other models.
CASES = [
    ("fmnist_mlp, 100 steps", "fmnist_mlp", 100),
    ("fmnist_mlp, 1000 steps", "fmnist_mlp", 1000),
    ("ReLU MLP", "fmnist_mlp_relu", 100),
    ("2 hidden layers", "fmnist_mlp_deep", 100),
    ("4x wider (80 units)", "fmnist_mlp_wide", 100),
    ("small CNN", "fmnist_cnn", 100),
]
TARGETS = {"fmnist_mlp, 100 steps": 0.90}  # everything else: <= 1.00
SELECTION_OFFSET = 1000  # meta-training validates on VALIDATION_SEED_BASE + 0, 1, ...


def suite_seeds(count: int, selection: bool = False) -> list[int]:
    """The seeds of a suite run: evaluation seeds, or the block kept for choosing files."""
    from keras_learned_opt.meta_train import EVALUATION_SEED_BASE, VALIDATION_SEED_BASE

    base = VALIDATION_SEED_BASE + SELECTION_OFFSET if selection else EVALUATION_SEED_BASE
    return list(range(base, base + count))


def case_slug(case: tuple[str, str, int]) -> str:
    """A case's short name, also the stem of its JSON file: ``fmnist_mlp_1000``."""
    _, problem, steps = case
    return f"{problem}_{steps}"


def case_slugs(cases: list) -> list[str]:
    return [case_slug(case) for case in cases]


def run_suite(weights: list[str], seeds: list[int], lr_grid: list[float], cases: list,
              out: Path, verbose: int = 1, tell_horizon: bool = True) -> list[dict]:
    from keras_learned_opt.compare import compare

    rows = []
    out.mkdir(parents=True, exist_ok=True)
    for label, problem, steps in cases:
        started = time.monotonic()
        specs = [f"learned:{w}" for w in weights] + ["adam", "rmsprop", "sgd", "nag"]
        result = compare(problem, specs, seeds=seeds, steps=steps, lr_grid=lr_grid, verbose=0,
                         tell_horizon=tell_horizon)
        told = result.metadata.get("total_steps_told", {})
        slug = case_slug((label, problem, steps))
        result.to_json(out / f"{slug}.json")
        reference = result.best_baseline()
        for w, opt in zip(weights, result.optimizers):
            ratio = result.ratio(opt)
            any_diverged = bool(opt.runs and any(r.diverged.any() for r in opt.runs))
            rows.append({
                "weights": w, "case": label, "problem": problem, "steps": steps,
                "learned_final_loss": None if opt.best is None else opt.best.mean,
                "best_baseline": None if reference is None else reference.label,
                "baseline_learning_rate": None if reference is None else reference.best.learning_rate,
                "baseline_final_loss": None if reference is None else reference.best.mean,
                "ratio": ratio, "diverged": opt.best is None or any_diverged,
                "target": TARGETS.get(label, 1.0), "seconds": round(time.monotonic() - started, 1),
                "total_steps_told": told.get(opt.label),
            })
            if verbose:
                shown = "diverged" if ratio is None else f"{ratio:.3f}"
                print(f"{w:>24} | {label:<24} | ratio {shown} | {rows[-1]['seconds']} s", flush=True)
    return rows


def markdown(rows: list[dict], seeds: int, selection: bool = False) -> str:
    kind = "selection seeds (not the evaluation seeds)" if selection else "unseen seeds"
    lines = [
        f"Ratio = final loss of the learned optimizer / final loss of the best tuned baseline "
        f"({seeds} {kind}; below 1 means the learned optimizer wins).",
        "",
        "| optimizer | case | learned | best tuned baseline | ratio | target | diverged |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        learned = "diverged" if r["learned_final_loss"] is None else f"{r['learned_final_loss']:.4f}"
        baseline = (f"{r['best_baseline']} (lr {r['baseline_learning_rate']:g}) "
                    f"{r['baseline_final_loss']:.4f}") if r["best_baseline"] else "—"
        ratio = "—" if r["ratio"] is None else f"{r['ratio']:.3f}"
        met = r["ratio"] is not None and r["ratio"] <= r["target"] and not r["diverged"]
        target = f"<= {r['target']:.2f} {'met' if met else 'MISSED'}"
        told = r.get("total_steps_told")
        name = r["weights"] + (f" (told total_steps={told})" if told else "")
        lines.append(f"| {name} | {r['case']} | {learned} | {baseline} | {ratio} | {target} "
                     f"| {'YES' if r['diverged'] else 'no'} |")
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    weights = sorted({r["weights"] for r in rows})
    cases = list(dict.fromkeys(r["case"] for r in rows))
    figure, axes = plt.subplots(figsize=(8, 4))
    width = 0.8 / max(len(weights), 1)
    for i, w in enumerate(weights):
        values = [next((r["ratio"] for r in rows if r["weights"] == w and r["case"] == c), None)
                  for c in cases]
        x = np.arange(len(cases)) + i * width
        heights = [v if v is not None else 0 for v in values]
        bars = axes.bar(x, heights, width, label=w)
        for bar, v in zip(bars, values):
            if v is None:
                axes.annotate("diverged", (bar.get_x(), 0.05), rotation=90, fontsize=8)
    axes.axhline(1.0, color="black", linewidth=1, linestyle="--")
    axes.set_xticks(np.arange(len(cases)) + width * (len(weights) - 1) / 2)
    axes.set_xticklabels(cases, rotation=20, ha="right", fontsize=8)
    axes.set_ylabel("learned / best tuned baseline")
    axes.set_title("Generalization: below the dashed line the learned optimizer wins")
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", nargs="+", default=None,
                        help="bundled names or files (default: every bundled optimizer)")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--lr-grid", type=float, nargs="+",
                        default=[1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0])
    parser.add_argument("--tiny", action="store_true",
                        help="2 cases, 20 steps, 1 seed, 2 rates: a smoke test for CI")
    parser.add_argument("--selection", action="store_true",
                        help="run on the seeds kept for choosing among candidate files, not "
                             "on the evaluation seeds")
    parser.add_argument("--cases", nargs="+", default=None, metavar="PROBLEM_STEPS",
                        help="run only these cases, named PROBLEM_STEPS as in the JSON file "
                             f"names (default: all of {', '.join(case_slugs(CASES))})")
    parser.add_argument("--no-horizon", action="store_true",
                        help="do not tell horizon-reading files the run length (see "
                             "LearnedOptimizer(total_steps=...)); baselines never get one")
    parser.add_argument("--out", default="benchmarks/results/generalization")
    args = parser.parse_args(argv)

    from keras_learned_opt import list_pretrained

    weights = args.weights or sorted(list_pretrained())
    if not weights:
        print("no bundled optimizers and no --weights given", file=sys.stderr)
        return 2
    cases, seeds, grid = CASES, args.seeds, args.lr_grid
    if args.cases:
        unknown = sorted(set(args.cases) - set(case_slugs(CASES)))
        if unknown:
            parser.error(f"unknown case(s) {', '.join(unknown)}; known: "
                         f"{', '.join(case_slugs(CASES))}")
        cases = [case for case in CASES if case_slug(case) in args.cases]
    if args.tiny:
        cases = [("fmnist_mlp, 20 steps", "fmnist_mlp", 20), ("small CNN", "fmnist_cnn", 20)]
        seeds, grid = 1, [0.01, 0.1]
    out = Path(args.out)
    started = time.monotonic()
    rows = run_suite(weights, suite_seeds(seeds, args.selection), grid, cases, out,
                     tell_horizon=not args.no_horizon)
    table = markdown(rows, seeds, args.selection)
    print("\n" + table)
    (out / "table.md").write_text(table + "\n")
    (out / "rows.json").write_text(json.dumps(rows, indent=1))
    plot(rows, out / "ratios.png")
    print(f"\nwrote {out}/table.md, rows.json, ratios.png in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
