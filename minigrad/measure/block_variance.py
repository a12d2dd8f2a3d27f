r"""Gradient variance per residual block (the BN-in-residual-networks paper, sections 4-5 and Appendix F-G).

The statistic. One batch of N images goes forward in training mode (BN with batch statistics, as in
training) and the mean cross-entropy backward. For a residual block with output y of shape (N, C, H, W),
let g = d loss / d y and g_{n,f} its value for image n at feature f = (c, h, w), F = C*H*W features::

    batch_var(block) = (1/F) sum_f Var_n(g_{n,f}),   Var_n(g_f) = (1/N) sum_n (g_{n,f} - mean_n g_{n,f})^2
    l2(block)        = ||g||_2 = sqrt(sum_{n,f} g_{n,f}^2)

(the population variance over the batch, averaged over features: the paper's "mean of the gradient
variance, calculated for each feature across one batch"). Of the block output y itself, ``sign_diversity``
= mean over features of min(#positive, #negative) / #nonzero over the batch: 0 when every feature keeps
one sign over the batch (e.g. all negative: the next block's ReLU then passes nothing, and no gradient).
Appendix F: for each BN layer, ``mean_c |beta_c / gamma_c|`` over its channels. All in float64.

``BlockProbe`` is a Trainer callback that measures these on one fixed batch at chosen epochs (epoch 0 =
the initialisation) and, optionally, every ``step_every`` optimiser steps of the first epochs (the paper's
Figure 12, Model-3 "at epoch 1"). The probe leaves no trace: parameter gradients, BN running statistics,
train/eval mode and the blocks' recording flags are put back, so a run with the probe has the numbers of
one without it. ``verdict`` reads a run's probes and summary into one word: diverges / explodes / stops
learning / learns slowly / learns.
"""
import json
import math
from pathlib import Path

import numpy as np

from .. import nn
from ..runs import json_safe, write_json_atomic
from ..train import Callback

__all__ = ["grad_output_batch_var", "bn_beta_over_gamma", "probe_blocks", "BlockProbe", "load_block_stats",
           "variance_range", "format_range", "input_block_change", "output_sign_diversity", "first_epoch_growth",
           "verdict", "EXPLOSION", "LEARNING_MARGIN", "VANISHED"]

BLOCK_STATS = "block_stats.json"
EXPLOSION = 1e3        # a block's variance this many times the largest at init, during the probed steps: explodes
LEARNING_MARGIN = 0.05  # final training accuracy within this of chance: not learning (yet)
VANISHED = 1e2         # the input-side block's variance this many times below init: the gradient has gone


def grad_output_batch_var(grad_output):
    """Mean over features of the variance over the batch (axis 0) of ``grad_output``, in float64."""
    g = np.asarray(grad_output, dtype=np.float64)
    return float(g.reshape(g.shape[0], -1).var(axis=0).mean())


def bn_beta_over_gamma(model):
    """``{BN layer name: mean over channels of |beta / gamma|}`` (the paper's Appendix F); inf if a gamma is 0."""
    out = {}
    for name, bn in model.batch_norms():
        gamma, beta = bn.weight.data.astype(np.float64), bn.bias.data.astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            out[name] = float(np.mean(np.abs(beta / gamma)))
    return out


def probe_blocks(model, criterion, x, y):
    """Per-block gradient statistics of one batch, leaving the model as it was.

    Forward ``x`` in training mode, backward the mean cross-entropy, and read each residual block's
    ``"<block>:grad_output"`` statistics (``batch_var``, ``l2``, ``mean_abs``) and the ``sign_diversity`` and
    ``mean`` of its output (``"<block>:activations"``). Parameter gradients, BN
    running statistics, the train/eval mode and the blocks' recording flags are restored afterwards.
    Returns ``{"loss", "blocks": {name: {batch_var, l2, mean_abs}}, "bn": {name: mean |beta/gamma|}}``.
    """
    was_training = model.training
    grads = [p.grad.copy() for p in model.parameters()]
    buffers = {name: np.array(value, copy=True) for name, value in model.named_buffers()}
    flags = [(block, block.record_grad_output, block.record_activations) for _, block in model.blocks()]
    try:
        model.train()
        model.set_record_grad_output(True)
        for _, block in model.blocks():
            block.record_activations = True
        with np.errstate(over="ignore", invalid="ignore"):  # a diverging model may overflow: recorded as such
            loss = criterion(model(x), y)
            model.backward(criterion.backward())
        stats = model.grad_stats
        blocks = {name: {**{key: stats[f"{name}:grad_output"][key] for key in ("batch_var", "l2", "mean_abs")},
                         **{key: stats[f"{name}:activations"][key] for key in ("sign_diversity", "mean")}}
                  for name, _ in model.blocks()}
    finally:
        for p, g in zip(model.parameters(), grads):
            p.grad[...] = g
        model.load_state_dict({**model.state_dict(), **buffers})
        for block, grad_flag, activation_flag in flags:
            block.record_grad_output, block.record_activations = grad_flag, activation_flag
        model.train(was_training)
    return {"loss": loss, "blocks": blocks, "bn": bn_beta_over_gamma(model)}


class BlockProbe(Callback):
    """Trainer callback: ``probe_blocks`` on a fixed batch ``(x, y)``, kept in ``path`` and in the checkpoint.

    At the start of a fresh run (epoch 0, label "init") if 0 is in ``epochs``, and at the end of each epoch
    in ``epochs`` (label "epoch E", or "end" for the last): a point in ``record["points"]``. With
    ``step_every=k``: also after optimiser steps 1, k, 2k, ... of each epoch in ``step_epochs``, a point in
    ``record["steps"]`` with ``step``, ``batch`` and that batch's training ``train_loss``. Each point holds
    ``epoch``, ``step`` (optimiser steps so far) and the ``probe_blocks`` result.
    """

    state_key = "block_probe"

    def __init__(self, path, x, y, description, epochs, step_every=None, step_epochs=(1,)):
        self.path, self.x, self.y, self.epochs = Path(path), x, y, set(epochs)
        self.step_every, self.step_epochs = step_every, set(step_epochs)
        self.record = {"probe": description, "points": []}

    def on_fit_start(self, trainer, start_epoch):
        if start_epoch == 1:  # a fresh run: the model is at its initialisation
            self.record["points"] = []
            if self.step_every:
                self.record["steps"] = []
            if 0 in self.epochs:
                self.probe(trainer.model, "points", epoch=0, step=0, label="init")
        else:
            write_json_atomic(self.path, json_safe(self.record))  # the file as the checkpoint had it

    def on_batch_end(self, trainer, epoch, batch, logs):
        if self.step_every and epoch in self.step_epochs and (batch == 1 or batch % self.step_every == 0):
            self.probe(trainer.model, "steps", epoch=epoch, step=logs["step"], batch=batch, train_loss=logs["loss"])

    def on_epoch_end(self, trainer, epoch, metrics):
        if epoch in self.epochs:
            self.probe(trainer.model, "points", epoch=epoch, step=epoch * len(trainer.train_loader),
                       label="end" if epoch == trainer.epochs else f"epoch {epoch}")

    def probe(self, model, kind, **where):
        point = json_safe({**where, **probe_blocks(model, nn.CrossEntropyLoss(), self.x, self.y)})
        self.record[kind] = [p for p in self.record[kind] if p.get("step") != point["step"]] + [point]
        write_json_atomic(self.path, self.record)
        return point

    def state_dict(self):
        return self.record

    def load_state_dict(self, state):
        self.record = state


def load_block_stats(path):
    """block_stats.json (a row folder or the file) as a dict; ``{"points": []}`` if a folder has none."""
    path = Path(path)
    path = path / BLOCK_STATS if path.is_dir() else path
    if not path.exists():
        return {"points": []}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _variances(point):
    """The blocks' batch variances of one point, None (non-finite, saved as null) as inf."""
    return [math.inf if b["batch_var"] is None else b["batch_var"] for b in point["blocks"].values()]


def variance_range(point):
    """(min, max) over the blocks of one point's batch variance; max is inf if any is non-finite."""
    values = _variances(point)
    return min(values), max(values)


def format_range(point):
    """A table cell: ``"1.2e-05 .. 3.4e-03 (x283)"`` (min .. max over the blocks), or ``"non-finite"``."""
    lo, hi = variance_range(point)
    if not math.isfinite(hi):
        return "non-finite"
    return f"{lo:.1e} .. {hi:.1e} (x{hi / lo:,.0f})" if lo > 0 else f"{lo:.1e} .. {hi:.1e}"


def input_block_change(points):
    """Last probe / init of the input-side block's variance (how far the first block's gradient moved)."""
    if len(points) < 2 or points[0]["label"] != "init":
        return None
    first = next(iter(points[0]["blocks"]))
    before, after = points[0]["blocks"][first]["batch_var"], points[-1]["blocks"][first]["batch_var"]
    return after / before if before and after is not None else None


def output_sign_diversity(points):
    """(at init, at the last probe) sign diversity of the output-side block, or None if not recorded."""
    signs = [p["blocks"][list(p["blocks"])[-1]].get("sign_diversity") for p in points[:1] + points[-1:]]
    return tuple(signs) if len(signs) == 2 and None not in signs and points[0]["epoch"] == 0 else None


def first_epoch_growth(record):
    """Largest block variance over the step probes / largest at init (inf if any is non-finite), or None."""
    points, steps = record.get("points", []), record.get("steps", [])
    if not steps or not points or points[0]["epoch"] != 0:
        return None
    return max(max(_variances(p)) for p in steps) / max(_variances(points[0]))


def verdict(status, record, train_acc, chance, divergence=None):
    """One word for a run and the reason: ``(word, why)``, the first that applies of

    diverges        the loss became NaN/Inf (``status == "diverged"``; ``divergence``: the summary's where);
    explodes        finite loss, but during the probed steps some block's gradient variance rose to
                    ``EXPLOSION`` times the largest at init, or became non-finite;
    stops learning  the final training accuracy ``train_acc`` is within ``LEARNING_MARGIN`` of ``chance`` and
                    the gradient has gone: the input-side block's variance fell ``VANISHED`` times or more
                    from init, or the output-side block's sign diversity fell below a quarter of its init value;
    learns slowly   near chance as well, but with the gradient still there (too few steps to tell);
    learns          the rest.
    """
    growth = first_epoch_growth(record)
    grew = "" if growth is None else f"; first-epoch peak block variance x{growth:.1e} of init"
    if status == "diverged":
        where = divergence or {}
        return "diverges", f"non-finite loss at epoch {where.get('epoch')}, batch {where.get('batch')}{grew}"
    if growth is not None and growth >= EXPLOSION:
        return "explodes", f"finite loss{grew}"
    points = record.get("points", [])
    change, signs = input_block_change(points), output_sign_diversity(points)
    why = "" if change is None else f"; input-side block variance x{change:.1e} of init at the end"
    if signs:
        why += f"; output-side block's sign diversity {signs[0]:.3f} at init, {signs[1]:.3f} at the end"
    acc = "-" if train_acc is None else f"{100 * train_acc:.1f}%"
    if train_acc is not None and train_acc >= chance + LEARNING_MARGIN:
        return "learns", f"train accuracy {acc}{grew}{why}"
    gone = (change is not None and change <= 1 / VANISHED) or (signs is not None and signs[1] < signs[0] / 4)
    return ("stops learning" if gone or train_acc is None else "learns slowly",
            f"train accuracy {acc} (chance {100 * chance:.0f}%){grew}{why}")
