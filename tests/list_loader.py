"""An in-memory loader for Trainer tests: fixed batches, in order."""
import numpy as np


class ListLoader:
    """Fixed batches, in order (``epoch(rng)`` ignores ``rng``): a Trainer loader without data files."""

    def __init__(self, batches):
        self.batches = [(np.asarray(x), np.asarray(y)) for x, y in batches]

    def __len__(self):
        return len(self.batches)

    def epoch(self, rng=None):
        return iter(self.batches)
