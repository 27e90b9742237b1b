"""Optimizer specs for comparisons: a short string names an optimizer family.

``adam``, ``rmsprop``, ``sgd`` and ``nag`` (SGD with Nesterov momentum 0.9) are
the hand-made baselines of Andrychowicz et al. 2016, with Keras' default
hyper-parameters apart from the learning rate, which the comparison tunes.
``learned:<name or path>`` is a ``LearnedOptimizer`` with a bundled weight
name or a weight file (``learned`` alone: the recommended bundled file).

For an optimizer not listed here, build an ``OptimizerSpec`` yourself::

    OptimizerSpec("adamw", lambda lr: keras.optimizers.AdamW(lr, weight_decay=1e-4))
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import keras

from keras_learned_opt.errors import NoPretrainedWeightsError, UnknownPretrainedError

HAND_MADE: dict[str, Callable[[float], keras.optimizers.Optimizer]] = {
    "adam": lambda lr: keras.optimizers.Adam(learning_rate=lr),
    "rmsprop": lambda lr: keras.optimizers.RMSprop(learning_rate=lr),
    "sgd": lambda lr: keras.optimizers.SGD(learning_rate=lr),
    "nag": lambda lr: keras.optimizers.SGD(learning_rate=lr, momentum=0.9, nesterov=True),
}


@dataclasses.dataclass(frozen=True)
class OptimizerSpec:
    """How to make one optimizer family for a given learning rate.

    Attributes:
        label: the name shown in tables and plots (unique within a comparison).
        make: ``learning_rate -> fresh optimizer instance``.
        baseline: a hand-made baseline, i.e. a candidate for "best baseline"
            in ratios (``False`` for learned optimizers).
        learned: tuned over the learned-optimizer grid (default ``(1.0,)``)
            instead of the hand-made grid.
    """

    label: str
    make: Callable[[float], keras.optimizers.Optimizer]
    baseline: bool = True
    learned: bool = False


def _learned_spec(label: str, source: str | None) -> OptimizerSpec:
    from keras_learned_opt.bundled import resolve_weights
    from keras_learned_opt.optimizer import LearnedOptimizer

    try:
        path = resolve_weights(source)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"optimizer spec '{label}': {err}") from err
    except (UnknownPretrainedError, NoPretrainedWeightsError) as err:
        raise type(err)(f"optimizer spec '{label}': {err}") from err
    LearnedOptimizer(path)  # read the file now, so a bad file fails before any training
    return OptimizerSpec(label, lambda lr: LearnedOptimizer(path, learning_rate=lr),
                         baseline=False, learned=True)


def parse_optimizer_spec(spec: str | OptimizerSpec) -> OptimizerSpec:
    """Turn ``"adam"``, ``"nag"``, ``"learned:path.h5"``, ... into an ``OptimizerSpec``.

    Raises:
        ValueError: an unknown optimizer name.
        FileNotFoundError: ``learned:<path>`` whose file does not exist.
        UnknownPretrainedError, NoPretrainedWeightsError: a bundled name that
            does not exist, or ``learned`` when nothing is bundled.
    """
    if isinstance(spec, OptimizerSpec):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"an optimizer spec is a string or an OptimizerSpec, got {type(spec).__name__}")
    text = spec.strip()
    kind, sep, argument = text.partition(":")
    kind = kind.lower()
    if kind == "learned":
        if sep and not argument:
            raise ValueError(f"optimizer spec '{spec}': give a bundled name or a path after 'learned:'")
        return _learned_spec(text, argument or None)
    if kind in HAND_MADE and not sep:
        return OptimizerSpec(kind, HAND_MADE[kind])
    raise ValueError(
        f"unknown optimizer spec '{spec}'; use one of {sorted(HAND_MADE)} or "
        "'learned:<bundled name or weight file>'"
    )


def check_fresh_optimizer(optimizer: Any) -> None:
    """Refuse anything but an unbuilt Keras optimizer, with a clear error."""
    if not isinstance(optimizer, keras.optimizers.Optimizer):
        raise TypeError(
            f"optimizer must be a keras.optimizers.Optimizer instance, got {type(optimizer).__name__}"
        )
    if optimizer.built:
        # Its slots belong to other variables; applying it here would fail obscurely.
        raise ValueError(
            "train the problem with a fresh optimizer instance: this one is already built "
            "for other variables"
        )
