"""``StepCurve``: a learning curve measured every few optimiser steps instead of once per epoch.

Papers plot error against iterations (He et al.'s Figures 1 and 6, Wu & He's curves). Each point of the
curve, at optimiser step t (t = 0 before the first step, then every ``every`` steps and after the last):

    train_loss, train_err = mean loss and error rate of the training batches since the previous point
                            (train mode, the batches as trained on: the paper's dashed lines)
    <split>_loss, <split>_acc, <split>_err = loss, accuracy and error rate on ``loader`` in eval mode

where ``split`` names the evaluation set (``"val"`` or ``"test"``). The points go to a CSV file
(columns ``StepCurve.fields(split)``) at every epoch end and into the checkpoint, so a resumed run ends
with the curve of an uninterrupted one. The callback draws no training randomness and changes nothing the
training reads (eval mode, forward passes only, the mode put back): a run's numbers are the same with and
without it. It adds the column ``steps`` (optimiser steps so far) to metrics.csv.
"""
from pathlib import Path

import numpy as np

from ..runs import json_safe, read_csv, write_csv
from ..train import Callback, evaluate

__all__ = ["StepCurve"]


class StepCurve(Callback):
    """Trainer callback: the learning curve of the module docstring, on ``loader``, written to ``path``."""

    def __init__(self, path, loader, every, split="val"):
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"StepCurve: every must be a positive int, got {every!r}")
        if split not in ("val", "test"):
            raise ValueError(f"StepCurve: split must be 'val' or 'test', got {split!r}")
        self.path, self.loader, self.every, self.split = Path(path), loader, every, split
        self.state_key = f"{split}_curve"
        self._reset()

    @staticmethod
    def fields(split):
        return ("step", "images", "epoch", "train_loss", "train_err", f"{split}_loss", f"{split}_acc", f"{split}_err")

    @staticmethod
    def read(path):
        """The points of a curve file (numbers; an empty cell as None); [] when there is none yet."""
        return read_csv(path) if Path(path).exists() else []

    def _reset(self):
        self.points, self.step, self.images = [], 0, 0
        self.window = [0.0, 0, 0]  # since the previous point: loss sum, wrong predictions, images

    def on_fit_start(self, trainer, start_epoch):
        if start_epoch == 1:
            self._reset()
            self.measure(trainer, epoch=0)
        self.write()  # on resume: the curve as the checkpoint had it

    def on_batch_end(self, trainer, epoch, batch, logs):
        n = logs["batch_size"]
        self.step, self.images = logs["step"], self.images + n
        loss_sum, wrong, images = self.window
        self.window = [loss_sum + logs["loss"] * n, wrong + n - logs["correct"], images + n]
        last = epoch == trainer.epochs and batch == len(trainer.train_loader)
        if self.step % self.every == 0 or last:
            self.measure(trainer, epoch)

    def on_epoch_end(self, trainer, epoch, metrics):
        self.write()
        return {"steps": self.step}

    def measure(self, trainer, epoch):
        """Append the point at the current step and start a new training window."""
        model = trainer.model
        was_training = model.training
        loss, acc, _ = evaluate(model, trainer.criterion, self.loader, np.random.default_rng(0))
        model.train(was_training)
        loss_sum, wrong, n = self.window
        s = self.split
        self.points.append({"step": self.step, "images": self.images, "epoch": epoch,
                            "train_loss": loss_sum / n if n else None, "train_err": wrong / n if n else None,
                            f"{s}_loss": loss, f"{s}_acc": acc, f"{s}_err": 1 - acc})
        self.window = [0.0, 0, 0]

    def write(self):
        write_csv(self.path, self.fields(self.split), self.points)

    def state_dict(self):
        return json_safe({"points": self.points, "step": self.step, "images": self.images, "window": self.window})

    def load_state_dict(self, state):
        self.points = [dict(point) for point in state["points"]]
        self.step, self.images, self.window = state["step"], state["images"], list(state["window"])
