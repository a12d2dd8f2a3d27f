"""Normalisation in a small CNN: BN against none, BN at small batches, Group/Layer/Instance norm, BN at inference.

    python -m experiments.normalization                   # quick preset: CIFAR-10 subset, 5 rows, minutes
    python -m experiments.normalization --preset full     # every norm x batch 32, 16, 8, 4, 2, whole split
    python -m experiments.normalization --norm batch group --batch-sizes 32 8 2   # these rows (a product)
    python -m experiments.normalization --list | --print-commands | --collect DIR [DIR ...]

The claims (the lecture, ``../shared/papers/lecture-training-issues-init-bn-resnet.txt``, and Wu & He,
"Group Normalization", ECCV 2018, Figure 1 / Table 2, which the lecture's small-batch slide shows):
(a) "Effect of BN: helps train faster and achieve higher accuracy" (testing accuracy against training
iterations); (b) "BN not work well when batch size is small (e.g., 4)", with Group/Layer/Instance norm as
the extension: in Wu & He, BN's error rises as the batch shrinks while GN's stays flat; (c) "during
inference, how to get mean E(x_k) and Var(x_k)?".

The network (``minigrad.models.small_cnn.SmallCNN``): conv 3x3 32 -> norm -> ReLU -> maxpool, conv 3x3 64
-> norm -> ReLU -> maxpool, conv 3x3 128 -> norm -> ReLU, global average pool, linear (94,538 parameters
without a norm layer). Norms: ``none``, ``batch`` (BatchNorm2d), ``group`` (GroupNorm, 8 groups:
``--groups``), ``layer`` (GroupNorm with one group: Wu & He's LN, statistics over C, H, W), ``instance``
(InstanceNorm2d with affine); each with a per-channel gamma and beta. Rows are (norm, batch size), one
folder ``OUT/<norm>-bs<batch>/``.

Training (our recipe: the lecture gives none, and Wu & He's is ResNet-50 on ImageNet): SGD momentum 0.9,
no weight decay, cosine annealing to 0 stepped every iteration, crop + flip, PyTorch's default init,
47,500 / 2,500 split (DECISIONS 6), seed 0. Batch sizes get the same number of training *images* (the
same epochs), so a batch of 4 takes 8x the steps of a batch of 32, as in Wu & He, who train every batch
size for the same epochs and scale the learning rate linearly with the batch size (Goyal et al.'s rule).
We do the same: lr = base_lr * B / 32, base_lr = 0.025 (0.1 at batch 128, the usual CIFAR ResNet
setting, scaled down; ``--base-lr``, ``--lr-scaling none`` keeps base_lr at every batch size).

What each row measures, besides the Trainer's metrics:
- a validation curve (``curve.csv``, the ``minigrad.callbacks.StepCurve`` callback): validation accuracy
  and loss on a fixed stratified validation subset, in eval mode, before the first step and every K
  optimiser steps, K = steps per epoch / points per epoch, so rows of one batch size are compared at equal
  iterations (and rows of different batch sizes at equal images);
- for BN rows, at each epoch end (the ``BatchStatisticsEval`` callback, columns of metrics.csv): the
  validation accuracy with each evaluation batch's *own* statistics (BN in training mode, its running
  buffers put back afterwards), in batches of the training batch size and in batches of 500; the usual
  ``val_acc`` uses the running averages (eval mode).

Budget. Quick: 5 rows (no norm, BN and GN at batch 32; BN and GN at batch 4, the lecture's "e.g., 4"),
3 epochs of a 10,000-image training subset, about 9 minutes on 2 cores. Full: 25 rows, 30 epochs of the
whole split, from about 50 minutes (batch 32) to about 2 hours (batch 2) per row on 2 cores, some 30
hours in all: a job array (``--launcher slurm``) is the way to run it.

Outputs: ``results.md`` / ``results.csv`` (one line per row: norm, batch_size, lr, steps, train_loss,
val_acc, test_acc, the batch-statistics accuracies, seconds, status) with the findings under the table;
``accuracy_vs_iterations.png`` (a), ``error_vs_batch_size.png`` (b, log2 axis from 32 down to 2 as Wu & He
draw it), ``running_vs_batch_stats.png`` (c); per row ``curve.csv`` and ``accuracy_vs_iterations.png``.
"""
import math
import sys
from pathlib import Path

import numpy as np

import minigrad
from minigrad import optim
from minigrad.callbacks import StepCurve
from minigrad.models.small_cnn import NORMS, SmallCNN
from minigrad.runs import load_config, load_metrics
from minigrad.train import Callback

from . import study
from .study import (Preset, Study, format_cell, new_figure, positive_float, positive_int, row_name,
                    training_record)

CURVE = "curve.csv"
EVAL_BATCH = 500            # batch of every evaluation that does not depend on it (eval mode)
REFERENCE_BATCH = 32        # the batch size at which lr = base_lr
# Wu & He 2018, Table 2: ResNet-50 on ImageNet, validation error (%) against images per batch (per GPU).
WU_HE_ERROR = {"batch": {32: 23.6, 16: 23.7, 8: 24.8, 4: 27.3, 2: 34.7},
               "group": {32: 24.1, 16: 24.2, 8: 24.0, 4: 24.2, 2: 24.1}}
NORM_LABELS = {"none": "no norm", "batch": "BatchNorm", "group": "GroupNorm", "layer": "LayerNorm",
               "instance": "InstanceNorm"}
NORM_COLOURS = {"none": "C7", "batch": "C0", "group": "C3", "layer": "C2", "instance": "C1"}


class Normalization(Study):
    name = "normalization"
    title = "Normalisation study"
    description = __doc__
    presets = {
        "quick": Preset(
            "no norm, BN and GN at batch 32, BN and GN at batch 4; 3 epochs of a 10,000-image CIFAR-10 "
            "training subset; the validation curve on 1,000 validation images",
            rows=(("none", 32), ("batch", 32), ("group", 32), ("batch", 4), ("group", 4)),
            epochs=3, train_subset=10000, curve_points_per_epoch=5, curve_val_subset=1000, test_subset=None),
        "full": Preset(
            "every norm (none, batch, group, layer, instance) x batch 32, 16, 8, 4, 2; 30 epochs of the "
            "47,500-image training split; the validation curve on all 2,500 validation images",
            rows=tuple((norm, batch) for norm in NORMS for batch in (32, 16, 8, 4, 2)),
            epochs=30, train_subset=None, curve_points_per_epoch=4, curve_val_subset=None, test_subset=None),
    }
    columns = [("norm", "Norm", None), ("batch_size", "Batch", None), ("lr", "LR", "g"),
               ("steps", "Steps", "int"), ("train_loss", "Train loss", None), ("train_acc", "Train acc %", "pct"),
               ("val_acc", "Val acc %", "pct"), ("val_err", "Val err %", "pct"), ("test_acc", "Test acc %", "pct"),
               ("val_acc_batch_stats", "Val acc %, batch stats (train batch)", "pct"),
               ("val_acc_batch_stats_large", f"Val acc %, batch stats (batch {EVAL_BATCH})", "pct"),
               ("seconds", "Time (s)", "s"), ("status", "Status", None)]
    row_figure_names = ("accuracy_vs_iterations.png",)
    row_figure_sources = (CURVE,)

    def add_arguments(self, parser):
        parser.add_argument("--norm", nargs="+", choices=NORMS, default=None,
                            help="normalisation layers to run (default: the preset's rows)")
        parser.add_argument("--batch-sizes", nargs="+", type=positive_int, default=None, metavar="B",
                            help="batch sizes to run; with --norm (or alone), rows are every norm x every batch "
                                 "size (default: the preset's rows)")
        parser.add_argument("--epochs", type=positive_int, default=None, help="epochs (default: the preset's)")
        parser.add_argument("--base-lr", type=positive_float, default=0.025,
                            help=f"learning rate at batch {REFERENCE_BATCH} (default 0.025)")
        parser.add_argument("--lr-scaling", choices=("linear", "none"), default="linear",
                            help=f"lr = base_lr * batch / {REFERENCE_BATCH} (linear, default, as Wu & He) or "
                                 "base_lr at every batch size (none)")
        parser.add_argument("--groups", type=positive_int, default=8, help="groups of GroupNorm (default 8)")
        parser.add_argument("--train-subset", type=positive_int, default=None,
                            help="train on a stratified subset of N training images (default: the preset's)")
        parser.add_argument("--full-train", action="store_true", help="use the whole training split (no subset)")
        parser.add_argument("--val-size", type=positive_int, default=2500,
                            help="validation images held out of the 50,000 (stratified, split seed 0; default 2500)")
        parser.add_argument("--test-subset", type=positive_int, default=None,
                            help="evaluate on a stratified subset of N test images (default: all 10,000)")

    def rows(self, args):
        preset = self.presets[args.preset]
        if args.norm or args.batch_sizes:
            norms = args.norm or list(dict.fromkeys(norm for norm, _ in preset.rows))
            batches = args.batch_sizes or sorted({batch for _, batch in preset.rows}, reverse=True)
            pairs = [(norm, batch) for norm in dict.fromkeys(norms) for batch in dict.fromkeys(batches)]
        else:
            pairs = list(preset.rows)
        return [(row_name(norm, suffix=f"-bs{batch}"), self.row_config(args, norm, batch)) for norm, batch in pairs]

    def row_flags(self, name, config):
        return ["--norm", config["norm"], "--batch-sizes", str(config["batch_size"])]

    def row_config(self, args, norm, batch):
        """Every setting of one row (written to its config.json; a re-run must match it)."""
        preset = self.presets[args.preset]
        lr = args.base_lr * batch / REFERENCE_BATCH if args.lr_scaling == "linear" else args.base_lr
        return {
            "study": self.name, "preset": args.preset, "model": f"SmallCNN-{norm}", "norm": norm,
            "batch_size": batch, "lr": lr, "base_lr": args.base_lr, "lr_scaling": args.lr_scaling,
            "reference_batch": REFERENCE_BATCH, "epochs": args.epochs or preset.epochs, "seed": args.seed,
            "dataset": "cifar10", "train_subset": None if args.full_train else (args.train_subset or preset.train_subset),
            "n_val": args.val_size, "split_seed": 0, "test_subset": args.test_subset or preset.test_subset,
            "normalization": "split", "optimizer": "SGD", "momentum": 0.9, "weight_decay": 0.0,
            "scheduler": "CosineAnnealingLR per iteration, T_max = all steps", "eta_min": 0.0,
            "augment": "crop32-pad4+hflip", "widths": [32, 64, 128], "groups": args.groups,
            "curve_points_per_epoch": preset.curve_points_per_epoch, "curve_val_subset": preset.curve_val_subset,
            "eval_batch": EVAL_BATCH, "minigrad_version": minigrad.__version__, "threads": args.threads,
        }

    def run_row(self, row):
        c = row.config
        splits = row.splits()
        minigrad.manual_seed(c["seed"])
        model = SmallCNN(c["norm"], num_classes=splits.num_classes, widths=c["widths"], groups=c["groups"])
        optimizer = optim.SGD(model.parameters(), lr=c["lr"], momentum=c["momentum"], weight_decay=c["weight_decay"])
        train, _, _ = row.loaders(c["batch_size"], test=False)
        _, val, test = row.loaders(EVAL_BATCH, test_subset=c["test_subset"])
        scheduler = optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=c["epochs"] * len(train),
                                                         eta_min=c["eta_min"])
        _, curve_val, _ = row.loaders(EVAL_BATCH, val_subset=c["curve_val_subset"], test=False)
        callbacks = [StepCurve(row.path / CURVE, curve_val, every=max(1, len(train) // c["curve_points_per_epoch"]))]
        if c["norm"] == "batch":
            _, val_at_batch, _ = row.loaders(c["batch_size"], test=False)
            callbacks.append(BatchStatisticsEval({"batch_stats": val_at_batch, "batch_stats_large": val}))
        trainer = row.trainer(model, optimizer, train, val, scheduler=scheduler, test_loader=test,
                              scheduler_interval="iteration", callbacks=callbacks)
        return row.fit(trainer)

    def record(self, folder):
        record = training_record(folder)
        config = load_config(folder)
        last = (load_metrics(folder) or [{}])[-1] if (folder / "metrics.csv").exists() else {}
        record.update({
            "norm": config.get("norm"), "batch_size": config.get("batch_size"),
            "steps": None if last.get("steps") is None else int(last["steps"]),
            "val_err": None if record["val_acc"] is None else 1.0 - record["val_acc"],
            "val_acc_batch_stats": last.get("val_acc_batch_stats"),
            "val_acc_batch_stats_large": last.get("val_acc_batch_stats_large"),
            "n_val": config.get("n_val"), "base_lr": config.get("base_lr"), "lr_scaling": config.get("lr_scaling")})
        return record

    def sort_folders(self, folders):
        def key(folder):
            config = load_config(folder)
            norm = config.get("norm")
            return (NORMS.index(norm) if norm in NORMS else 99, -(config.get("batch_size") or 0), folder.name)
        return sorted(folders, key=key)

    def table_title(self, records, preset):
        return f"Normalisation in a small CNN (CIFAR-10, preset {preset})"

    def findings(self, records, folders):
        return findings(records, {f.name: f for f in folders})

    def figures(self, records, folders, out_dir):
        out_dir = Path(out_dir)
        curves = {f.name: load_curve(f) for f in folders if (f / CURVE).exists()}
        written = []
        if any(curves.values()):
            written += draw_accuracy_vs_iterations(records, curves, out_dir / "accuracy_vs_iterations.png")
        if any(r["val_acc"] is not None and r["norm"] != "none" for r in records):
            written += draw_error_vs_batch_size(records, out_dir / "error_vs_batch_size.png")
        if any(r["val_acc_batch_stats"] is not None for r in records):
            written += draw_running_vs_batch_stats(records, out_dir / "running_vs_batch_stats.png")
        return written

    def draw_row_figures(self, folder):
        if not (folder / CURVE).exists():
            return []
        record = self.record(folder)
        return draw_accuracy_vs_iterations([record], {folder.name: load_curve(folder)},
                                           folder / "accuracy_vs_iterations.png")


# ----------------------------------------------------------------------------------------- the measurements
def evaluate_batch_statistics(model, criterion, loader):
    """Mean loss and accuracy over ``loader`` with every batch normalised by its *own* statistics.

    The model runs in training mode (BatchNorm uses the mean and biased variance of each evaluation batch,
    not its running averages), forward only. Training mode also updates BN's running buffers: they are
    saved first and put back afterwards, with the train/eval mode, so the evaluation leaves no trace.
    Returns ``(loss, accuracy, n)`` as ``minigrad.train.evaluate`` does.
    """
    was_training = model.training
    buffers = {name: np.array(value, copy=True) for name, value in model.named_buffers()}
    total_loss, correct, count = 0.0, 0, 0
    try:
        model.train()
        for x, y in loader.epoch(np.random.default_rng(0)):
            logits = model(x)
            total_loss += criterion(logits, y) * len(y)
            correct += int((np.argmax(logits, axis=1) == y).sum())
            count += len(y)
    finally:
        model.load_state_dict({**model.state_dict(), **buffers})
        model.train(was_training)
    if count == 0:
        raise ValueError("evaluate_batch_statistics: the loader yielded no examples")
    return total_loss / count, correct / count, count


class BatchStatisticsEval(Callback):
    """Trainer callback: at each epoch end, ``evaluate_batch_statistics`` on each of ``loaders``
    (``{key: loader}``), added to metrics.csv as ``val_loss_<key>`` and ``val_acc_<key>``. Stateless."""

    state_key = "batch_statistics_eval"

    def __init__(self, loaders):
        self.loaders = dict(loaders)

    def on_epoch_end(self, trainer, epoch, metrics):
        values = {}
        for key, loader in self.loaders.items():
            loss, acc, _ = evaluate_batch_statistics(trainer.model, trainer.criterion, loader)
            values.update({f"val_loss_{key}": loss, f"val_acc_{key}": acc})
        return values


def load_curve(folder):
    """A row's ``curve.csv`` as a list of dicts (numbers; an empty cell as None)."""
    return StepCurve.read(Path(folder) / CURVE)


# ----------------------------------------------------------------------------------------- findings
def accuracy_noise(p, n):
    """Binomial standard error of the difference of two accuracies near ``p`` measured on ``n`` images each:
    sqrt(2 p (1 - p) / n). A floor for what one seed can tell apart (seed-to-seed variation comes on top)."""
    return math.sqrt(2 * p * (1 - p) / n)


def first_step_reaching(curve, target):
    """The first curve point (after step 0) whose validation accuracy is at least ``target``, or None."""
    return next((p for p in curve if p["step"] > 0 and p["val_acc"] is not None and p["val_acc"] >= target), None)


def findings(records, folders):
    """The sources' claims against the rows in ``records`` (lines under the table)."""
    done = [r for r in records if r["val_acc"] is not None and str(r["status"]).startswith("finished")]
    if not done:
        return []
    by = {(r["norm"], r["batch_size"]): r for r in done}
    n_val = done[0]["n_val"] or 2500
    margin = 2 * accuracy_noise(float(np.mean([r["val_acc"] for r in done])), n_val)
    notes = [f"Noise floor: two accuracies on {n_val:,} validation images differ by less than {100 * margin:.1f} "
             "points (2 binomial standard errors) about 95% of the time by sampling alone (conservative here: every "
             "comparison is on the same images); one seed, so seed-to-seed variation is not measured and comes on top."]

    # (a) BN against no normalisation, at equal iterations
    for batch in sorted({b for n, b in by if n == "none" and ("batch", b) in by}, reverse=True):
        none, bn = by[("none", batch)], by[("batch", batch)]
        curves = {n: load_curve(folders[r["row"]]) if r["row"] in folders else [] for n, r in (("none", none),
                                                                                               ("batch", bn))}
        gap = bn["val_acc"] - none["val_acc"]
        text = (f"(a) Batch {batch}, lecture: BN \"helps train faster and achieve higher accuracy\". Final validation "
                f"accuracy BN {100 * bn['val_acc']:.2f}% vs none {100 * none['val_acc']:.2f}% ({100 * gap:+.2f} points: "
                f"{'higher accuracy showed' if gap > margin else 'higher accuracy did not show beyond the noise floor'}).")
        paired = [(p["val_acc"], q["val_acc"]) for p, q in zip(curves["batch"], curves["none"])
                  if p["step"] == q["step"] and p["step"] > 0]
        if paired and curves["none"]:
            ahead = sum(a > b for a, b in paired) / len(paired)
            target = curves["none"][-1]["val_acc"]
            reach = first_step_reaching(curves["batch"], target)
            total = curves["batch"][-1]["step"]
            when = (f"reached none's final curve accuracy ({100 * target:.1f}%) at step {reach['step']:,} of {total:,}"
                    if reach else f"never reached none's final curve accuracy ({100 * target:.1f}%)")
            verdict = "faster training showed" if ahead >= 0.8 else "faster training did not show"
            text += (f" On the validation curve BN is ahead at {100 * ahead:.0f}% of the {len(paired)} points measured "
                     f"at equal iterations and {when} ({verdict}).")
        notes.append(text)

    # (b) error against batch size, per norm (Wu & He's Figure 1)
    for norm in [n for n in NORMS if n != "none"]:
        sizes = sorted((b for n, b in by if n == norm), reverse=True)
        if len(sizes) < 2:
            continue
        big, small = by[(norm, sizes[0])], by[(norm, sizes[-1])]
        rise = small["val_err"] - big["val_err"]
        errors = ", ".join(f"{100 * by[(norm, b)]['val_err']:.1f}% at {b}" for b in sizes)
        text = f"(b) {NORM_LABELS[norm]} validation error: {errors} ({100 * rise:+.2f} points from {sizes[0]} to {sizes[-1]}"
        if norm == "batch":
            text += (f"; {'BN degrades at the small batch: showed' if rise > margin else 'no degradation of BN beyond the noise floor: did not show'})."
                     f" Lecture: BN does \"not work well when batch size is small (e.g., 4)\"; Wu & He (ResNet-50, "
                     f"ImageNet): BN {_paper_errors('batch', sizes)}.")
        elif norm == "group":
            text += (f"; {'flat within the noise floor, as Wu & He' if abs(rise) <= margin else 'not flat'})."
                     f" Wu & He: GN {_paper_errors('group', sizes)}.")
        else:
            text += ")."
        notes.append(text)
    small_sizes = sorted({b for n, b in by if n == "batch" and ("group", b) in by})
    for batch in small_sizes[:1] if small_sizes and small_sizes[0] < max(b for _, b in by) else []:
        gap = by[("group", batch)]["val_acc"] - by[("batch", batch)]["val_acc"]
        notes.append(f"(b) At batch {batch}: GN's validation accuracy {100 * gap:+.2f} points against BN's "
                     f"({'GN better than BN at the small batch: showed' if gap > margin else 'GN not better than BN beyond the noise floor: did not show'}; "
                     f"Wu & He at batch 2: GN 10.6 points better).")
    top = max(b for _, b in by)
    at_top = [by[(n, top)] for n in NORMS if (n, top) in by and n != "none"]
    if len(at_top) > 1:
        order = " < ".join(f"{NORM_LABELS[r['norm']]} {100 * r['val_err']:.1f}%" for r in sorted(at_top, key=lambda r: r["val_err"]))
        if top == 32:
            paper = " (Wu & He at 32: BN 23.6% < GN 24.1% < LN 25.3% < IN 28.4%)"
        elif top in WU_HE_ERROR["batch"]:
            paper = f" (Wu & He at {top}: BN {WU_HE_ERROR['batch'][top]}%, GN {WU_HE_ERROR['group'][top]}%)"
        else:
            paper = ""
        notes.append(f"(b) Validation error at batch {top}: {order}{paper}.")

    # (c) BN at inference: running averages against each batch's own statistics
    bn_rows = [by[("batch", b)] for b in sorted({b for n, b in by if n == "batch"})
               if by[("batch", b)]["val_acc_batch_stats"] is not None]
    for r in bn_rows:
        running, own, large = r["val_acc"], r["val_acc_batch_stats"], r["val_acc_batch_stats_large"]
        notes.append(
            f"(c) BN trained at batch {r['batch_size']}: validation accuracy with the running averages (eval mode) "
            f"{100 * running:.2f}%; with each evaluation batch's own statistics, batches of {r['batch_size']}: "
            f"{100 * own:.2f}% ({_versus(own - running, margin)}), batches of {EVAL_BATCH}: {100 * large:.2f}% "
            f"({_versus(large - running, margin)}).")
    if bn_rows:
        notes.append(
            "(c) The lecture asks where BN's mean and variance come from at inference; the usual answer (Ioffe & "
            "Szegedy; PyTorch's eval mode) is averages kept during training, because a test batch's own statistics "
            "make each prediction depend on the other images of its batch and are noisy when the batch is small. "
            "The running averages are an exponential average (momentum 0.1: about the last 10 training batches) of "
            "the statistics of augmented training batches, so a large batch of the images being classified can "
            "beat them: that is what the batches of 500 measure.")
    lr_rules = sorted({f"lr {r['base_lr']:g} x batch / {REFERENCE_BATCH} (linear scaling, as Wu & He)"
                       if r["lr_scaling"] == "linear" else f"lr {r['base_lr']:g} at every batch size" for r in done
                       if r.get("base_lr") is not None})
    notes.append(f"Recipe (ours): SGD momentum 0.9, {'; '.join(lr_rules) or 'lr as in the table'}, no weight decay, "
                 "cosine to 0 per iteration, the same epochs at every batch size (equal training images). Wu & He's "
                 "figures are ResNet-50 on ImageNet, validation error (%) by images per batch, from their Table 2.")
    return notes


def _versus(difference, margin):
    where = "beyond the noise floor" if abs(difference) > margin else "within the noise floor"
    return f"{100 * difference:+.2f} points against the running averages, {where}"


def _paper_errors(norm, sizes):
    values = [f"{WU_HE_ERROR[norm][b]}% at {b}" for b in sizes if b in WU_HE_ERROR[norm]]
    return ", ".join(values) if values else "(no figure at these batch sizes)"


# ----------------------------------------------------------------------------------------- figures
def draw_accuracy_vs_iterations(records, curves, path):
    """(a) Validation accuracy against training iterations: one panel per batch size, one line per norm."""
    rows = [r for r in records if curves.get(r["row"])]
    batches = sorted({r["batch_size"] for r in rows}, reverse=True)
    if not batches:
        return []
    fig = new_figure(max(6.0, 5.2 * len(batches)), 4.6, layout="tight")
    axes = np.atleast_1d(fig.subplots(1, len(batches), squeeze=False)[0])
    for ax, batch in zip(axes, batches):
        for r in sorted((r for r in rows if r["batch_size"] == batch), key=lambda r: NORMS.index(r["norm"])):
            curve = curves[r["row"]]
            ax.plot([p["step"] for p in curve], [100 * p["val_acc"] for p in curve], marker="o", markersize=3,
                    color=NORM_COLOURS[r["norm"]], label=NORM_LABELS[r["norm"]],
                    linewidth=2.2 if r["norm"] in ("batch", "none") else 1.2)
        ax.set(xlabel="training iterations (optimiser steps)", ylabel="validation accuracy (%)",
               title=f"batch {batch} (lr {format_cell(_lr_of(rows, batch), 'g')})")
        ax.axhline(10, color="0.6", linestyle=":", linewidth=1)
        ax.annotate("chance", (0, 10), xycoords=("axes fraction", "data"), xytext=(3, 3),
                    textcoords="offset points", fontsize=7, color="0.5")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.suptitle("Validation accuracy against training iterations\n(eval mode; the same validation images for every row)",
                 fontsize=10)
    fig.savefig(path, dpi=110)
    return [Path(path)]


def _lr_of(rows, batch):
    return next(r["lr"] for r in rows if r["batch_size"] == batch)


def draw_error_vs_batch_size(records, path):
    """(b) Validation error against batch size, one line per norm; log2 x axis from large to small (Wu & He)."""
    fig = new_figure(7.0, 4.6, layout="tight")
    ax = fig.subplots()
    sizes = sorted({r["batch_size"] for r in records if r["val_acc"] is not None})
    for norm in NORMS:
        rows = sorted((r for r in records if r["norm"] == norm and r["val_acc"] is not None),
                      key=lambda r: -r["batch_size"])
        if rows:
            ax.errorbar([r["batch_size"] for r in rows], [100 * r["val_err"] for r in rows],
                        yerr=[100 * accuracy_noise(r["val_acc"], r["n_val"] or 2500) / math.sqrt(2) for r in rows],
                        marker="o", capsize=3, color=NORM_COLOURS[norm], label=NORM_LABELS[norm],
                        linewidth=2.2 if norm in ("batch", "group") else 1.2, linestyle=":" if norm == "none" else "-")
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes)
    ax.set_xticklabels([str(s) for s in sizes])
    ax.set_xlim(max(sizes) * 1.3, min(sizes) / 1.3)  # large batches on the left, as Wu & He's Figure 1
    scaling = {r.get("lr_scaling") for r in records}
    lr_text = "lr proportional to the batch" if scaling == {"linear"} else "lr as in the table"
    ax.set(xlabel="batch size (images per batch)", ylabel="validation error (%)")
    ax.set_title(f"Validation error against batch size (after the last epoch)\n"
                 f"every row: the same epochs, {lr_text}; bars: +-1 binomial s.e.", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=110)
    return [Path(path)]


def draw_running_vs_batch_stats(records, path):
    """(c) BN rows: validation accuracy with running averages against each evaluation batch's own statistics."""
    rows = sorted((r for r in records if r["norm"] == "batch" and r["val_acc_batch_stats"] is not None),
                  key=lambda r: -r["batch_size"])
    kinds = [("val_acc", "running averages (eval mode)", "C0"),
             ("val_acc_batch_stats", "batch statistics, batches of the training batch size", "C1"),
             ("val_acc_batch_stats_large", f"batch statistics, batches of {EVAL_BATCH}", "C2")]
    fig = new_figure(max(5.0, 1.9 * len(rows) + 2.5), 4.5, layout="tight")
    ax = fig.subplots()
    width = 0.8 / len(kinds)
    for k, (key, label, colour) in enumerate(kinds):
        xs = [i + (k - 1) * width for i in range(len(rows))]
        values = [100 * r[key] for r in rows]
        bars = ax.bar(xs, values, width, color=colour, label=label)
        ax.bar_label(bars, labels=[f"{v:.1f}" for v in values], fontsize=7, padding=2)
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([f"BN trained at batch {r['batch_size']}" for r in rows])
    top = max(100 * r[key] for r in rows for key, _, _ in kinds)
    ax.set_xlabel(f"after the last epoch, on the {rows[0]['n_val'] or 2500:,} validation images")
    ax.axhline(10, color="0.6", linestyle=":", linewidth=1)
    ax.set(ylabel="validation accuracy (%)", ylim=(0, min(100, top + 25)),
           title="BN at inference: where the mean and variance come from")
    ax.legend(fontsize=8, loc="upper right", title="BN normalises with", title_fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    fig.savefig(path, dpi=110)
    return [Path(path)]


STUDY = Normalization()


def main(argv=None):
    return study.main(STUDY, argv)


if __name__ == "__main__":
    sys.exit(main())
