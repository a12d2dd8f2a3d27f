"""The library's global random generator, as ``torch.manual_seed``: initialisers and dropout draw from it.

``manual_seed(s)`` makes model construction reproducible; ``get_rng_state`` / ``set_rng_state`` give the
generator's state as a JSON-friendly dict (``bit_generator.state``) for exact resume from checkpoints.
"""
import numpy as np

__all__ = ["manual_seed", "default_generator", "get_rng_state", "set_rng_state"]

_generator = np.random.default_rng(0)


def manual_seed(seed):
    """Reseed the global generator; returns it."""
    global _generator
    _generator = np.random.default_rng(seed)
    return _generator


def default_generator():
    """The global ``np.random.Generator`` used where no ``rng`` is passed."""
    return _generator


def get_rng_state():
    return _generator.bit_generator.state


def set_rng_state(state):
    _generator.bit_generator.state = state
