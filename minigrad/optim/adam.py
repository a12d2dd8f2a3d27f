"""Adam (coupled L2 weight decay) and AdamW (decoupled weight decay), as in ``torch.optim``.

Speed: a model has many small parameters (VGG38: ~110 arrays, 336k numbers), and a NumPy call costs
about a microsecond whatever its size, so updating parameter by parameter spends most of its time in
call overhead. Adam therefore keeps each group's moments in one contiguous buffer (``state[p]["exp_avg"]``
is a view of its slice), gathers the gradients into one buffer, runs the update on the whole group at
once, and subtracts each parameter's slice of the result. The arithmetic is the same elementwise.
"""
import math
import numbers

import numpy as np

from .optimizer import Optimizer, _check_non_negative

__all__ = ["Adam", "AdamW"]


class Adam(Optimizer):
    r"""Adam exactly as ``torch.optim.Adam``. Per parameter, at step t = 1, 2, ...:

    g <- grad + weight_decay * theta                      (coupled L2: decay goes through the moments)
    m <- beta1 * m + (1 - beta1) * g                      first moment
    v <- beta2 * v + (1 - beta2) * g^2                    second moment (amsgrad: v_max <- max(v_max, v))
    theta <- theta - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

    ``eps`` is added AFTER the bias correction of v, as in PyTorch (the MLP course's Adam adds it
    before, which matters while v is tiny). State per parameter: ``step`` (int), ``exp_avg`` (m),
    ``exp_avg_sq`` (v) and, with amsgrad, ``max_exp_avg_sq`` (arrays of the parameter's shape).
    """

    # AdamW sets this: decay theta directly instead of adding weight_decay * theta to the gradient.
    _decoupled_weight_decay = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False):
        self._flat = {}  # id(group) -> _FlatGroup; validated before every use
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad)
        super().__init__(params, defaults)

    def _check_group(self, group):
        for key in ("lr", "eps", "weight_decay"):
            _check_non_negative(self, group, key)
        betas = group["betas"]
        if len(betas) != 2:
            raise ValueError(f"{type(self).__name__}: betas must be a pair (beta1, beta2), got {betas!r}")
        for i, beta in enumerate(betas):
            if isinstance(beta, bool) or not isinstance(beta, numbers.Real) or not 0 <= beta < 1:
                raise ValueError(f"{type(self).__name__}: invalid beta{i + 1} {beta!r} in betas "
                                 "(must be in [0, 1))")
        group["betas"] = tuple(betas)

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        self._flat.clear()  # the next step rebuilds the buffers from the loaded per-parameter arrays

    def _step_group(self, group):
        lr, eps, weight_decay, amsgrad = group["lr"], group["eps"], group["weight_decay"], group["amsgrad"]
        beta1, beta2 = group["betas"]
        if not group["params"]:
            return
        flat = self._flat.get(id(group))
        if flat is None or not flat.is_current(group["params"], self.state, amsgrad):
            flat = self._flat[id(group)] = _FlatGroup(group["params"], self.state, amsgrad, type(self).__name__)
        t = flat.advance_step()
        m, v, g, scratch = flat.exp_avg, flat.exp_avg_sq, flat.grad, flat.scratch

        flat.gather("grad", g)
        if weight_decay != 0 and not self._decoupled_weight_decay:
            flat.gather("data", scratch)
            scratch *= weight_decay
            g += scratch
        # m <- m + (1 - beta1) (g - m): PyTorch's lerp form of beta1 m + (1 - beta1) g.
        np.subtract(g, m, out=scratch)
        scratch *= 1 - beta1
        m += scratch
        # v <- beta2 v + (1 - beta2) g^2
        np.multiply(g, g, out=scratch)
        scratch *= 1 - beta2
        v *= beta2
        v += scratch
        if amsgrad:
            np.maximum(flat.max_exp_avg_sq, v, out=flat.max_exp_avg_sq)
            v = flat.max_exp_avg_sq
        # step = lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
        np.sqrt(v, out=scratch)
        scratch /= math.sqrt(1 - beta2 ** t)
        scratch += eps
        np.divide(m, scratch, out=scratch)
        scratch *= lr / (1 - beta1 ** t)

        decay = 1 - lr * weight_decay if self._decoupled_weight_decay and weight_decay != 0 else None
        for p, step in zip(group["params"], flat.scratch_views):
            if decay is not None:
                p.data *= decay
            p.data -= step


class AdamW(Adam):
    r"""AdamW as ``torch.optim.AdamW``: Adam whose weight decay is decoupled from the moments.

    theta <- theta * (1 - lr * weight_decay), then the Adam step above with g = grad (no L2 term).
    Default ``weight_decay=1e-2``.
    """

    _decoupled_weight_decay = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad)


class _FlatGroup:
    """One group's moment buffers, contiguous, with ``state[p][name]`` as views of their slices.

    Built at the first step and rebuilt whenever it no longer matches the optimiser (after
    ``load_state_dict``, a change of parameters or dtype, amsgrad switched on, a deep copy): existing
    per-parameter arrays are copied into the new buffers, so nothing is lost.
    """

    def __init__(self, params, state, amsgrad, owner):
        self.params = list(params)
        self.param_dtypes = [p.dtype for p in self.params]
        self.dtype = np.result_type(*self.param_dtypes)  # one buffer per group: the widest dtype
        sizes = [p.size for p in self.params]
        self.bounds = np.concatenate([[0], np.cumsum(sizes)]).tolist()
        total = self.bounds[-1]
        names = ["exp_avg", "exp_avg_sq"] + (["max_exp_avg_sq"] if amsgrad else [])
        self.buffers = {name: np.zeros(total, dtype=self.dtype) for name in names}
        for name, buffer in self.buffers.items():
            setattr(self, name, buffer)
        self.grad = np.empty(total, dtype=self.dtype)
        self.scratch = np.empty(total, dtype=self.dtype)
        self.scratch_views = list(self.views(self.scratch))  # each parameter's slice, made once

        steps = set()
        self.entries = []
        for p, lo, hi in zip(self.params, self.bounds[:-1], self.bounds[1:]):
            old = state.get(p, {})
            entry = {"step": int(old.get("step", 0))}
            for name, buffer in self.buffers.items():
                view = buffer[lo:hi].reshape(p.shape)
                if name in old:
                    view[...] = old[name]
                entry[name] = view
            state[p] = entry
            self.entries.append(entry)
            steps.add(entry["step"])
        if len(steps) > 1:
            # Every parameter of a group is updated at every step (.grad is never None), so counts only
            # differ if parameters were appended to a group mid-run; give those their own group.
            raise ValueError(f"{owner}: the parameters of one group have different step counts "
                             f"{sorted(steps)}; add new parameters with add_param_group() instead")
        self.step = steps.pop() if steps else 0

    def is_current(self, params, state, amsgrad):
        if len(params) != len(self.params) or (amsgrad and "max_exp_avg_sq" not in self.buffers):
            return False
        for p, mine, dtype, entry in zip(params, self.params, self.param_dtypes, self.entries):
            if p is not mine or p.dtype != dtype or state.get(p) is not entry:
                return False
            if entry["exp_avg"].base is not self.exp_avg or entry["step"] != self.step:
                return False
        return True

    def advance_step(self):
        self.step += 1
        for entry in self.entries:
            entry["step"] = self.step
        return self.step

    def gather(self, attribute, out):
        """Copy every parameter's ``.grad`` (or ``.data``) into the flat array ``out``."""
        np.concatenate([getattr(p, attribute).reshape(-1) for p in self.params], out=out)

    def views(self, flat):
        """Each parameter's slice of ``flat``, in its shape."""
        for p, lo, hi in zip(self.params, self.bounds[:-1], self.bounds[1:]):
            yield flat[lo:hi].reshape(p.shape)
