"""Callbacks that connect ``model.fit`` to ``LearnedOptimizer``."""

from __future__ import annotations

from typing import Any

import keras


class TotalStepsFromFit(keras.callbacks.Callback):
    """Tell a horizon-reading ``LearnedOptimizer`` how long the ``fit`` call will run.

    At the start of ``fit`` it sets ``optimizer.total_steps`` to the steps already
    taken plus ``epochs * steps_per_epoch`` of this call, so a run continued by a
    second ``fit`` is planned as one run. Needs a dataset of known length (arrays,
    or ``steps_per_epoch``). It does nothing for files that do not read the
    horizon, and refuses optimizers that are not ``LearnedOptimizer``.

    Example::

        model.compile(optimizer=klo.LearnedOptimizer(), loss=...)
        model.fit(x, y, epochs=5, callbacks=[klo.TotalStepsFromFit()])
    """

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        from keras_learned_opt.optimizer import LearnedOptimizer

        optimizer = self.model.optimizer
        inner = getattr(optimizer, "inner_optimizer", optimizer)  # under a LossScaleOptimizer
        if not isinstance(inner, LearnedOptimizer):
            raise TypeError("TotalStepsFromFit is for models compiled with a LearnedOptimizer, "
                            f"got {type(inner).__name__}")
        if not inner.uses_horizon:
            return
        steps, epochs = self.params.get("steps"), self.params.get("epochs")
        if not steps:
            raise ValueError("TotalStepsFromFit: fit does not know the number of steps per "
                             "epoch (a dataset of unknown length); pass steps_per_epoch to "
                             "fit, or set LearnedOptimizer(total_steps=...) yourself")
        accumulation = inner.gradient_accumulation_steps or 1
        taken = int(keras.ops.convert_to_numpy(inner.iterations))
        inner.total_steps = taken + epochs * steps // accumulation
