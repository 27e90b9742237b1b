"""Exception types raised by keras_learned_opt.

Every error derives from a built-in type (ValueError, TypeError) so callers that
do not know this package can still catch it the usual way.
"""


class WeightFileError(ValueError):
    """A weight file is unreadable, corrupt, or not a keras_learned_opt file."""


class ArchitectureMismatchError(WeightFileError):
    """Arrays in a weight file do not match the architecture it declares."""


class UnknownPretrainedError(ValueError):
    """A bundled weight name that does not exist was requested."""


class NoPretrainedWeightsError(ValueError):
    """`LearnedOptimizer()` was asked for the default weights but none are bundled."""
