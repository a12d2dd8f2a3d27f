"""Losses, as ``torch.nn``: ``loss = crit(input, target)`` is a Python float; ``crit.backward()`` returns
d loss / d input (no argument: a loss ends the chain, so its upstream gradient is 1).

``reduction="mean"`` (default) or ``"sum"``, keyword-only as in PyTorch (whose first positional
arguments are deprecated or unsupported here). A non-finite input gives a non-finite loss, never an
error: a diverging run must be seen, not crash.

As a layer's, a loss's forward keeps what backward needs with ``self.save_for_backward(...)`` (read as
``self.saved``); the base class checks that ``backward()`` follows a forward, once, and then lets
``self.saved`` go.
"""
import functools

import numpy as np

from .module import Module

__all__ = ["CrossEntropyLoss", "MSELoss", "DotProductLoss"]


def _checked_loss_backward(backward):
    """Wrap a loss's ``backward()`` with the one-backward-per-forward check; drop ``saved`` after it."""

    @functools.wraps(backward)
    def checked(self):
        name = self._display_name()
        if self._forward_state is None:
            raise RuntimeError(f"{name}.backward() was called before a forward (loss = crit(input, target))")
        if self._forward_state == "used":
            raise RuntimeError(f"{name}.backward() was called twice for the same forward; run the loss again first")
        self._forward_state = "used"
        try:
            return backward(self)
        finally:
            object.__setattr__(self, "saved", None)

    checked._is_checked = True
    return checked


class _Loss(Module):
    """Shared checks: the reduction, floating input, and one ``backward()`` per forward."""

    _is_loss = True  # Module must not wrap backward() with the layer contract: a loss's takes no argument

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        backward = cls.__dict__.get("backward")
        if backward is not None and not getattr(backward, "_is_checked", False):
            cls.backward = _checked_loss_backward(backward)

    def __init__(self, *, reduction="mean"):
        super().__init__()
        if reduction not in ("mean", "sum"):
            raise ValueError(f"{type(self).__name__}: reduction must be 'mean' or 'sum', got {reduction!r}")
        self.reduction = reduction

    def __call__(self, input, target):
        self._forward_state = None  # a failed forward leaves nothing for backward
        loss = self.forward(input, target)
        self._forward_state = "ready"
        return loss

    def _check_float(self, array, what, ndim=None):
        array = np.asarray(array)
        if not np.issubdtype(array.dtype, np.floating):
            raise TypeError(f"{self._display_name()}: {what} must be a floating-point array, got dtype {array.dtype}")
        if ndim is not None and array.ndim != ndim:
            raise ValueError(f"{self._display_name()}: {what} must have {ndim} dimensions, got shape {array.shape}")
        return array

    def _check_same_shape(self, input, target):
        if target.shape != input.shape:
            raise ValueError(f"{self._display_name()}: target must have the input's shape {input.shape}, "
                             f"got {target.shape}")

    def _reduce(self, per_example):
        """Mean or sum of the per-example losses, as a Python float (accumulated in float64).

        Over an empty batch, as PyTorch: the mean is NaN (0 / 0), the sum 0; backward returns an empty gradient.
        """
        total = float(np.sum(per_example, dtype=np.float64))
        if self.reduction == "sum":
            return total
        return total / per_example.size if per_example.size else float("nan")

    def extra_repr(self):
        return f"reduction={self.reduction!r}"


class CrossEntropyLoss(_Loss):
    r"""Softmax cross-entropy of logits against integer class indices, as ``torch.nn.CrossEntropyLoss``.

    Forward   loss_i = -log softmax(z_i)[t_i] = logsumexp(z_i) - z_i[t_i]; mean (or sum) over i.
              Computed as m_i = max_j z_ij, logsumexp(z_i) = m_i + log sum_j exp(z_ij - m_i): no overflow.
    Backward  d loss / d z_i = (softmax(z_i) - onehot(t_i)) / N   (mean; without / N for sum)
    Shapes    logits (N, C) floating; target (N,) integers in [0, C) -> a float.
    Kept      ``softmax`` = softmax(z) (N, C) and ``target``.
    """

    def forward(self, input, target):
        logits = self._check_float(input, "logits (input)", ndim=2)
        target = self._check_target(target, logits.shape)
        shifted = logits - logits.max(axis=1, keepdims=True)
        exp = np.exp(shifted)
        sum_exp = exp.sum(axis=1, keepdims=True)
        per_example = np.log(sum_exp[:, 0]) - shifted[np.arange(len(target)), target]
        self.save_for_backward(softmax=exp / sum_exp, target=target)
        return self._reduce(per_example)

    def backward(self):
        softmax, target = self.saved.softmax, self.saved.target
        grad = softmax.copy()
        grad[np.arange(len(target)), target] -= 1
        if self.reduction == "mean":
            grad /= len(target)
        return grad

    def _check_target(self, target, logits_shape):
        name = self._display_name()
        target = np.asarray(target)
        if target.dtype == bool or not np.issubdtype(target.dtype, np.integer):
            raise TypeError(f"{name}: target must hold integer class indices, got dtype {target.dtype} "
                            "(probabilities / one-hot targets are not supported)")
        n, classes = logits_shape
        if target.shape != (n,):
            raise ValueError(f"{name}: target must have shape ({n},) to match logits {logits_shape}, "
                             f"got {target.shape}")
        low, high = (int(target.min()), int(target.max())) if n else (0, 0)
        if low < 0 or high >= classes:
            bad = low if low < 0 else high
            raise ValueError(f"{name}: target {bad} is out of range for {classes} classes (valid: 0..{classes - 1})")
        return target.astype(np.intp, copy=False)


class MSELoss(_Loss):
    r"""Mean squared error, as ``torch.nn.MSELoss``: the mean (or sum) over ALL elements.

    Forward   loss = mean((x - y)^2)
    Backward  d loss / d x = 2 (x - y) / numel   (mean; 2 (x - y) for sum)
    Shapes    input and target of the same shape, floating.
    """

    def forward(self, input, target):
        input = self._check_float(input, "input")
        target = self._check_float(target, "target")
        self._check_same_shape(input, target)
        diff = input - target
        self.save_for_backward(diff=diff)
        return self._reduce(diff * diff)

    def backward(self):
        diff = self.saved.diff
        grad = 2 * diff
        return grad / diff.size if self.reduction == "mean" else grad


class DotProductLoss(_Loss):
    r"""The error E = <label, output> of one point, for the gradient-scale study (Philipp et al. 2018).

    Forward   E_i = sum_k label_ik * output_ik over every axis but the first; mean (or sum) over i.
    Backward  d loss / d output = label / N   (mean; label for sum). It is linear: the gradient at the
              output is the label itself, whatever the output.
    Shapes    output (N, *) and label (N, *) of the same shape, floating.
    """

    def forward(self, input, target):
        output = self._check_float(input, "output (input)")
        label = self._check_float(target, "label (target)")
        self._check_same_shape(output, label)
        if output.ndim == 0:
            raise ValueError(f"{self._display_name()}: output must have a batch axis, got a scalar")
        self.save_for_backward(label=label, dtype=np.result_type(output, label))
        per_example = np.sum(label * output, axis=tuple(range(1, output.ndim)))
        return self._reduce(per_example)

    def backward(self):
        grad = self.saved.label.astype(self.saved.dtype)  # a copy: the caller's label is never handed out
        return grad / len(grad) if self.reduction == "mean" else grad
