"""Learning-rate schedulers, as ``torch.optim.lr_scheduler``: they write ``group["lr"]`` of an optimiser.

Usage as in PyTorch: ``optimizer.step()`` then ``scheduler.step()`` (per epoch or per batch; the
schedule counts ``step()`` calls). ``ReduceLROnPlateau.step(metric)`` takes the monitored value.
``state_dict()`` holds only JSON types (ints, floats, lists, strings, None), so it goes into a
checkpoint's JSON file as it is.
"""
import math
import numbers

from .optimizer import Optimizer

__all__ = ["LRScheduler", "CosineAnnealingLR", "StepLR", "MultiStepLR", "ReduceLROnPlateau"]


class LRScheduler:
    """Base class. The constructor performs the first ``step()``: ``last_epoch`` becomes 0, lr = base lr.

    ``base_lrs`` are the groups' ``initial_lr`` (set from ``lr`` when ``last_epoch == -1``; a resumed
    scheduler, ``last_epoch >= 0``, requires them). Subclasses write ``get_lr()``: the lr of each group
    for the new ``last_epoch``, usually from the current ``group["lr"]`` (PyTorch's chainable form).
    """

    def __init__(self, optimizer, last_epoch=-1):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"{type(self).__name__}: expected an Optimizer, got {type(optimizer).__name__}")
        self.optimizer = optimizer
        if last_epoch == -1:
            for group in optimizer.param_groups:
                group.setdefault("initial_lr", group["lr"])
        else:
            for i, group in enumerate(optimizer.param_groups):
                if "initial_lr" not in group:
                    raise KeyError(f"{type(self).__name__}: last_epoch={last_epoch} resumes a schedule, but "
                                   f"param_groups[{i}] has no 'initial_lr'")
        self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
        self.last_epoch = last_epoch
        self._step_count = 0
        self._is_initial = True  # the constructor's step keeps each group's current lr
        self.step()
        self._is_initial = False

    def get_lr(self):
        raise NotImplementedError(f"{type(self).__name__} does not implement get_lr()")

    def step(self):
        """Advance the schedule by one and write the new lr into every parameter group."""
        self._step_count += 1
        self.last_epoch += 1
        for group, lr in zip(self.optimizer.param_groups, self.get_lr()):
            group["lr"] = lr
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def get_last_lr(self):
        """The lr of each parameter group after the last ``step()``."""
        return list(self._last_lr)

    def state_dict(self):
        """Every attribute but the optimiser, as JSON types."""
        return {key: _json_copy(value) for key, value in vars(self).items()
                if key not in ("optimizer", "_is_initial")}

    def load_state_dict(self, state_dict):
        """Restore attributes saved by ``state_dict``; the keys must be exactly this scheduler's."""
        own = self.state_dict()
        missing = sorted(set(own) - set(state_dict))
        unexpected = sorted(set(state_dict) - set(own))
        if missing or unexpected:
            raise KeyError(f"{type(self).__name__}.load_state_dict: missing keys {missing}, "
                           f"unexpected keys {unexpected}")
        for key, value in state_dict.items():
            setattr(self, key, _json_copy(value))


def _json_copy(value):
    if isinstance(value, (list, tuple)):
        return [_json_copy(v) for v in value]
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    return value


def _check_positive_int(owner, name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{type(owner).__name__}: {name} must be a positive integer, got {value!r}")


class CosineAnnealingLR(LRScheduler):
    r"""Cosine annealing from the initial lr down to ``eta_min`` over ``T_max`` steps.

    eta_t = eta_min + (eta_max - eta_min) * (1 + cos(pi * t / T_max)) / 2,   t = last_epoch

    Computed as PyTorch does, recursively from the current lr (ratio of consecutive cosine terms, plus
    an additive restart at t = (2k+1) T_max + 1 where that ratio is 0/0), so past T_max the lr rises
    again and keeps oscillating with period 2 T_max (no warm restarts). Also like PyTorch, an lr changed
    by hand between steps is carried along rather than overwritten.
    """

    def __init__(self, optimizer, T_max, eta_min=0, last_epoch=-1):
        _check_positive_int(self, "T_max", T_max)
        self.T_max = int(T_max)
        self.eta_min = eta_min
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        groups, t, T = self.optimizer.param_groups, self.last_epoch, self.T_max
        if self._is_initial:
            return [group["lr"] for group in groups]
        if (t - 1 - T) % (2 * T) == 0:
            # The previous lr sat at eta_min, where the ratio below is undefined: add the first step up.
            return [group["lr"] + (base_lr - self.eta_min) * (1 - math.cos(math.pi / T)) / 2
                    for base_lr, group in zip(self.base_lrs, groups)]
        ratio = (1 + math.cos(math.pi * t / T)) / (1 + math.cos(math.pi * (t - 1) / T))
        return [self.eta_min + ratio * (group["lr"] - self.eta_min) for group in groups]


class StepLR(LRScheduler):
    """Multiply the lr by ``gamma`` every ``step_size`` steps: lr_t = lr_0 * gamma ** (t // step_size)."""

    def __init__(self, optimizer, step_size, gamma=0.1, last_epoch=-1):
        _check_positive_int(self, "step_size", step_size)
        self.step_size = int(step_size)
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        groups = self.optimizer.param_groups
        if self.last_epoch == 0 or self.last_epoch % self.step_size != 0:
            return [group["lr"] for group in groups]
        return [group["lr"] * self.gamma for group in groups]


class MultiStepLR(LRScheduler):
    """Multiply the lr by ``gamma`` when the step count reaches each milestone (a repeated milestone
    multiplies once per repetition): lr_t = lr_0 * gamma ** (number of milestones <= t)."""

    def __init__(self, optimizer, milestones, gamma=0.1, last_epoch=-1):
        milestones = list(milestones)
        for milestone in milestones:
            if isinstance(milestone, bool) or not isinstance(milestone, numbers.Integral):
                raise ValueError(f"MultiStepLR: milestones must be integers, got {milestones!r}")
        self.milestones = sorted(int(m) for m in milestones)
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        groups = self.optimizer.param_groups
        hits = self.milestones.count(self.last_epoch)
        if hits == 0:
            return [group["lr"] for group in groups]
        return [group["lr"] * self.gamma ** hits for group in groups]


class ReduceLROnPlateau(LRScheduler):
    """Divide the lr by 1/``factor`` when a monitored metric stops improving, as PyTorch.

    ``step(metric)``: the metric is an improvement if it beats ``best`` by the threshold
    (mode "min", rel: metric < best * (1 - threshold); abs: metric < best - threshold; mode "max"
    mirrored). Otherwise ``num_bad_epochs`` grows; once it exceeds ``patience`` every group's lr becomes
    max(lr * factor, min_lr) (skipped if that changes it by less than ``eps``), the counter resets, and
    the next ``cooldown`` steps count no bad epochs.
    """

    def __init__(self, optimizer, mode="min", factor=0.1, patience=10, threshold=1e-4,
                 threshold_mode="rel", cooldown=0, min_lr=0, eps=1e-8):
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"ReduceLROnPlateau: expected an Optimizer, got {type(optimizer).__name__}")
        if mode not in ("min", "max"):
            raise ValueError(f"ReduceLROnPlateau: mode must be 'min' or 'max', got {mode!r}")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"ReduceLROnPlateau: threshold_mode must be 'rel' or 'abs', got {threshold_mode!r}")
        if not factor < 1.0:
            raise ValueError(f"ReduceLROnPlateau: factor must be < 1.0, got {factor!r}")
        n_groups = len(optimizer.param_groups)
        if isinstance(min_lr, (list, tuple)):
            if len(min_lr) != n_groups:
                raise ValueError(f"ReduceLROnPlateau: expected {n_groups} min_lrs, got {len(min_lr)}")
            min_lrs = list(min_lr)
        else:
            min_lrs = [min_lr] * n_groups
        self.optimizer = optimizer
        self.mode, self.factor, self.patience = mode, factor, patience
        self.threshold, self.threshold_mode = threshold, threshold_mode
        self.cooldown, self.min_lrs, self.eps = cooldown, min_lrs, eps
        self.last_epoch = 0
        self._last_lr = [group["lr"] for group in optimizer.param_groups]
        self.best = math.inf if mode == "min" else -math.inf  # the worst value: any finite metric beats it
        self.num_bad_epochs = 0
        self.cooldown_counter = 0

    def is_better(self, metric, best):
        if self.mode == "min":
            return metric < (best * (1 - self.threshold) if self.threshold_mode == "rel" else best - self.threshold)
        return metric > (best * (1 + self.threshold) if self.threshold_mode == "rel" else best + self.threshold)

    def step(self, metrics):
        """Record this step's value of the monitored metric and reduce the lr if it has plateaued."""
        current = float(metrics)
        self.last_epoch += 1
        if self.is_better(current, self.best):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0  # bad epochs during cooldown do not count
        if self.num_bad_epochs > self.patience:
            self._reduce_lr()
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    def _reduce_lr(self):
        for group, min_lr in zip(self.optimizer.param_groups, self.min_lrs):
            old_lr = float(group["lr"])
            new_lr = max(old_lr * self.factor, min_lr)
            if old_lr - new_lr > self.eps:
                group["lr"] = new_lr

    @property
    def in_cooldown(self):
        return self.cooldown_counter > 0

    def state_dict(self):
        """As the base class; ``best`` is written as a string ("inf", "-inf", "nan") when not finite,
        since JSON has no infinity."""
        state = super().state_dict()
        if not math.isfinite(state["best"]):
            state["best"] = repr(state["best"])
        return state

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        self.best = float(self.best)
