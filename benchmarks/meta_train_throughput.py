"""Meta-training throughput: optimizee coordinate-steps per second of ``Unroller.train_truncation``.

Usage: python benchmarks/meta_train_throughput.py [--tiny] [--unroll U] [--real-data]

On the fmnist_mlp problem (784-20-10, sigmoid, batch 128; synthetic images
unless ``--real-data``: speed does not depend on them) it times one truncation
with meta-gradients, interleaved, for:

* the ``Unroller`` as used by the meta-trainer (all coordinates of all lanes in
  one network call per step), with 1 and with 4 lanes;
* a per-variable variant that calls the network once per parameter tensor per
  lane and step (what a direct port of the per-variable optimizer would do).
"""

from __future__ import annotations

import _common

import numpy as np
import tensorflow as tf

from keras_learned_opt.network import apply_network, initial_weights
from keras_learned_opt.problems import KerasProblem, get_problem, mlp_builder
from keras_learned_opt.unroll import Unroller


class PerVariableUnroller(Unroller):
    """``Unroller`` with one network call per parameter tensor and lane (for comparison)."""

    def _network_step(self, weights, flat_grads, state, step, horizon):
        pieces = [tf.split(s, self.sizes * self.lanes, axis=1) for s in state]
        updates, new_pieces = [], []
        for j, gradient in enumerate(flat_grads):
            update, new = apply_network(weights, self.config, gradient, [p[j] for p in pieces],
                                        step, horizon)
            updates.append(update)
            new_pieces.append(new)
        return updates, [tf.concat([n[i] for n in new_pieces], 1) for i in range(len(state))]


def problem(real: bool) -> KerasProblem:
    if real:
        return get_problem("fmnist_mlp")
    rng = np.random.default_rng(0)
    x = rng.random((4096, 784), dtype=np.float32)
    y = rng.integers(0, 10, 4096).astype(np.int32)
    return KerasProblem("fmnist_mlp (synthetic data)", mlp_builder((20,), "sigmoid"), (x, y),
                        batch_size=128)


def truncation(unroller: Unroller, weights: dict, steps: int):
    """A callable running one train_truncation from fresh episodes (blocks until done)."""
    params, task, batches = unroller.episodes(list(range(unroller.lanes)), steps)
    state = unroller.initial_state()
    chunk = [tf.constant(b[:, :unroller.unroll]) for b in batches]

    def run():
        meta_loss, *_ = unroller.train_truncation(weights, params, state, task, chunk, 0)
        return float(meta_loss)

    return run


def main() -> int:
    p = _common.parser(__doc__.splitlines()[0])
    p.add_argument("--unroll", type=int, default=None, help="steps per truncation (default 20)")
    p.add_argument("--real-data", action="store_true", help="use Fashion-MNIST itself")
    args = p.parse_args()
    unroll = args.unroll or (2 if args.tiny else 20)
    rounds = args.rounds or (1 if args.tiny else 3)
    prob = problem(args.real_data)
    config = _common.PAPER_CONFIG
    rng = np.random.default_rng(0)
    weights = {k: tf.Variable(v + 0.05 * rng.standard_normal(v.shape).astype(np.float32))
               for k, v in initial_weights(config).items()}
    print(_common.machine_note())
    variants = {
        "Unroller (one call per step), 1 lane": Unroller(prob, config, unroll, 1),
        "per-variable calls, 1 lane": PerVariableUnroller(prob, config, unroll, 1),
    }
    if not args.tiny:
        variants["Unroller (one call per step), 4 lanes"] = Unroller(prob, config, unroll, 4)
        variants["per-variable calls, 4 lanes"] = PerVariableUnroller(prob, config, unroll, 4)
    runs = {name: truncation(u, weights, unroll) for name, u in variants.items()}
    seconds = _common.interleaved(runs, rounds=rounds)
    base = variants["Unroller (one call per step), 1 lane"]
    rows = []
    for name, u in variants.items():
        rate = u.coordinates * unroll / seconds[name]
        rows.append([name, u.coordinates, seconds[name], rate / 1e6,
                     rate / (base.coordinates * unroll / seconds[next(iter(variants))])])
    print(f"problem: {prob.name}, unroll {unroll}, {len(base.sizes)} parameter tensors")
    print(_common.table(["variant", "coordinates", "s/truncation", "M coord-steps/s",
                         "rate / Unroller 1 lane"], rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
