"""Optimizer: parameter groups, per-parameter state, ``zero_grad`` and checkpoint-friendly state dicts.

As ``torch.optim.Optimizer``: ``param_groups`` is a list of dicts, each with ``"params"`` (a list of
``Parameter``) and its own hyper-parameters (``"lr"``, ...; missing ones come from ``defaults``), so a
scheduler or the user can change ``group["lr"]`` between steps. ``state[param]`` holds what an update
rule carries from step to step (momentum buffers, moment estimates, step counts).

``state_dict()`` names parameters by their index in the order of ``param_groups`` and holds only numpy
arrays and JSON scalars (and the optimiser's class name under ``"type"``: the state of an Adam never
loads into an SGD, nor an Adam's into an AdamW), so a checkpoint never needs pickle: ``split_state_dict`` separates the arrays
(for ``np.savez``) from the rest (for ``json.dump``), and ``join_state_dict`` puts them back together::

    arrays, meta = split_state_dict(opt.state_dict(), prefix="optim.")
    ...
    opt.load_state_dict(join_state_dict(np.load(path), meta, prefix="optim."))
"""
import numbers

import numpy as np

from ..nn.module import Parameter

__all__ = ["Optimizer", "split_state_dict", "join_state_dict"]


class Optimizer:
    """Base class: holds ``param_groups`` and ``state``; subclasses write ``_step_group(group)``.

    ``params``: an iterable of ``Parameter`` or of dicts ``{"params": [...], "lr": ..., ...}``.
    ``defaults``: the hyper-parameters a group gets when it does not set them.
    """

    def __init__(self, params, defaults):
        self.defaults = dict(defaults)
        self.state = {}  # Parameter -> dict; Parameter hashes by identity
        self.param_groups = []
        if isinstance(params, Parameter):
            raise TypeError(f"{type(self).__name__}: params must be an iterable of Parameters "
                            "(e.g. model.parameters()), got a single Parameter")
        if isinstance(params, dict):
            params = [params]
        groups = list(params)
        if not groups:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    def add_param_group(self, param_group):
        """Append a group; hyper-parameters it does not set are taken from ``defaults``."""
        name = type(self).__name__
        if not isinstance(param_group, dict):
            raise TypeError(f"{name}: a parameter group must be a dict, got {type(param_group).__name__}")
        group = dict(param_group)
        params = group.get("params")
        if isinstance(params, Parameter):
            params = [params]
        elif params is None or isinstance(params, (set, dict)):
            # A set has no stable order, so state_dict indices would not survive a restart.
            raise TypeError(f"{name}: group['params'] must be an ordered iterable of Parameters, "
                            f"got {type(params).__name__}")
        params = list(params)
        for p in params:
            if not isinstance(p, Parameter):
                raise TypeError(f"{name}: can only optimise Parameters, got {type(p).__name__}")
        if len({id(p) for p in params}) != len(params):
            raise ValueError(f"{name}: a parameter group contains the same Parameter twice")
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in seen for p in params):
            raise ValueError(f"{name}: some parameters appear in more than one parameter group")
        group["params"] = params
        for key, default in self.defaults.items():
            group.setdefault(key, default)
        self._check_group(group)
        self.param_groups.append(group)

    def _check_group(self, group):
        """Validate one group's hyper-parameters (ValueError naming the bad one). Subclasses extend."""
        _check_non_negative(self, group, "lr")

    def zero_grad(self):
        """Set every parameter's ``.grad`` to zero in place (it is never None in minigrad)."""
        for group in self.param_groups:
            for p in group["params"]:
                p.grad[...] = 0

    def step(self, closure=None):
        """Update every parameter from its ``.grad``; ``closure`` (optional) recomputes and returns the loss."""
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            self._step_group(group)
        return loss

    def _step_group(self, group):
        raise NotImplementedError(f"{type(self).__name__} does not implement _step_group()")

    # ----------------------------------------------------------------- state
    def _indexed_params(self):
        return [p for group in self.param_groups for p in group["params"]]

    def state_dict(self):
        """``{"type": class name, "state": {index: {name: int | float | ndarray}},
        "param_groups": [{..., "params": [index]}]}``.

        Arrays are copies, so the dict is a snapshot that later steps do not change.
        """
        index = {id(p): i for i, p in enumerate(self._indexed_params())}
        state = {}
        for p, entry in self.state.items():
            if id(p) in index:
                state[index[id(p)]] = {key: value.copy() if isinstance(value, np.ndarray) else value
                                       for key, value in entry.items()}
        groups = []
        for group in self.param_groups:
            saved = {key: value for key, value in group.items() if key != "params"}
            saved["params"] = [index[id(p)] for p in group["params"]]
            groups.append(saved)
        return {"type": type(self).__name__, "state": dict(sorted(state.items())), "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Restore hyper-parameters and state saved by ``state_dict`` (parameters matched by index).

        The state must be this optimiser's kind: its ``"type"`` (or, in a state dict without one, every
        hyper-parameter of its groups) must be this class's. The groups must hold as many parameters as
        when saved; arrays must have their parameter's shape and are copied (at least in the parameter's
        dtype). State keys may be ints or their strings. Nothing changes unless everything loads.
        """
        name = type(self).__name__
        saved_type = state_dict.get("type")
        if saved_type is not None and saved_type != name:
            raise ValueError(f"{name}.load_state_dict: the state was saved by {saved_type}, not by {name}; "
                             f"another optimiser's state cannot continue this one")
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(f"{name}.load_state_dict: {len(saved_groups)} parameter groups saved, "
                             f"optimiser has {len(self.param_groups)}")
        known = set(self.defaults) | {"params", "initial_lr"}  # initial_lr: set by a scheduler
        for i, (saved, group) in enumerate(zip(saved_groups, self.param_groups)):
            unknown = sorted(set(saved) - known)
            if saved_type is None and unknown:
                raise ValueError(f"{name}.load_state_dict: parameter group {i} has hyper-parameters {unknown} "
                                 f"that {name} does not have: the state was saved by another optimiser, not by {name}")
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(f"{name}.load_state_dict: group {i} saved with {len(saved['params'])} "
                                 f"parameters, optimiser's has {len(group['params'])}")
        params = self._indexed_params()
        new_state = {}
        for key, entry in state_dict["state"].items():
            i = int(key)
            if not 0 <= i < len(params):
                raise ValueError(f"{name}.load_state_dict: state for parameter {i}, but there are "
                                 f"only {len(params)}")
            p = params[i]
            restored = {}
            for field, value in entry.items():
                if isinstance(value, np.ndarray):
                    if value.shape != p.shape:
                        raise ValueError(f"{name}.load_state_dict: state[{i}][{field!r}] has shape "
                                         f"{value.shape}, parameter {i} has {p.shape}")
                    # never narrower than saved: a float64 buffer of a mixed-dtype group stays exact
                    value = np.array(value, dtype=np.result_type(value.dtype, p.dtype), copy=True)
                restored[field] = value
            new_state[p] = restored
        new_groups = []
        for saved, group in zip(saved_groups, self.param_groups):
            restored = {key: value for key, value in saved.items() if key != "params"}
            for key, default in self.defaults.items():
                if key not in restored:
                    restored[key] = default
                elif isinstance(default, tuple):  # betas come back from JSON as a list
                    restored[key] = tuple(restored[key])
            restored["params"] = group["params"]
            self._check_group(restored)
            new_groups.append(restored)
        # Assign only after everything was checked: a failed load leaves the optimiser untouched.
        self.state = new_state
        self.param_groups = new_groups

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            for key in sorted(k for k in group if k != "params"):
                lines.append(f"    {key}: {group[key]}")
        return "\n".join(lines) + "\n)"


def _check_non_negative(optimizer, group, key):
    value = group[key]
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not value >= 0:
        raise ValueError(f"{type(optimizer).__name__}: invalid {key} {value!r} (must be a number >= 0)")


def _json_value(value):
    """numpy scalars and tuples -> plain Python, so ``json.dump`` accepts the result."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    return value


def split_state_dict(state_dict, prefix=""):
    """Split an optimiser ``state_dict`` into ``(arrays, meta)``: arrays for ``.npz``, meta for JSON.

    ``arrays["<prefix>state.<index>.<name>"]`` holds each state array; ``meta`` holds everything else
    (step counts, hyper-parameters, parameter indices) as JSON types.
    """
    arrays, meta_state = {}, {}
    for index, entry in state_dict["state"].items():
        scalars = {}
        for field, value in entry.items():
            if isinstance(value, np.ndarray):
                arrays[f"{prefix}state.{int(index)}.{field}"] = value
            else:
                scalars[field] = _json_value(value)
        meta_state[str(int(index))] = scalars
    meta = {"state": meta_state, "param_groups": _json_value(state_dict["param_groups"])}
    if "type" in state_dict:
        meta["type"] = state_dict["type"]
    return arrays, meta


def join_state_dict(arrays, meta, prefix=""):
    """Inverse of ``split_state_dict``: ``arrays`` may be a loaded ``.npz`` holding other keys too."""
    state = {int(index): dict(scalars) for index, scalars in meta["state"].items()}
    head = f"{prefix}state."
    for key in arrays.keys():
        if not key.startswith(head):
            continue
        index, field = key[len(head):].split(".", 1)
        state.setdefault(int(index), {})[field] = np.array(arrays[key], copy=True)
    groups = [dict(group) for group in meta["param_groups"]]
    joined = {"state": dict(sorted(state.items())), "param_groups": groups}
    if "type" in meta:
        joined = {"type": meta["type"], **joined}
    return joined
