"""What the GSC study measures while an MLP trains (Philipp et al. 2018, Figure 3 B-E), as Trainer callbacks.

``GSCMonitor`` measures on fixed batches of training images, before training (epoch 0) and after epochs:

- GSC(l, 0) for every l, every epoch (``minigrad.measure.gsc.measure_batch`` with the log-probability
  error): ``gsc.csv`` (epoch, gsc_L, gsc_1, gsc_l0 ... gsc_lL); ``gsc_L`` joins metrics.csv;
- at the epochs ``depth_epochs`` picks (0, every ``depth_every``-th and the last), when the initial
  layers are given: the split of the gradient by residual-path order and the effective depth at each
  epsilon (``minigrad.measure.effective_depth``: the exact definition), and the operator norm of each
  layer's weight change W - W^0, absolute and relative to ||W^0||_2: ``effective_depth.json`` and
  ``weight_change.json``; ``effective_depth`` (the first epsilon's) joins metrics.csv on those epochs.

``TrainingErrorPlateau`` is the paper's learning-rate rule as a callback: a ``ReduceLROnPlateau`` stepped
with the epoch's training error (the Trainer hands its own scheduler the validation loss).
"""
import json
import math
from pathlib import Path

import numpy as np

from ..runs import write_json_atomic, write_text_atomic
from ..train import Callback
from . import effective_depth as ED
from . import gsc as G

__all__ = ["GSCMonitor", "TrainingErrorPlateau", "depth_epochs", "fixed_batch", "read_results"]


def depth_epochs(epochs, every):
    """The epochs at which the effective depth and weight change are measured: 0, every ``every``-th, the last."""
    return sorted({0, epochs} | set(range(every, epochs + 1, every)))


def fixed_batch(splits, n, seed):
    """``n`` training images (stratified, ``default_rng(seed)``), normalised and flattened, and their labels."""
    from ..data import normalize, stratified_subset
    keep = stratified_subset(splits.train_labels, min(n, len(splits.train_labels)), seed=seed)
    return (normalize(splits.train_images[keep], splits.mean, splits.std).reshape(len(keep), -1),
            splits.train_labels[keep])


def read_results(folder):
    """What a row's monitor wrote: ``{"gsc": gsc.csv rows, "depth": effective_depth.json, "change":
    weight_change.json}`` (an empty list / None for a file not there), and the table's figures from them:
    ``gsc_init``, ``gsc_final`` (GSC(L, 0) at the first and last epoch), ``depth_final`` and
    ``depth_final_fine`` (the effective depth at the first and last epsilon at the last measured epoch) and
    ``change_max`` (the largest ||W - W^0||_2 / ||W^0||_2 over layers then)."""
    import csv
    folder = Path(folder)
    out = {"gsc": [], "depth": None, "change": None}
    if (folder / "gsc.csv").exists():
        with open(folder / "gsc.csv", newline="", encoding="utf-8") as f:
            out["gsc"] = [{k: int(v) if k == "epoch" else float(v) if v else None for k, v in r.items()}
                          for r in csv.DictReader(f)]
    for key, name in (("depth", "effective_depth.json"), ("change", "weight_change.json")):
        if (folder / name).exists():
            out[key] = json.loads((folder / name).read_text(encoding="utf-8"))
    out["gsc_init"] = out["gsc"][0]["gsc_L"] if out["gsc"] else None
    out["gsc_final"] = out["gsc"][-1]["gsc_L"] if out["gsc"] else None
    if out["depth"] and out["change"]:
        last, eps = out["depth"]["epochs"][-1]["effective_depth"], [repr(e) for e in out["depth"]["epsilons"]]
        out["depth_final"], out["depth_final_fine"] = last[eps[0]], last[eps[-1]]
        out["change_max"] = max((r for r in out["change"]["epochs"][-1]["relative"] if r is not None), default=None)
    return out


def _csv(rows):
    fields = list(rows[0])
    lines = [",".join(fields)] + [",".join("" if r[k] is None else repr(r[k]) for k in fields) for r in rows]
    return "\n".join(lines) + "\n"


class GSCMonitor(Callback):
    """Trainer callback: GSC(l, 0), effective depth and weight change of ``model.hidden_layers + [model.out]``.

    ``folder``: where gsc.csv, effective_depth.json and weight_change.json go; ``inputs``, ``targets``: the
    fixed batch of the GSC; ``initial_layers``: copies of the layers at initialisation (None: GSC only);
    ``depth_inputs``, ``depth_targets``: the batch of the path decomposition (default the GSC's);
    ``depth_every``: measure the depth and weight change every that many epochs (and at 0 and the last);
    ``epsilons``: the thresholds of the effective depth. The measurements leave the model and its
    gradients as they were and draw no randomness.
    """

    state_key = "gsc"

    def __init__(self, folder, inputs, targets, initial_layers=None, depth_inputs=None, depth_targets=None,
                 depth_every=1, epsilons=(0.1, 0.01)):
        self.folder, self.inputs, self.targets = Path(folder), inputs, targets
        self.initial_layers = initial_layers
        self.depth_inputs = inputs if depth_inputs is None else depth_inputs
        self.depth_targets = targets if depth_targets is None else depth_targets
        self.depth_every, self.epsilons = int(depth_every), tuple(float(e) for e in epsilons)
        self.rows, self.depth, self.change = [], [], []

    @staticmethod
    def layers(model):
        return model.hidden_layers + [model.out]

    def measure(self, model, epoch, epochs):
        layers = self.layers(model)
        with np.errstate(all="ignore"):  # a diverging net gives inf/nan: recorded as they are
            stats = G.measure_batch(layers, self.inputs, self.targets, error=G.log_probability_error)
        model.zero_grad()  # the measurement's backward must not leak into a training step
        self.rows = [r for r in self.rows if r["epoch"] < epoch]
        self.rows.append({"epoch": epoch, "gsc_L": float(stats.gsc[-1]), "gsc_1": float(stats.gsc[1]),
                          **{f"gsc_l{l}": float(v) for l, v in enumerate(stats.gsc)}})
        values = {"gsc_L": self.rows[-1]["gsc_L"]}
        if self.initial_layers is not None:  # the column is in every row, empty between measurements
            values["effective_depth"] = (self.measure_depth(layers, epoch)
                                         if epoch in depth_epochs(epochs, self.depth_every) else None)
        self.save()
        return values

    def measure_depth(self, layers, epoch):
        """Path decomposition and weight change at ``epoch``; returns the first epsilon's effective depth."""
        with np.errstate(all="ignore"):
            paths = ED.path_decomposition(layers, self.initial_layers, self.depth_inputs, self.depth_targets)
        depths = {repr(e): paths.effective_depth(e) for e in self.epsilons}
        self.depth = [d for d in self.depth if d["epoch"] < epoch] + [{
            "epoch": epoch, "effective_depth": depths, "share": paths.share.tolist(), "tail": paths.tail.tolist(),
            "gradient_norm": paths.gradient_norm, "residual": paths.residual}]
        norms = ED.weight_change(layers, self.initial_layers)
        self.change = [c for c in self.change if c["epoch"] < epoch] + [{
            "epoch": epoch, "norm": [n for n, _ in norms], "relative": [n / n0 for n, n0 in norms]}]
        return depths[repr(self.epsilons[0])]

    def save(self):
        write_text_atomic(self.folder / "gsc.csv", _csv(self.rows))
        if self.depth:
            L = len(self.depth[0]["share"])
            write_json_atomic(self.folder / "effective_depth.json", _finite({
                "definition": "minigrad.measure.effective_depth: lambda = residual Jacobians on a path; effective "
                              "depth(eps) = smallest lambda with tail[lambda] < eps",
                "layers": L, "epsilons": list(self.epsilons), "epochs": self.depth}))
            write_json_atomic(self.folder / "weight_change.json", _finite({
                "definition": "||W_l - W_l^0||_2 (largest singular value) and its ratio to ||W_l^0||_2; "
                              "l = 1 is the output layer, counted from the error layer as the GSC's",
                "layers": list(range(1, len(self.change[0]["norm"]) + 1)), "epochs": [
                    {**c, "norm": c["norm"][::-1], "relative": c["relative"][::-1]} for c in self.change]}))

    def on_fit_start(self, trainer, start_epoch):
        if start_epoch == 1:
            self.rows, self.depth, self.change = [], [], []
            self.measure(trainer.model, 0, trainer.epochs)
        elif self.rows:
            self.save()  # the files as the checkpoint had them

    def on_epoch_end(self, trainer, epoch, metrics):
        values = self.measure(trainer.model, epoch, trainer.epochs)
        return {k: (v if v is not None and math.isfinite(v) else None) for k, v in values.items()}

    def state_dict(self):
        return {"rows": self.rows, "depth": _finite(self.depth), "change": _finite(self.change)}

    def load_state_dict(self, state):
        self.rows, self.depth, self.change = state["rows"], state.get("depth", []), state.get("change", [])


def _finite(tree):
    """``tree`` with non-finite floats as None (JSON has no NaN or infinity)."""
    if isinstance(tree, dict):
        return {k: _finite(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return [_finite(v) for v in tree]
    if isinstance(tree, float) and not math.isfinite(tree):
        return None
    return tree


class TrainingErrorPlateau(Callback):
    """The paper's decay rule: lr x ``factor`` when the training error has not fallen for ``patience`` + 1
    epochs (``ReduceLROnPlateau(optimizer, factor, patience)`` stepped with 1 - train_acc at each epoch's
    end; its state is kept in the checkpoint with the callback's)."""

    state_key = "lr_on_training_error"

    def __init__(self, scheduler):
        self.scheduler = scheduler

    def on_epoch_end(self, trainer, epoch, metrics):
        self.scheduler.step(1.0 - metrics["train_acc"])

    def state_dict(self):
        return self.scheduler.state_dict()

    def load_state_dict(self, state):
        self.scheduler.load_state_dict(state)
