"""Optimisers and learning-rate schedulers, named as in ``torch.optim``."""
from . import lr_scheduler
from .optimizer import *  # noqa: F401,F403
from .sgd import *  # noqa: F401,F403
from .adam import *  # noqa: F401,F403
