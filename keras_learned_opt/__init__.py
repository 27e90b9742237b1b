"""keras_learned_opt: a Keras 3 optimizer whose update rule is a meta-trained LSTM."""

__version__ = "0.13.0"

from keras_learned_opt.errors import (  # noqa: E402
    ArchitectureMismatchError,
    NoPretrainedWeightsError,
    UnknownPretrainedError,
    WeightFileError,
)
from keras_learned_opt.network import NetworkConfig  # noqa: E402
from keras_learned_opt.optimizer import LearnedOptimizer  # noqa: E402
from keras_learned_opt.callbacks import TotalStepsFromFit  # noqa: E402
from keras_learned_opt.bundled import list_pretrained, pretrained_dir  # noqa: E402
from keras_learned_opt.weights import load_weight_file, save_weight_file  # noqa: E402

__all__ = [
    "ArchitectureMismatchError",
    "LearnedOptimizer",
    "NetworkConfig",
    "NoPretrainedWeightsError",
    "TotalStepsFromFit",
    "UnknownPretrainedError",
    "WeightFileError",
    "list_pretrained",
    "load_weight_file",
    "pretrained_dir",
    "save_weight_file",
]
