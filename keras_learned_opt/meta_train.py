"""Meta-training: fit the update network by truncated backpropagation through optimizee runs.

Each episode starts a fresh optimizee (new initialization, new minibatches)
and a zero LSTM state, runs ``steps`` optimizee steps as truncations of
``unroll`` steps, and after each truncation takes one Adam step on the network
weights to lower the mean optimizee loss over that truncation (Andrychowicz et
al. 2016, section 3). Every ``validate_every`` episodes the network is scored
on held-out seeds and the best weights so far are written to the output file.

Command line::

    python -m keras_learned_opt.meta_train --problem fmnist_mlp --out my.h5 --episodes 500

Killed at any moment and started again with the same command, the run resumes
from its last checkpoint (``<out>.ckpt.npz``); the output file is only ever
replaced atomically.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import math
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

logger = logging.getLogger("keras_learned_opt.meta_train")

# Seed ranges: meta-training episodes use seeds below VALIDATION_SEED_BASE,
# validation uses VALIDATION_SEED_BASE + i, and reported evaluations use
# EVALUATION_SEED_BASE + i, which meta-training never sees.
VALIDATION_SEED_BASE = 2_000_000_000
EVALUATION_SEED_BASE = 3_000_000_000


def training_seed(seed: int, episode: int, lane: int) -> int:
    digest = hashlib.sha256(f"{seed}/{episode}/{lane}".encode()).digest()
    return int.from_bytes(digest[:8], "little") % VALIDATION_SEED_BASE


@dataclasses.dataclass
class MetaTrainConfig:
    """Everything that defines a meta-training run (stored in checkpoints and provenance)."""

    problems: tuple[str, ...] = ("fmnist_mlp",)
    network: dict = dataclasses.field(default_factory=dict)
    episodes: int = 500
    steps: int = 100
    unroll: int = 20
    lanes: int = 1
    meta_learning_rate: float = 1e-3
    meta_lr_final_fraction: float = 1.0
    meta_clipnorm: float = 1.0
    meta_loss: str = "mean"
    loss_weighting: str = "uniform"
    validate_every: int = 25
    validation_seeds: int = 4
    checkpoint_every: int = 10
    seed: int = 0
    horizons: tuple[int, ...] = ()
    init_from: str = ""
    long_unroll: tuple[int, ...] = ()
    validation_horizons: tuple[int, ...] = ()
    second_order: bool = False


    def __post_init__(self) -> None:
        self.problems = tuple(self.problems)
        self.horizons = tuple(int(h) for h in self.horizons)
        self.long_unroll = tuple(int(u) for u in self.long_unroll)
        self.validation_horizons = tuple(int(h) for h in self.validation_horizons)
        for steps in self.validation_horizons:
            if steps % self.unroll:
                raise ValueError(f"validation horizon ({steps}) must be a multiple of unroll "
                                 f"({self.unroll})")
        if self.long_unroll and len(self.long_unroll) != 2:
            raise ValueError("long_unroll is (first episode, unroll length)")
        for steps in (self.steps, *self.horizons):
            for unroll in (self.unroll, *self.long_unroll[1:]):
                if steps % unroll:
                    raise ValueError(f"steps ({steps}) must be a multiple of unroll ({unroll})")
        if self.episodes < 1 or self.lanes < 1 or self.validation_seeds < 1:
            raise ValueError("episodes, lanes and validation_seeds must be >= 1")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["problems"] = list(self.problems)
        d["horizons"] = list(self.horizons)
        d["long_unroll"] = list(self.long_unroll)
        d["validation_horizons"] = list(self.validation_horizons)
        return d

    def episode_unroll(self, episode: int) -> int:
        """Truncation length of an episode: ``unroll``, or ``long_unroll[1]`` from
        episode ``long_unroll[0]`` on (a curriculum: short truncations learn fast,
        long ones remove the short-horizon bias of truncated backpropagation)."""
        if self.long_unroll and episode >= self.long_unroll[0]:
            return self.long_unroll[1]
        return self.unroll

    def episode_steps(self, episode: int) -> int:
        """Optimizee steps of an episode: ``steps``, or drawn from ``horizons``."""
        if not self.horizons:
            return self.steps
        return self.horizons[training_seed(self.seed, episode, -1) % len(self.horizons)]

    def fingerprint(self) -> str:
        """What must not change for a checkpoint to be resumed."""
        d = self.to_dict()
        d.pop("episodes")  # extending a finished run is allowed
        if d["loss_weighting"] == "uniform":
            d.pop("loss_weighting")
        for key in ("horizons", "init_from", "long_unroll", "validation_horizons",
                    "second_order"):
            if not d[key]:
                d.pop(key)  # runs from before these options existed stay resumable
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def _atomic_savez(path: Path, **arrays: np.ndarray) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, **arrays)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


class MetaTrainer:
    """Meta-trains one update network on a list of problems.

    Args:
        config: the run's configuration.
        out: path of the weight file to write (best validated weights).
        checkpoint: path of the checkpoint; default ``<out>.ckpt.npz``.
        command: the command line recorded in provenance.
        tensorboard: a folder for TensorBoard scalars, or None.
        verbose: 1 shows a progress bar, 0 is silent.
        strategy: a ``tf.distribute`` strategy (MirroredStrategy, or
            MultiWorkerMirroredStrategy for several machines) to split each
            episode's lanes over its replicas, data-parallel; the meta-gradients
            are all-reduced (see ``distributed_unroll``). ``lanes`` must be a
            multiple of its replica count. None runs on one device. Under several
            workers only the chief validates and writes the checkpoint and the
            output; every worker must resume from the same checkpoint (a shared
            folder), which is checked.
    """

    def __init__(self, config: MetaTrainConfig, out: str | os.PathLike,
                 checkpoint: str | os.PathLike | None = None, command: str | None = None,
                 tensorboard: str | None = None, verbose: int = 1, description: str = "",
                 strategy: Any = None) -> None:
        import contextlib
        import functools

        import keras
        import tensorflow as tf

        from keras_learned_opt.network import NetworkConfig
        from keras_learned_opt.problems import get_problem
        from keras_learned_opt.unroll import Unroller

        self.config = config
        self.network_config = NetworkConfig.from_dict(config.network)
        self.out = Path(out)
        self.checkpoint = Path(checkpoint) if checkpoint else self.out.with_name(self.out.name + ".ckpt.npz")
        self.command = command or " ".join(shlex.quote(a) for a in sys.argv)
        self.verbose = verbose
        self.description = description
        self.problems = [get_problem(name) for name in config.problems]
        self.strategy = strategy
        # MultiWorkerMirroredStrategy names one chief; other strategies run in one process.
        self.is_chief = strategy is None or bool(getattr(strategy.extended, "should_checkpoint", True))
        train_unroller: Any = Unroller
        if strategy is not None:
            from keras_learned_opt.distributed_unroll import ReplicatedUnroller

            train_unroller = functools.partial(ReplicatedUnroller, strategy=strategy)
        unrolls = sorted({config.unroll, *config.long_unroll[1:]})
        self.train_unrollers = {
            (index, unroll): train_unroller(p, self.network_config, unroll, config.lanes,
                                            config.meta_loss, config.loss_weighting,
                                            second_order=config.second_order)
            for index, p in enumerate(self.problems) for unroll in unrolls
        }
        self.validation_unrollers = [
            Unroller(p, self.network_config, config.unroll, config.validation_seeds)
            for p in self.problems
        ]
        # Under a strategy the network weights and Adam's slots are mirrored on every replica.
        scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
        with scope:
            self.weights = {
                name: tf.Variable(value, name=name.replace("/", "_"))
                for name, value in self._initial_arrays().items()
            }
            mean_steps = float(np.mean(config.horizons or [config.steps]))
            meta_steps = int(config.episodes * mean_steps / config.unroll)
            learning_rate: Any = config.meta_learning_rate
            if config.meta_lr_final_fraction != 1.0:
                learning_rate = keras.optimizers.schedules.CosineDecay(
                    config.meta_learning_rate, meta_steps, alpha=config.meta_lr_final_fraction
                )
            self.meta_optimizer = keras.optimizers.Adam(learning_rate, global_clipnorm=config.meta_clipnorm)
            self._names = sorted(self.weights)
            self.meta_optimizer.build([self.weights[n] for n in self._names])
        self.episode = 0
        self.best_score = math.inf
        self.best_episode = -1
        self.best_weights = {n: v.numpy() for n, v in self.weights.items()}
        self.skipped_meta_steps = 0
        self.history: list[dict] = []
        self.train_seconds = 0.0
        self.coordinate_steps = 0
        self._writer = (tf.summary.create_file_writer(tensorboard)
                        if tensorboard and self.is_chief else None)

    def _initial_arrays(self) -> dict:
        """Fresh weights, or those of ``init_from`` (fine-tuning an existing optimizer)."""
        from keras_learned_opt.network import initial_weights, starting_arrays
        from keras_learned_opt.weights import load_weight_file

        if not self.config.init_from:
            return initial_weights(self.network_config, self.config.seed)
        start = load_weight_file(self.config.init_from)
        self.init_provenance = start.provenance
        return starting_arrays(start.arrays, start.config, self.network_config,
                               self.config.init_from)

    # ----- checkpoints -------------------------------------------------------------
    def _all_workers(self, value: float) -> np.ndarray:
        """``value`` as every replica of the strategy has it, ``[replicas]``, so that
        all workers take the same decision (resume point, when to stop)."""
        if self.strategy is None:
            return np.array([value])
        import tensorflow as tf

        per_replica = self.strategy.run(lambda: tf.constant([value], tf.float64))
        return self.strategy.gather(per_replica, axis=0).numpy()

    def save_checkpoint(self) -> None:
        if not self.is_chief:
            return
        meta = {
            "fingerprint": self.config.fingerprint(),
            "episode": self.episode,
            "best_score": self.best_score,
            "best_episode": self.best_episode,
            "skipped_meta_steps": self.skipped_meta_steps,
            "history": self.history,
            "train_seconds": self.train_seconds,
            "coordinate_steps": self.coordinate_steps,
        }
        arrays = {f"weights/{n}": v.numpy() for n, v in self.weights.items()}
        arrays.update({f"best/{n}": v for n, v in self.best_weights.items()})
        arrays.update({f"meta_optimizer/{i}": np.asarray(v) for i, v in
                       enumerate(self.meta_optimizer.variables)})
        arrays["meta_json"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
        self.checkpoint.parent.mkdir(parents=True, exist_ok=True)
        _atomic_savez(self.checkpoint, **arrays)

    def load_checkpoint(self) -> bool:
        """Resume from the checkpoint if there is one; returns whether it did."""
        if not self.checkpoint.exists():
            return False
        with np.load(self.checkpoint) as data:
            meta = json.loads(bytes(data["meta_json"]).decode())
            if meta["fingerprint"] != self.config.fingerprint():
                raise ValueError(
                    f"checkpoint {self.checkpoint} belongs to a run with a different configuration; "
                    "delete it or choose another --out to start afresh"
                )
            for n, v in self.weights.items():
                v.assign(data[f"weights/{n}"])
            self.best_weights = {n: data[f"best/{n}"] for n in self.weights}
            for i, v in enumerate(self.meta_optimizer.variables):
                v.assign(data[f"meta_optimizer/{i}"])
        self.episode = meta["episode"]
        self.best_score = meta["best_score"]
        self.best_episode = meta["best_episode"]
        self.skipped_meta_steps = meta["skipped_meta_steps"]
        self.history = meta["history"]
        self.train_seconds = meta["train_seconds"]
        self.coordinate_steps = meta["coordinate_steps"]
        logger.info("resumed from %s at episode %d", self.checkpoint, self.episode)
        return True

    # ----- training ----------------------------------------------------------------
    def _run_episode(self, episode: int) -> float:
        """One episode of meta-training; returns its mean meta-loss (nan if skipped)."""
        import tensorflow as tf

        cfg = self.config
        index = episode % len(self.problems)
        unroll = cfg.episode_unroll(episode)
        unroller = self.train_unrollers[(index, unroll)]
        seeds = [training_seed(cfg.seed, episode, lane) for lane in range(cfg.lanes)]
        steps = cfg.episode_steps(episode)
        params, task, batches = unroller.episodes(seeds, steps)
        state = unroller.initial_state()
        variables = [self.weights[n] for n in self._names]
        meta_losses = []
        for start in range(0, steps, unroll):
            chunk = [tf.constant(b[:, start : start + unroll]) for b in batches]
            meta_loss, grads, params, state, _ = unroller.train_truncation(
                self.weights, params, state, task, chunk, start, steps
            )
            grads = [grads[n] for n in self._names]
            finite = bool(np.isfinite(meta_loss.numpy())) and all(
                bool(tf.reduce_all(tf.math.is_finite(g))) for g in grads
            )
            if not finite:
                # A diverged optimizee or an exploding meta-gradient: skip the step and
                # end the episode, since its optimizee state is no longer usable.
                self.skipped_meta_steps += 1
                logger.warning("episode %d step %d: non-finite meta-loss or gradient, skipped "
                               "(%d skipped so far)", episode, start, self.skipped_meta_steps)
                break
            self.meta_optimizer.apply(grads, variables)
            meta_losses.append(float(meta_loss))
            self.coordinate_steps += unroller.coordinates * unroll
        return float(np.mean(meta_losses)) if meta_losses else math.nan

    def validate(self, weights: dict | None = None) -> dict[str, float]:
        """Mean final loss (protocol metric) per problem on the validation seeds.

        Runs last ``steps`` steps, or each of ``validation_horizons`` (then the
        keys are ``"<problem>@<steps>"``), so that selection can ask for both
        early speed and long-run behaviour.
        """
        from keras_learned_opt.unroll import evaluate, final_loss

        weights = weights or {n: v.numpy() for n, v in self.weights.items()}
        seeds = [VALIDATION_SEED_BASE + i for i in range(self.config.validation_seeds)]
        horizons = self.config.validation_horizons or (self.config.steps,)
        return {
            problem.name + (f"@{steps}" if self.config.validation_horizons else ""):
                float(np.mean(final_loss(evaluate(
                    weights, self.network_config, problem, seeds, steps, unroller=unroller))))
            for problem, unroller in zip(self.problems, self.validation_unrollers)
            for steps in horizons
        }

    @staticmethod
    def score(validation: dict[str, float]) -> float:
        """Selection score: mean log final loss over problems (scale-free for mixtures)."""
        values = list(validation.values())
        if not all(np.isfinite(values)) or min(values) <= 0:
            return math.inf
        return float(np.mean(np.log(values)))

    def write_output(self) -> None:
        if not self.is_chief:
            return
        from keras_learned_opt.weights import default_provenance, save_weight_file

        provenance = default_provenance(
            command=self.command,
            meta_train_config=self.config.to_dict(),
            problems=list(self.config.problems),
            steps=self.config.steps,
            horizons=list(self.config.horizons),
            unroll=self.config.unroll,
            seed=self.config.seed,
            training_seeds=f"training_seed({self.config.seed}, episode, lane) < {VALIDATION_SEED_BASE}",
            validation_seeds=[VALIDATION_SEED_BASE + i for i in range(self.config.validation_seeds)],
            episodes_run=self.episode,
            best_episode=self.best_episode,
            best_validation_score=self.best_score,
            validation_history=self.history,
            skipped_meta_steps=self.skipped_meta_steps,
            train_seconds=round(self.train_seconds, 1),
            coordinate_steps_per_second=round(self.coordinate_steps / max(self.train_seconds, 1e-9)),
        )
        if getattr(self, "init_provenance", None):  # e.g. the imitation run it started from
            provenance["init_from_provenance"] = self.init_provenance
        config = self.network_config
        description = self.description or (
            f"{'antisymmetric ' if config.antisymmetric else ''}LSTM with layers of "
            f"{', '.join(map(str, config.hidden_sizes))} units ({config.input_features} inputs), "
            f"meta-trained on {', '.join(self.config.problems)} for {self.config.steps}-step runs"
        )
        save_weight_file(self.out, self.best_weights, self.network_config, provenance, description)

    def _validate_and_keep_best(self) -> dict[str, float]:
        if not self.is_chief:  # selection happens where the output is written
            return {}
        validation = self.validate()
        score = self.score(validation)
        if score < self.best_score:
            self.best_score, self.best_episode = score, self.episode
            self.best_weights = {n: v.numpy() for n, v in self.weights.items()}
        self.history.append({"episode": self.episode, "validation": validation, "score": score})
        return validation

    def train(self, max_seconds: float | None = None) -> Path:
        """Run (or resume) meta-training; returns the output path."""
        import keras

        self.load_checkpoint()
        if len(set(self._all_workers(self.episode))) > 1:
            raise RuntimeError(
                f"workers resumed at different episodes (this one at {self.episode}): every "
                f"worker must read the chief's checkpoint {self.checkpoint} (use a shared folder)")
        cfg = self.config
        if self.episode == 0 and not self.history:
            self._validate_and_keep_best()  # the starting point is a candidate too
            self.save_checkpoint()
        progbar = keras.utils.Progbar(cfg.episodes, verbose=self.verbose,
                                      stateful_metrics=["val", "best", "skipped"])
        progbar.update(self.episode)
        started = time.monotonic()
        while self.episode < cfg.episodes:
            tic = time.monotonic()
            meta_loss = self._run_episode(self.episode)
            self.train_seconds += time.monotonic() - tic
            self.episode += 1
            values = [("meta_loss", meta_loss), ("skipped", self.skipped_meta_steps)]
            if self.is_chief and (self.episode % cfg.validate_every == 0
                                  or self.episode == cfg.episodes):
                validation = self._validate_and_keep_best()
                values += [("val", self.score(validation)), ("best", self.best_score)]
                self._summaries(meta_loss, validation)
                self.write_output()
            if self.episode % cfg.checkpoint_every == 0 or self.episode == cfg.episodes:
                self.save_checkpoint()
            progbar.update(self.episode, values)
            out_of_time = max_seconds is not None and time.monotonic() - started > max_seconds
            if self._all_workers(float(out_of_time)).any():
                logger.warning("stopping after %.0f s at episode %d (resume with the same command)",
                               time.monotonic() - started, self.episode)
                self.save_checkpoint()
                break
        self.write_output()
        return self.out

    def _summaries(self, meta_loss: float, validation: dict[str, float]) -> None:
        if self._writer is None:
            return
        import tensorflow as tf

        with self._writer.as_default(step=self.episode):
            tf.summary.scalar("meta_loss", meta_loss)
            tf.summary.scalar("validation_score", self.score(validation))
            for name, value in validation.items():
                tf.summary.scalar(f"validation/{name}", value)
        self._writer.flush()


def meta_train(out: str | os.PathLike, problems: Sequence[str] = ("fmnist_mlp",),
               network: dict | None = None, verbose: int = 1, max_seconds: float | None = None,
               tensorboard: str | None = None, description: str = "", command: str | None = None,
               strategy: Any = None, **options: Any) -> Path:
    """Python API: meta-train and write the best weights to ``out``.

    ``network`` holds ``NetworkConfig`` fields; ``options`` are
    ``MetaTrainConfig`` fields (episodes, steps, unroll, lanes, seed, ...);
    ``strategy`` spreads the lanes over its replicas (see ``MetaTrainer``).
    """
    config = MetaTrainConfig(problems=tuple(problems), network=dict(network or {}), **options)
    trainer = MetaTrainer(config, out, command=command or f"meta_train(out={str(out)!r}, ...)",
                          verbose=verbose, tensorboard=tensorboard, description=description,
                          strategy=strategy)
    return trainer.train(max_seconds=max_seconds)


def add_network_arguments(parser: argparse.ArgumentParser) -> None:
    """The command-line options that define a ``NetworkConfig``."""
    parser.add_argument("--hidden", type=int, nargs="+", default=[20, 20])
    parser.add_argument("--inputs", choices=["log_and_sign", "rnnprop"], default="log_and_sign")
    parser.add_argument("--log-and-sign-p", type=float, default=10.0)
    parser.add_argument("--input-layer", type=int, default=0)
    parser.add_argument("--output-activation", choices=["linear", "tanh"], default="linear")
    parser.add_argument("--output-scale", type=float, default=0.1)
    parser.add_argument("--antisymmetric", action="store_true",
                        help="odd update in the gradient: run the network on g and -g and "
                             "take half the difference (no drift; twice the cost)")
    parser.add_argument("--horizon-input", action="store_true",
                        help="give the network the fraction of the run done (it then reads "
                             "LearnedOptimizer(total_steps=...)); an --init-from file "
                             "without it starts with this input's weights at zero")


def network_from_args(args: argparse.Namespace) -> dict:
    """``NetworkConfig`` fields from the options of ``add_network_arguments``."""
    network = {
        "hidden_sizes": args.hidden,
        "input_features": args.inputs,
        "log_and_sign_p": args.log_and_sign_p,
        "input_layer_size": args.input_layer,
        "output_activation": args.output_activation,
        "output_scale": args.output_scale,
    }
    # Absent otherwise, so earlier runs' checkpoints stay resumable.
    if args.antisymmetric:
        network["antisymmetric"] = True
    if args.horizon_input:
        network["horizon_input"] = True
    return network


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m keras_learned_opt.meta_train",
        description="Meta-train a learned optimizer and write its weight file.",
    )
    parser.add_argument("--problem", action="append", dest="problems",
                        help="problem name (repeat to mix problems); default fmnist_mlp")
    parser.add_argument("--out", required=True, help="weight file to write (HDF5)")
    parser.add_argument("--episodes", type=int, default=500)
    parser.add_argument("--steps", type=int, default=100, help="optimizee steps per episode")
    parser.add_argument("--unroll", type=int, default=20, help="steps per truncation")
    parser.add_argument("--long-unroll", type=int, nargs=2, default=[], metavar=("EPISODE", "UNROLL"),
                        help="from EPISODE on, truncations of UNROLL steps (curriculum)")
    parser.add_argument("--init-from", default="", help="start from this weight file (fine-tune)")
    parser.add_argument("--horizons", type=int, nargs="+", default=[],
                        help="draw each episode's length from these (default: --steps)")
    parser.add_argument("--lanes", type=int, default=1, help="episodes run side by side")
    parser.add_argument("--meta-lr", type=float, default=1e-3)
    parser.add_argument("--meta-lr-final-fraction", type=float, default=1.0,
                        help="cosine-decay the meta learning rate to this fraction (1 = constant)")
    parser.add_argument("--meta-clipnorm", type=float, default=1.0)
    parser.add_argument("--meta-loss", choices=["mean", "log"], default="mean")
    parser.add_argument("--loss-weighting", choices=["uniform", "linear", "final"],
                        default="uniform",
                        help="linear: step t of an episode weighs t+1 in the meta-loss; final: "
                             "only the last 10 steps of each truncation count (with --unroll "
                             "equal to the episode length, the protocol's metric)")
    parser.add_argument("--validation-horizons", type=int, nargs="+", default=[],
                        help="score validation runs of each of these lengths (default: --steps); "
                             "the best weights minimize the mean log final loss over all")
    parser.add_argument("--second-order", action="store_true",
                        help="differentiate through the optimizee gradients too (the paper "
                             "drops these second derivatives); about twice the cost")
    parser.add_argument("--validate-every", type=int, default=25)
    parser.add_argument("--validation-seeds", type=int, default=4)
    parser.add_argument("--checkpoint-every", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    add_network_arguments(parser)
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="stop (resumably) after this much wall time")
    parser.add_argument("--tensorboard", default=None, help="folder for TensorBoard scalars")
    parser.add_argument("--description", default="")
    parser.add_argument("--threads", type=int, default=0,
                        help="TensorFlow intra-op threads (0 = all cores)")
    parser.add_argument("--mirrored", action="store_true",
                        help="split the lanes over tf.distribute.MirroredStrategy() replicas "
                             "(all local GPUs); --lanes must be a multiple of their number")
    parser.add_argument("--multi-worker", action="store_true",
                        help="split the lanes over tf.distribute.MultiWorkerMirroredStrategy() "
                             "(one process per machine, each with the same command and its own "
                             "TF_CONFIG); the chief (worker 0) writes --out and the checkpoint, "
                             "which must be in a folder all workers share to resume")
    parser.add_argument("--quiet", action="store_true")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    if args.mirrored and args.multi_worker:
        raise SystemExit("--mirrored and --multi-worker exclude each other")
    if args.threads:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    network = network_from_args(args)
    config = MetaTrainConfig(
        problems=tuple(args.problems or ["fmnist_mlp"]), network=network,
        episodes=args.episodes, steps=args.steps, unroll=args.unroll, lanes=args.lanes,
        meta_learning_rate=args.meta_lr, meta_lr_final_fraction=args.meta_lr_final_fraction,
        meta_clipnorm=args.meta_clipnorm, meta_loss=args.meta_loss,
        loss_weighting=args.loss_weighting,
        validate_every=args.validate_every, validation_seeds=args.validation_seeds,
        checkpoint_every=args.checkpoint_every, seed=args.seed, horizons=tuple(args.horizons),
        long_unroll=tuple(args.long_unroll), init_from=args.init_from,
        validation_horizons=tuple(args.validation_horizons),
        second_order=args.second_order,
    )
    command = "python -m keras_learned_opt.meta_train " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv))
    strategy = None
    if args.mirrored or args.multi_worker:
        import tensorflow as tf

        strategy = (tf.distribute.MultiWorkerMirroredStrategy() if args.multi_worker
                    else tf.distribute.MirroredStrategy())
    trainer = MetaTrainer(config, args.out, command=command, tensorboard=args.tensorboard,
                          verbose=0 if args.quiet else 1, description=args.description,
                          strategy=strategy)
    max_seconds = args.max_minutes * 60 if args.max_minutes else None
    out = trainer.train(max_seconds=max_seconds)
    if not trainer.is_chief:
        print(f"\nworker done at episode {trainer.episode}; the chief wrote {out}")
        return 0
    print(f"\nwrote {out}: best validation score {trainer.best_score:.4f} at episode "
          f"{trainer.best_episode}; {trainer.skipped_meta_steps} meta-steps skipped; "
          f"{trainer.coordinate_steps / max(trainer.train_seconds, 1e-9) / 1e6:.2f} M coordinate-steps/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
