"""Results of an optimizer comparison: selection, summary table, JSON/CSV files.

The raw data is the loss curve of every (optimizer, learning rate, seed) run;
everything else (final losses, divergence, the selected learning rate, the
ratio to the best baseline) is recomputed from it, so a result read back from
JSON reports exactly what the original run reported.

Protocol (see ``unroll.final_loss``): a run's final loss is its mean training
minibatch loss over the last ``final_window`` steps. A run *diverged* if a
loss became non-finite or its final loss is above its starting loss. A
learning rate is selectable only if none of its seeds diverged; the best one
has the lowest mean final loss over the seeds. An optimizer with no
selectable learning rate is reported as "diverged", never with a number.

A run may also carry *metrics*: measurements taken after training (held-out
loss or accuracy, step time, optimizer memory; see ``Problem.evaluate`` and
``fit_runner.FitRunner.metrics``). They never influence the selection; the
table reports them at the learning rate selected by the training loss.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "keras_learned_opt.compare/1"
DIVERGED = "diverged"


def _final(losses: np.ndarray, window: int) -> np.ndarray:
    from keras_learned_opt.unroll import final_loss

    return final_loss(losses, last=window)


@dataclasses.dataclass
class LrRuns:
    """All seeds of one optimizer at one learning rate.

    Attributes:
        learning_rate: the learning rate.
        losses: ``[seeds, steps]`` losses before each update (nan after a
            non-finite loss, see ``runner.ProblemRunner.run``).
        final_window: steps averaged into the final loss.
        metrics: ``{name: [seeds]}`` measurements after each run: nan where a
            run was not measured because its loss became non-finite, no entry
            at all when no seed was measured.
    """

    learning_rate: float
    losses: np.ndarray
    final_window: int = 10
    metrics: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)

    @property
    def final(self) -> np.ndarray:
        """``[seeds]`` final losses (inf where non-finite)."""
        return _final(self.losses, self.final_window)

    @property
    def diverged(self) -> np.ndarray:
        """``[seeds]`` booleans, see the module docstring."""
        from keras_learned_opt.runner import diverged

        return diverged(self.losses, self.final)

    @property
    def selectable(self) -> bool:
        return not bool(np.any(self.diverged))

    @property
    def mean(self) -> float:
        return float(np.mean(self.final)) if self.selectable else math.inf

    def spread(self) -> dict[str, float]:
        """Mean, std (ddof 1 when there are several seeds), min and max of the final losses."""
        return _spread(self.final)

    def metric_spread(self) -> dict[str, dict[str, float]]:
        """``{metric: spread}`` over the seeds, as ``spread`` for the final loss."""
        return {name: _spread(values) for name, values in self.metrics.items()}


def _spread(values: np.ndarray) -> dict[str, float]:
    values = np.asarray(values, dtype=np.float64)
    return {
        "mean": float(np.mean(values)),
        "std": float(np.std(values, ddof=1 if len(values) > 1 else 0)),
        "min": float(np.min(values)),
        "max": float(np.max(values)),
    }


@dataclasses.dataclass
class OptimizerResult:
    """One optimizer family over its learning-rate grid."""

    label: str
    baseline: bool
    runs: list[LrRuns]
    seconds: float = 0.0

    @property
    def best(self) -> LrRuns | None:
        """The selectable learning rate with the lowest mean final loss (None: all diverged)."""
        candidates = [r for r in self.runs if r.selectable]
        return min(candidates, key=lambda r: r.mean) if candidates else None

    @property
    def diverged_rates(self) -> list[float]:
        return [r.learning_rate for r in self.runs if not r.selectable]

    @property
    def best_at_grid_edge(self) -> bool:
        best = self.best
        if best is None or len(self.runs) < 2:
            return False
        rates = sorted(r.learning_rate for r in self.runs)
        return best.learning_rate in (rates[0], rates[-1])


def _fmt(value: float | None, spec: str = ".4g") -> str:
    return "—" if value is None else format(value, spec)


def _json_floats(array: np.ndarray) -> list:
    """Nested lists with non-finite values as None (JSON has no nan/inf)."""
    return [[float(v) if math.isfinite(v) else None for v in row] for row in np.asarray(array)]


@dataclasses.dataclass
class CompareResult:
    """All runs of a comparison on one problem.

    Attributes:
        problem: the problem's name.
        steps: steps per run.
        seeds: the episode seeds, the same for every optimizer and rate.
        optimizers: one entry per optimizer spec, in the order given.
        final_window: steps averaged into a run's final loss.
        metadata: free-form JSON-serialisable facts about the experiment
            (command, dataset sizes, weight file...), kept in the JSON file.
    """

    problem: str
    steps: int
    seeds: list[int]
    optimizers: list[OptimizerResult]
    final_window: int = 10
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)

    # ----- selection --------------------------------------------------------------
    def best_baseline(self) -> OptimizerResult | None:
        """The hand-made optimizer with the lowest mean final loss at its best rate."""
        candidates = [o for o in self.optimizers if o.baseline and o.best is not None]
        return min(candidates, key=lambda o: o.best.mean) if candidates else None

    def ratio(self, optimizer: OptimizerResult) -> float | None:
        """Mean final loss over the best baseline's (None if either diverged or no baseline)."""
        reference = self.best_baseline()
        if optimizer.best is None or reference is None or reference.best.mean <= 0:
            return None
        return optimizer.best.mean / reference.best.mean

    def metric_names(self) -> list[str]:
        """Names of the per-run metrics, in the order they were first recorded."""
        names: dict[str, None] = {}
        for opt in self.optimizers:
            for run in opt.runs:
                names.update(dict.fromkeys(run.metrics))
        return list(names)

    def rows(self) -> list[dict[str, Any]]:
        """The summary table as dicts; a diverged optimizer has ``"diverged": True`` and no numbers.

        ``"metrics"`` maps each metric name to its spread over the seeds at the
        selected learning rate (empty for a diverged optimizer).
        """
        rows = []
        for opt in self.optimizers:
            best = opt.best
            row: dict[str, Any] = {
                "optimizer": opt.label,
                "baseline": opt.baseline,
                "diverged": best is None,
                "learning_rate": None if best is None else best.learning_rate,
                "mean": None, "std": None, "min": None, "max": None,
                "ratio_to_best_baseline": self.ratio(opt),
                "diverged_learning_rates": opt.diverged_rates,
                "best_at_grid_edge": opt.best_at_grid_edge,
                "seconds": opt.seconds,
                "metrics": {} if best is None else best.metric_spread(),
            }
            if best is not None:
                row.update(best.spread())
            rows.append(row)
        return rows

    # ----- text -------------------------------------------------------------------
    def table(self) -> str:
        """Markdown summary: one row per optimizer at its best learning rate."""
        reference = self.best_baseline()
        ratio_title = f"vs best baseline ({reference.label})" if reference else "vs best baseline"
        metrics = self.metric_names()
        several = len(self.seeds) > 1
        metric_titles = "".join(f" {name} ({'mean ± std' if several else 'value'}) |" for name in metrics)
        lines = [
            f"Problem `{self.problem}`: {len(self.seeds)} seeds, {self.steps} steps; final loss = "
            f"mean training minibatch loss of the last {min(self.final_window, self.steps)} steps.",
            "",
            f"| optimizer | learning rate | final loss (mean) | std | min | max | {ratio_title} "
            f"|{metric_titles} diverged at lr |",
            "|---|---|---|---|---|---|---|" + "---|" * len(metrics) + "---|",
        ]
        for row in self.rows():
            rates = ", ".join(_fmt(r, "g") for r in row["diverged_learning_rates"]) or "—"
            if row["diverged"]:
                cells = [row["optimizer"], "—", DIVERGED, "—", "—", "—", DIVERGED]
            else:
                ratio = row["ratio_to_best_baseline"]
                cells = [row["optimizer"], _fmt(row["learning_rate"], "g"), _fmt(row["mean"]),
                         _fmt(row["std"]), _fmt(row["min"]), _fmt(row["max"]),
                         "—" if ratio is None else f"{ratio:.3f}"]
            for name in metrics:
                spread = row["metrics"].get(name)
                cells.append("—" if spread is None else _fmt(spread["mean"]) + (
                    f" ± {_fmt(spread['std'], '.2g')}" if several else ""))
            cells.append(rates)
            lines.append("| " + " | ".join(cells) + " |")
        edges = [r["optimizer"] for r in self.rows() if r["best_at_grid_edge"]]
        if edges:
            lines += ["", f"Best learning rate at the edge of the grid for: {', '.join(edges)} "
                          "(widen the grid)."]
        return "\n".join(lines)

    def lr_table(self) -> str:
        """Markdown table of the mean final loss of every optimizer at every learning rate."""
        rates = sorted({r.learning_rate for o in self.optimizers for r in o.runs})
        lines = ["| optimizer | " + " | ".join(_fmt(r, "g") for r in rates) + " |",
                 "|---|" + "---|" * len(rates)]
        for opt in self.optimizers:
            by_rate = {r.learning_rate: r for r in opt.runs}
            cells = []
            for rate in rates:
                run = by_rate.get(rate)
                cells.append("" if run is None else _fmt(run.mean) if run.selectable else DIVERGED)
            lines.append(f"| {opt.label} | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    # ----- files ------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "problem": self.problem,
            "steps": self.steps,
            "seeds": [int(s) for s in self.seeds],
            "final_window": self.final_window,
            "optimizers": [
                {
                    "label": o.label,
                    "baseline": o.baseline,
                    "seconds": o.seconds,
                    "runs": [
                        {
                            "learning_rate": r.learning_rate,
                            "final": [v[0] for v in _json_floats(r.final[:, None])],
                            "diverged": [bool(d) for d in r.diverged],
                            "losses": _json_floats(r.losses),
                            "metrics": {name: _json_floats(np.asarray(values)[None, :])[0]
                                        for name, values in r.metrics.items()},
                        }
                        for r in o.runs
                    ],
                }
                for o in self.optimizers
            ],
            "table": self.rows(),
            "markdown": self.table(),
            "metadata": self.metadata,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "CompareResult":
        if data.get("format") != FORMAT:
            raise ValueError(f"not a comparison result (format {data.get('format')!r}, expected {FORMAT!r})")
        window = int(data["final_window"])
        optimizers = [
            OptimizerResult(
                label=o["label"], baseline=bool(o["baseline"]), seconds=float(o["seconds"]),
                runs=[LrRuns(float(r["learning_rate"]),
                             np.array([[math.nan if v is None else v for v in row] for row in r["losses"]],
                                      dtype=np.float64),
                             window,
                             {name: np.array([math.nan if v is None else v for v in values], np.float64)
                              for name, values in r.get("metrics", {}).items()})
                      for r in o["runs"]],
            )
            for o in data["optimizers"]
        ]
        return cls(data["problem"], int(data["steps"]), [int(s) for s in data["seeds"]],
                   optimizers, window, dict(data.get("metadata", {})))

    def to_json(self, path: str | os.PathLike) -> Path:
        """Write curves, per-run final losses and the table as JSON; returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1))
        return path

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> "CompareResult":
        try:
            data = json.loads(Path(path).read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not a JSON file: {err}") from err
        return cls.from_dict(data)

    def to_csv(self, table_path: str | os.PathLike,
               curves_path: str | os.PathLike | None = None) -> list[Path]:
        """Write the table (one row per optimizer) and optionally the curves (long format)."""
        table_path = Path(table_path)
        table_path.parent.mkdir(parents=True, exist_ok=True)
        columns = ["optimizer", "learning_rate", "mean", "std", "min", "max",
                   "ratio_to_best_baseline", "diverged_learning_rates", "seconds"]
        metrics = self.metric_names()
        with open(table_path, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(columns + [f"{name}_{part}" for name in metrics for part in ("mean", "std")])
            for row in self.rows():
                values = []
                for column in columns:
                    value = row[column]
                    if column == "diverged_learning_rates":
                        value = " ".join(format(v, "g") for v in value)
                    elif row["diverged"] and column in ("learning_rate", "mean", "std", "min", "max",
                                                        "ratio_to_best_baseline"):
                        value = DIVERGED
                    values.append("" if value is None else value)
                for name in metrics:
                    spread = row["metrics"].get(name)
                    values += ["", ""] if spread is None else [spread["mean"], spread["std"]]
                writer.writerow(values)
        written = [table_path]
        if curves_path is not None:
            curves_path = Path(curves_path)
            with open(curves_path, "w", newline="") as handle:
                writer = csv.writer(handle)
                writer.writerow(["optimizer", "learning_rate", "seed", "step", "loss"])
                for opt in self.optimizers:
                    for run in opt.runs:
                        for seed, curve in zip(self.seeds, run.losses):
                            for step, loss in enumerate(curve):
                                writer.writerow([opt.label, run.learning_rate, seed, step, loss])
            written.append(curves_path)
        return written

    def plot(self, path: str | os.PathLike, title: str | None = None,
             legend_metric: str | None = None) -> Path:
        """Learning curves at each optimizer's best learning rate (see ``compare_plot``).

        ``legend_metric`` names a metric (e.g. ``"test_accuracy"``) whose mean
        at the selected rate is added to each legend entry.
        """
        from keras_learned_opt.compare_plot import plot_learning_curves

        return plot_learning_curves(self, path, title, legend_metric)
