"""Average the weights of several update networks into one weight file.

A "model soup" (Wortsman et al. 2022, "Model soups: averaging weights of
multiple fine-tuned models improves accuracy without increasing inference
time"): networks fine-tuned from one common start usually stay in one basin
of the loss, and the plain average of their weights can score better than
each of them. Networks trained from different starts do not share a basin;
their average is usually worse than either, so check the result with
``benchmarks/quality.py --selection`` before using it.

    python -m keras_learned_opt.soup --out soup.h5 a.h5 b.h5 c.h5
    python -m keras_learned_opt.soup --out mix.h5 a.h5 b.h5 --coefficients 3 1

``--coefficients`` weighs the ingredients (normalized to sum 1): with two
ingredients it interpolates between them, as WiSE-FT (Wortsman et al. 2022,
"Robust fine-tuning of zero-shot models") interpolates between a network and
its fine-tune to trade what each does best.

The output has the ingredients' common architecture, and its provenance lists
every ingredient's path, checksum and own provenance (so the commands that
made them), plus the soup command itself.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from keras_learned_opt.errors import ArchitectureMismatchError


def average_weight_files(ingredients: Sequence[str | os.PathLike], out: str | os.PathLike,
                         description: str = "", command: str | None = None,
                         coefficients: Sequence[float] | None = None) -> Path:
    """Write the (weighted) mean of the ingredients' weight arrays to ``out``; returns its path.

    Args:
        ingredients: two or more weight files or bundled names, all with the
            same network configuration.
        out: the weight file to write (atomically).
        description: stored in the file; a default names the ingredients.
        command: the command line recorded in the provenance.
        coefficients: one weight per ingredient, non-negative, normalized to sum
            1 (``None``: equal weights).

    Raises:
        ValueError: fewer than two ingredients, or coefficients that are not
            one finite non-negative number per ingredient with a positive sum.
        ArchitectureMismatchError: the ingredients' configurations differ.
        FileNotFoundError, WeightFileError: an ingredient is missing or corrupt.
    """
    from keras_learned_opt.bundled import resolve_weights
    from keras_learned_opt.weights import default_provenance, load_weight_file, save_weight_file

    if len(ingredients) < 2:
        raise ValueError(f"a soup needs at least two weight files, got {len(ingredients)}")
    shares = _shares(coefficients, len(ingredients))
    files = [load_weight_file(resolve_weights(item)) for item in ingredients]
    config = files[0].config
    for item, weight_file in zip(ingredients[1:], files[1:]):
        if weight_file.config != config:
            raise ArchitectureMismatchError(
                f"'{item}' has network configuration {weight_file.config.to_json()}, but "
                f"'{ingredients[0]}' has {config.to_json()}; only networks of one "
                "architecture can be averaged")
    arrays = {name: sum(share * np.asarray(f.arrays[name], np.float64)
                        for share, f in zip(shares, files)).astype(np.float32)
              for name in files[0].arrays}
    provenance = default_provenance(
        command=command or f"average_weight_files({[str(i) for i in ingredients]!r}, {str(out)!r})",
        soup_of=[{"path": str(f.path), "checksum": f.checksum, "provenance": f.provenance,
                  "share": share} for f, share in zip(files, shares)],
    )
    if coefficients is None:
        names = ", ".join(Path(str(i)).stem for i in ingredients)
    else:
        names = ", ".join(f"{share:.3g} x {Path(str(i)).stem}"
                          for share, i in zip(shares, ingredients))
    save_weight_file(out, arrays, config, provenance,
                     description or f"weight average (soup) of {names}")
    return Path(out)


def _shares(coefficients: Sequence[float] | None, count: int) -> list[float]:
    """Each ingredient's share of the average (sums to 1)."""
    if coefficients is None:
        return [1.0 / count] * count
    values = [float(c) for c in coefficients]
    if len(values) != count:
        raise ValueError(f"{len(values)} coefficients for {count} ingredients; "
                         "give one per ingredient")
    if not all(np.isfinite(v) and v >= 0 for v in values) or sum(values) <= 0:
        raise ValueError(f"coefficients must be finite, non-negative and not all zero, "
                         f"got {values}")
    return [v / sum(values) for v in values]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m keras_learned_opt.soup",
        description="Average the weights of update networks fine-tuned from one start.")
    parser.add_argument("ingredients", nargs="+", help="weight files or bundled names (two or more)")
    parser.add_argument("--out", required=True, help="weight file to write (HDF5)")
    parser.add_argument("--description", default="")
    parser.add_argument("--coefficients", type=float, nargs="+", metavar="C",
                        help="one weight per ingredient, normalized to sum 1 (default: equal)")
    args = parser.parse_args(argv)
    command = "python -m keras_learned_opt.soup " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    path = average_weight_files(args.ingredients, args.out, args.description, command,
                                args.coefficients)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
