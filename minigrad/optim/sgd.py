"""Stochastic gradient descent with optional momentum, dampening, Nesterov and L2 weight decay."""
import numpy as np

from .optimizer import Optimizer, _check_non_negative

__all__ = ["SGD"]


class SGD(Optimizer):
    r"""SGD exactly as ``torch.optim.SGD``. Per parameter, with ``g = grad + weight_decay * theta``:

    momentum 0:  theta <- theta - lr * g
    momentum mu: b <- g at the first step, else b <- mu * b + (1 - dampening) * g
                 theta <- theta - lr * (g + mu * b)  if nesterov  else  theta - lr * b

    The buffer starts as the first gradient itself (no dampening), as in PyTorch. Nesterov needs
    ``momentum > 0`` and ``dampening == 0``. ``.grad`` is only read, never modified.
    """

    def __init__(self, params, lr, momentum=0, dampening=0, weight_decay=0, nesterov=False):
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                        nesterov=nesterov)
        super().__init__(params, defaults)

    def _check_group(self, group):
        for key in ("lr", "momentum", "dampening", "weight_decay"):
            _check_non_negative(self, group, key)
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError(f"SGD: nesterov=True requires momentum > 0 and dampening == 0, got "
                             f"momentum={group['momentum']}, dampening={group['dampening']}")

    def _step_group(self, group):
        lr, momentum, dampening = group["lr"], group["momentum"], group["dampening"]
        weight_decay, nesterov = group["weight_decay"], group["nesterov"]
        for p in group["params"]:
            grad = p.grad
            if weight_decay != 0:
                grad = grad + weight_decay * p.data  # a new array: p.grad stays the loss gradient
            if momentum != 0:
                state = self.state.setdefault(p, {})
                buf = state.get("momentum_buffer")
                if buf is None:
                    buf = state["momentum_buffer"] = np.array(grad, dtype=p.dtype, copy=True)
                else:
                    buf *= momentum
                    buf += (1 - dampening) * grad
                grad = grad + momentum * buf if nesterov else buf
            p.data -= lr * grad
