"""Check a module's handwritten backward against central finite differences, in float64.

For a layer ``y = m(x)`` and a random upstream gradient ``u`` (never all ones), the scalar
``f(x, theta) = <u, m(x)>`` has gradient ``m.backward(u)`` w.r.t. x and ``theta.grad`` w.r.t. each
parameter. Two modes:

- ``"direction"`` (default, any size): for random unit directions ``v``,
  ``(f(x + eps v) - f(x - eps v)) / (2 eps)`` must equal ``<grad, v>``. One check costs two forwards.
- ``"elementwise"`` (tiny shapes): every element perturbed in turn; reports the worst element.

Relative error = ``|numeric - analytic| / max(|numeric|, |analytic|, floor)``. The floor is what float64
central differences can resolve: ``f`` is known to about ``1e-14 * S`` (``S = sum |u * y|``, the size of
the terms summed into ``f``), so a difference quotient carries noise ``1e-14 * S / eps``; the floor is
that noise times 1e6, the level below which a 1e-6 relative check cannot be resolved. Without it, a gradient that is exactly zero (a conv bias followed by batch
norm) would compare rounding noise with rounding noise and fail. The module is deep-copied
and cast to float64, so the caller's module is untouched. Stateful layers are made repeatable: buffers
(BN running statistics) and every ``np.random.Generator`` a module holds (dropout masks) are restored
before each forward.

For a loss (``crit(logits, target)`` returning a float, ``crit.backward()`` returning d loss / d logits)
pass ``target=``; then ``f = crit(x, target)``.
"""
import copy
from dataclasses import dataclass, field

import numpy as np

__all__ = ["gradcheck", "GradcheckResult", "GradcheckError"]


class GradcheckError(AssertionError):
    """Raised by ``gradcheck(..., raise_on_fail=True)`` when a gradient disagrees."""


@dataclass
class GradcheckResult:
    """Outcome of a gradient check: worst relative error overall and per target ("input", "weight", ...)."""

    ok: bool
    max_rel_error: float
    worst_target: str
    worst_index: object
    errors: dict = field(default_factory=dict)
    tolerance: float = 1e-6

    def __str__(self):
        lines = [f"gradcheck {'passed' if self.ok else 'FAILED'}: worst relative error "
                 f"{self.max_rel_error:.3e} at {self.worst_target}{'' if self.worst_index is None else ' ' + str(self.worst_index)}"
                 f" (tolerance {self.tolerance:.0e})"]
        for target, error in self.errors.items():
            lines.append(f"  {target}: {error:.3e}")
        return "\n".join(lines)


def _generators(module):
    found = []
    for sub in module.modules():
        for value in vars(sub).values():
            if isinstance(value, np.random.Generator):
                found.append(value)
    return found


def gradcheck(module, x, *, target=None, mode="direction", eps=1e-6, tolerance=1e-6, directions=3,
              seed=0, wrt=None, raise_on_fail=False):
    """Compare ``module.backward`` with central differences; returns a ``GradcheckResult``.

    ``x``: the input (cast to float64), or a shape tuple for a standard-normal input.
    ``wrt``: names to check (``"input"`` and parameter names); default all.
    """
    rng = np.random.default_rng(seed)
    if isinstance(x, tuple) and all(isinstance(d, (int, np.integer)) for d in x):
        x = rng.standard_normal(x)
    x = np.array(x, dtype=np.float64, copy=True)
    m = copy.deepcopy(module).to(np.float64)
    is_loss = target is not None
    params = dict(m.named_parameters())
    saved_buffers = {name: np.array(value, copy=True) for name, value in m.named_buffers() if value is not None}
    generators = _generators(m)
    saved_rng = [g.bit_generator.state for g in generators]

    def restore_state():
        if saved_buffers:
            m.load_state_dict({**m.state_dict(), **saved_buffers})
        for g, state in zip(generators, saved_rng):
            g.bit_generator.state = state

    def run_forward(inp):
        restore_state()
        return m(inp, target) if is_loss else m(inp)

    # Analytic gradients.
    y = run_forward(x)
    upstream = None if is_loss else rng.standard_normal(np.shape(y)) + 0.5
    scale = abs(float(y)) if is_loss else float(np.sum(np.abs(upstream * y)))
    floor = max(1e-8 * scale / eps, 1e-300)
    m.zero_grad()
    grad_x = m.backward() if is_loss else m.backward(upstream)
    analytic = {"input": np.array(grad_x, dtype=np.float64)}
    analytic.update({name: p.grad.copy() for name, p in params.items()})
    targets = list(analytic) if wrt is None else list(wrt)
    unknown = [t for t in targets if t not in analytic]
    if unknown:
        raise ValueError(f"gradcheck: unknown targets {unknown}; available {list(analytic)}")

    def objective():
        out = run_forward(x)
        return float(out) if is_loss else float(np.sum(upstream * out))

    def array_of(name):
        return x if name == "input" else params[name].data

    errors, worst = {}, (0.0, None, None)
    for name in targets:
        array = array_of(name)
        grad = analytic[name]
        if grad.shape != array.shape:
            raise ValueError(f"gradcheck: gradient for {name} has shape {grad.shape}, expected {array.shape}")
        worst_here, where = 0.0, None
        if mode == "direction":
            for k in range(directions):
                v = rng.standard_normal(array.shape)
                v /= max(np.linalg.norm(v), 1e-300)
                original = array.copy()
                array[...] = original + eps * v
                f_plus = objective()
                array[...] = original - eps * v
                f_minus = objective()
                array[...] = original
                numeric = (f_plus - f_minus) / (2 * eps)
                exact = float(np.sum(grad * v))
                error = abs(numeric - exact) / max(abs(numeric), abs(exact), floor)
                if error > worst_here:
                    worst_here, where = error, f"direction {k}"
        elif mode == "elementwise":
            flat = array.reshape(-1)
            if not np.shares_memory(flat, array):
                raise ValueError(f"gradcheck: {name} is not contiguous; cannot perturb elementwise")
            for i in range(flat.size):
                original = flat[i]
                flat[i] = original + eps
                f_plus = objective()
                flat[i] = original - eps
                f_minus = objective()
                flat[i] = original
                numeric = (f_plus - f_minus) / (2 * eps)
                exact = float(grad.reshape(-1)[i])
                error = abs(numeric - exact) / max(abs(numeric), abs(exact), floor)
                if error > worst_here:
                    worst_here, where = error, tuple(int(j) for j in np.unravel_index(i, array.shape))
        else:
            raise ValueError(f"gradcheck: mode must be 'direction' or 'elementwise', got {mode!r}")
        errors[name] = worst_here
        if worst_here >= worst[0]:
            worst = (worst_here, name, where)
    result = GradcheckResult(ok=worst[0] <= tolerance, max_rel_error=worst[0], worst_target=worst[1],
                             worst_index=worst[2], errors=errors, tolerance=tolerance)
    if raise_on_fail and not result.ok:
        raise GradcheckError(str(result))
    return result
