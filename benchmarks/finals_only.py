"""Reduce a comparison JSON (every curve) to its per-seed final losses, for committing.

A 20-seed 1000-step case of `generalization.py` writes a 16 MB JSON (every loss of every
run at every rate); what README quotes and what the tests check against are the per-seed
final losses. This writes ``<name>_finals.json`` beside it (problem, steps, seeds,
metadata, each optimizer's per-rate finals, the table) and leaves the full file alone:

    python benchmarks/finals_only.py benchmarks/results/<dir>/fmnist_mlp_1000.json \
        --command "python benchmarks/generalization.py ..."
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

NOTE = ("Per-seed final losses (mean training loss of the last {window} of {steps} steps) of "
        "every optimizer and learning rate of the run; the full compare JSON with every curve "
        "({megabytes:.0f} MB) is not committed: the command regenerates it.")


def finals_only(path: Path, command: str) -> Path:
    """Write ``<stem>_finals.json`` next to ``path``; returns its path."""
    data = json.loads(path.read_text())
    if "optimizers" not in data or "final_window" not in data:
        raise ValueError(f"{path} is not a comparison result of keras_learned_opt.compare")
    reduced = {
        "note": NOTE.format(window=data["final_window"], steps=data["steps"],
                            megabytes=path.stat().st_size / 2**20),
        "command": command,
        "problem": data["problem"],
        "steps": data["steps"],
        "seeds": data["seeds"],
        "final_window": data["final_window"],
        "metadata": data.get("metadata", {}),
        "optimizers": [{"label": o["label"], "baseline": o["baseline"],
                        "runs": [{"learning_rate": r["learning_rate"], "final": r["final"]}
                                 for r in o["runs"]]}
                       for o in data["optimizers"]],
        "markdown": data["markdown"],
    }
    out = path.with_name(f"{path.stem}_finals.json")
    out.write_text(json.dumps(reduced, indent=1))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", type=Path, help="a JSON written by compare or generalization.py")
    parser.add_argument("--command", required=True, help="the command that produced it")
    args = parser.parse_args(argv)
    print(f"wrote {finals_only(args.path, args.command)}")


if __name__ == "__main__":
    main()
