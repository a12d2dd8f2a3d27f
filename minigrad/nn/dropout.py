"""Dropout (Srivastava et al., 2014), inverted as ``torch.nn.Dropout``."""
import numpy as np

from .. import random as _random
from .module import Module

__all__ = ["Dropout"]


class Dropout(Module):
    r"""Zero each element with probability ``p`` in training and scale the survivors by 1 / (1 - p).

    Forward   training: y = x * m / (1 - p),  m_i ~ Bernoulli(1 - p) drawn fresh each forward;
              eval: y = x (the scaling in training keeps E[y] = x, so nothing changes at test time).
    Backward  dx = g * m / (1 - p)  (the same mask);  eval: dx = g.   p = 1 gives y = 0, dx = 0.
    Masks     drawn from ``self.generator`` (an ``np.random.Generator``): ``generator=`` if given, else one
              seeded from ``minigrad.random.default_generator()`` at construction, so
              ``manual_seed(s)`` fixes every mask of a run and gradcheck can replay one.
    Kept      the boolean mask m and the scale 1 / (1 - p). ``inplace`` is accepted, as PyTorch's, and
              ignored: the input is never modified.
    """

    def __init__(self, p=0.5, inplace=False, generator=None):
        super().__init__()
        if isinstance(p, bool) or not 0 <= p <= 1:
            raise ValueError(f"Dropout: probability p must be between 0 and 1, got {p!r}")
        self.p = float(p)
        if generator is None:
            generator = np.random.default_rng(_random.default_generator().integers(2**63))
        if not isinstance(generator, np.random.Generator):
            raise TypeError(f"Dropout: generator must be an np.random.Generator, got {type(generator).__name__}")
        self.generator = generator

    def forward(self, x):
        x = self._check_input(x)
        if not self.training:
            self.save_for_backward(mask=None)
            return x
        mask = self.generator.random(x.shape) >= self.p
        scale = x.dtype.type(0.0 if self.p == 1 else 1.0 / (1.0 - self.p))
        self.save_for_backward(mask=mask, scale=scale)
        y = x * mask
        y *= scale
        return y

    def backward(self, grad_output):
        if self.saved.mask is None:  # the forward ran in eval mode
            return grad_output
        grad_input = grad_output * self.saved.mask
        grad_input *= self.saved.scale
        return grad_input

    def extra_repr(self):
        return f"p={self.p}"
