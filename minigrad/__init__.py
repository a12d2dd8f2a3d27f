"""minigrad: a deep-learning library written from scratch in NumPy, for learning.

Every layer has an explicit ``forward`` and a handwritten ``backward``; the API is shaped like
PyTorch's (``from minigrad import nn, optim``) so course code and papers map onto it one to one.
"""
__version__ = "0.1.0"

from . import nn, optim  # noqa: E402
from .random import manual_seed  # noqa: E402
from .gradcheck import gradcheck  # noqa: E402

__all__ = ["nn", "optim", "gradcheck", "manual_seed", "__version__"]
