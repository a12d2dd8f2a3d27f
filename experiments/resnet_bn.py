"""BN vs residual branches in a pre-activation ResNet-15 (the BN-in-residual-networks paper, section 5).

    python -m experiments.resnet_bn                        # quick preset: Model-1/2/3 on a CIFAR-10 subset
    python -m experiments.resnet_bn --preset full          # whole training split, 200 epochs per model
    python -m experiments.resnet_bn --model Model-3 --epochs 1   # one row
    python -m experiments.resnet_bn --list | --collect DIR

Models (DECISIONS 21): Model-1 BN + shortcuts; Model-2 BN, every shortcut removed; Model-3 shortcuts,
every BN removed (expected to diverge: recorded as ``status: diverged`` with epoch and batch, not a crash).

Training, the paper's where it says (ResNet-15 on CIFAR-10, Xavier init, zero biases) and ours where it
is silent: SGD momentum 0.9, lr 0.1, weight decay 1e-4 on every parameter, batch 128, MultiStepLR (x0.1 at
the preset's milestones, stepped per epoch), crop 32 pad 4 + horizontal flip, 47,500 / 2,500 split.

The per-block statistic (the paper's Figures 5-12): at the probe points (before training = epoch 0, and
after the preset's epochs), one fixed batch, the first ``batch_size`` images of the training (sub)set
unaugmented, goes forward in training mode (BN with batch statistics, as in training) and the mean
cross-entropy backward; for each residual block, with g = d loss / d (block output) of shape (N, C, H, W):
``batch_var`` = mean over the C*H*W features of the variance over the N images, and ``l2`` = ||g||_2.
The probe leaves no trace: BN running statistics and parameter gradients are put back. Appendix F:
``mean |beta / gamma|`` of each BN layer, same points. Everything goes to ``<row>/block_stats.json``.

Outputs: one folder per row (``minigrad.runs``: config, metrics, checkpoints, summary, block_stats.json,
``block_grad_var.png``, ``bn_beta_gamma.png``); study level ``results.md`` / ``results.csv`` (Table 1 and
the per-block variance range), ``manifest.json``, ``train_accuracy.png`` (Figure 8),
``block_grad_var.png`` (the three models at each probe point, shared log axis).
"""
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import minigrad
from minigrad import nn, optim
from minigrad.models.resnet import MODEL_VARIANTS, build_resnet
from minigrad.runs import (json_safe, load_config, load_metrics, load_summary, prepare_run_dir,
                           write_json_atomic)
from minigrad.train import Trainer

from . import common, launch

STUDY = "resnet_bn"
BLOCK_STATS = "block_stats.json"
MODELS = tuple(MODEL_VARIANTS)


@dataclass(frozen=True)
class Preset:
    epochs: int
    milestones: tuple
    probe_epochs: tuple  # "last" stands for the final epoch
    train_subset: int = None
    val_subset: int = None
    test_subset: int = None
    description: str = ""


PRESETS = {
    "quick": Preset(
        epochs=3, milestones=(2,), probe_epochs=(0, 1, "last"), train_subset=2560, val_subset=500,
        test_subset=2000,
        description="Model-1/2/3 for 3 epochs on a 2,560-image CIFAR-10 training subset (lr 0.1, x0.1 "
                    "after epoch 2); validation on 500 and test on 2,000 stratified images",
    ),
    "full": Preset(
        # 372 steps per epoch at batch 128: epochs 67 and 134 end near the paper's steps 25,000 and 50,000
        epochs=200, milestones=(100, 150), probe_epochs=(0, 1, 67, 134, "last"),
        description="Model-1/2/3 for 200 epochs on the 47,500-image training split (x0.1 at epochs 100 "
                    "and 150); the whole validation and test sets",
    ),
}


def build_parser():
    parser = common.make_parser(STUDY, __doc__)
    common.add_common_args(parser, STUDY, PRESETS)
    parser.add_argument("--model", choices=MODELS, help="run one row with this model")
    parser.add_argument("--lr", type=float, default=0.1, help="learning rate (default 0.1)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs (default: the preset's)")
    parser.add_argument("--batch-size", type=int, default=128, help="batch size, also of the probe (default 128)")
    parser.add_argument("--train-subset", type=int, default=None,
                        help="train on a stratified subset of N training images (default: the preset's)")
    parser.add_argument("--full-train", action="store_true", help="use the whole training split (no subset)")
    parser.add_argument("--n-val", type=int, default=2500, help="validation images held out (default 2500)")
    parser.add_argument("--width", type=int, default=16,
                        help="filters of the first scale; the others double it (default 16: 16, 32, 64)")
    parser.add_argument("--blocks-per-scale", type=int, default=5, help="residual blocks per scale (default 5)")
    parser.add_argument("--list", action="store_true", help="list the rows of the preset and exit")
    parser.add_argument("--collect", nargs="+", type=Path, metavar="DIR",
                        help="rebuild the table and figures from finished row (or study) folders")
    launch.add_launcher_args(parser)
    return parser


# ----------------------------------------------------------------------------------------- rows
def row_config(args, model):
    """Every setting of one row (written to its config.json; a re-run must match it)."""
    preset = PRESETS[args.preset]
    epochs = args.epochs if args.epochs is not None else preset.epochs
    for flag, value in (("--epochs", epochs), ("--batch-size", args.batch_size), ("--width", args.width),
                        ("--blocks-per-scale", args.blocks_per_scale)):
        if value < 1:
            raise ValueError(f"{flag} must be >= 1, got {value}")
    if not args.lr > 0:
        raise ValueError(f"--lr must be positive, got {args.lr}")
    subset = None if args.full_train else (args.train_subset if args.train_subset is not None else preset.train_subset)
    probes = sorted({epochs if e == "last" else e for e in preset.probe_epochs if e == "last" or e <= epochs})
    return {
        "study": STUDY, "preset": args.preset, "model": model, **MODEL_VARIANTS[model], "lr": args.lr,
        "epochs": epochs, "batch_size": args.batch_size, "seed": args.seed, "dataset": "cifar10",
        "train_subset": subset, "n_val": args.n_val, "split_seed": 0,
        "val_subset": preset.val_subset, "test_subset": preset.test_subset,
        "optimizer": "SGD", "momentum": 0.9, "weight_decay": 1e-4, "nesterov": False,
        "scheduler": "MultiStepLR", "milestones": [m for m in preset.milestones if m < epochs], "gamma": 0.1,
        "augment": "crop32-pad4+hflip", "init": "xavier_uniform, zero biases",
        "num_filters": [args.width, 2 * args.width, 4 * args.width], "num_blocks_per_scale": args.blocks_per_scale,
        "probe_epochs": probes, "probe_batch": f"first {args.batch_size} training images, unaugmented, BN in train mode",
        "minigrad_version": minigrad.__version__, "threads": args.threads,
    }


def _eval_subset(images, labels, n):
    """A stratified subset of ``n`` images (all of them for None or n >= len) for quicker evaluation."""
    from minigrad.data import stratified_subset
    if n is None or n >= len(labels):
        return images, labels
    keep = stratified_subset(labels, n, seed=0)
    return images[keep], labels[keep]


# ----------------------------------------------------------------------------------------- the statistics
def grad_output_batch_var(grad_output):
    """Mean over features of the variance over the batch (axis 0) of ``grad_output``, in float64."""
    g = np.asarray(grad_output, dtype=np.float64)
    return float(g.reshape(g.shape[0], -1).var(axis=0).mean())


def bn_beta_over_gamma(model):
    """``{BN layer name: mean over channels of |beta / gamma|}`` (the paper's Appendix F); inf if a gamma is 0."""
    out = {}
    for name, bn in model.batch_norms():
        gamma = bn.weight.data.astype(np.float64)
        beta = bn.bias.data.astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            out[name] = float(np.mean(np.abs(beta / gamma)))
    return out


def probe_blocks(model, criterion, x, y):
    """Per-block gradient statistics of one batch, leaving the model as it was.

    Forward ``x`` in training mode, backward the mean cross-entropy, and read each residual block's
    ``"<block>:grad_output"`` statistics (``batch_var``, ``l2``, ``mean_abs``). Parameter gradients, BN
    running statistics, the train/eval mode and the blocks' recording flags are restored afterwards.
    Returns ``{"loss", "blocks": {name: {batch_var, l2, mean_abs}}, "bn": {name: mean |beta/gamma|}}``.
    """
    was_training = model.training
    grads = [p.grad.copy() for p in model.parameters()]
    buffers = {name: np.array(value, copy=True) for name, value in model.named_buffers()}
    flags = [(block, block.record_grad_output) for _, block in model.blocks()]
    try:
        model.train()
        model.set_record_grad_output(True)
        with np.errstate(over="ignore", invalid="ignore"):  # a diverging model may overflow: recorded as such
            loss = criterion(model(x), y)
            model.backward(criterion.backward())
        stats = model.grad_stats
        blocks = {name: {key: stats[f"{name}:grad_output"][key] for key in ("batch_var", "l2", "mean_abs")}
                  for name, _ in model.blocks()}
    finally:
        for p, g in zip(model.parameters(), grads):
            p.grad[...] = g
        model.load_state_dict({**model.state_dict(), **buffers})
        for block, flag in flags:
            block.record_grad_output = flag
        model.train(was_training)
    return {"loss": loss, "blocks": blocks, "bn": bn_beta_over_gamma(model)}


class BlockProbe:
    """Runs ``probe_blocks`` on a fixed batch and keeps the results, one entry per epoch, in ``path``."""

    def __init__(self, path, x, y, description):
        self.path, self.x, self.y = Path(path), x, y
        self.record = {"probe": description, "points": []}
        if self.path.exists():
            self.record = load_block_stats(self.path)

    def has(self, epoch):
        return any(p["epoch"] == epoch for p in self.record["points"])

    def __call__(self, model, epoch, label):
        result = probe_blocks(model, nn.CrossEntropyLoss(), self.x, self.y)
        point = {"epoch": epoch, "label": label, **result}
        # an epoch redone after a resume replaces its entry (resume is exact, so the values are the same)
        points = [p for p in self.record["points"] if p["epoch"] != epoch] + [point]
        self.record["points"] = sorted(points, key=lambda p: p["epoch"])
        write_json_atomic(self.path, json_safe(self.record))
        return point


class ProbingTrainer(Trainer):
    """``Trainer`` that probes the blocks at the end of the chosen epochs, before the epoch is checkpointed.

    Probing before the latest checkpoint is written means a crash between the two redoes the epoch and
    its probe on resume, so block_stats.json never lacks an epoch the checkpoint has.
    """

    def __init__(self, *args, probe, probe_epochs, **kwargs):
        super().__init__(*args, **kwargs)
        self.probe, self.probe_epochs = probe, set(probe_epochs)

    def _save_epoch(self, epoch, improved):
        if epoch in self.probe_epochs:
            self.probe(self.model, epoch, "end" if epoch == self.epochs else f"epoch {epoch}")
        super()._save_epoch(epoch, improved)


def run_row(config, out_dir, *, data_dir=None, download=False, resume=False, progress=True):
    """Train one row into ``out_dir/<row>/`` (or reuse it when finished or diverged); returns its summary."""
    from minigrad.data import BatchLoader

    name = common.row_name(config["model"], config["lr"])
    run = prepare_run_dir(out_dir, name, config, resume=resume)
    if run.done:
        common.say(f"[{name}] already {run.summary.get('status')}; reusing {run.path}")
        return run.summary
    splits = common.load_splits(config, data_dir, download)
    minigrad.manual_seed(config["seed"])
    model = build_resnet(config["model"], num_filters=config["num_filters"],
                         num_blocks_per_scale=config["num_blocks_per_scale"], num_classes=splits.num_classes)
    optimizer = optim.SGD(model.parameters(), lr=config["lr"], momentum=config["momentum"],
                          weight_decay=config["weight_decay"], nesterov=config["nesterov"])
    scheduler = optim.lr_scheduler.MultiStepLR(optimizer, milestones=config["milestones"], gamma=config["gamma"])
    batch = config["batch_size"]
    norm = dict(mean=splits.mean, std=splits.std)
    train_loader = BatchLoader(splits.train_images, splits.train_labels, batch, shuffle=True, augment=True, **norm)
    val_loader = BatchLoader(*_eval_subset(splits.val_images, splits.val_labels, config["val_subset"]), batch, **norm)
    test_loader = BatchLoader(*_eval_subset(splits.test_images, splits.test_labels, config["test_subset"]), batch, **norm)
    probe_x, probe_y = next(iter(BatchLoader(splits.train_images[:batch], splits.train_labels[:batch], batch,
                                             **norm).epoch()))
    probe = BlockProbe(run.path / BLOCK_STATS, probe_x, probe_y, config["probe_batch"])
    if 0 in config["probe_epochs"] and not probe.has(0):
        # the model is at its initialisation here, also on resume (the checkpoint is restored in fit)
        probe(model, 0, "init")
    common.say(f"[{name}] {model.num_parameters():,} parameters, {len(train_loader)} steps/epoch, "
               f"{config['epochs']} epochs -> {run.path}")
    trainer = ProbingTrainer(model, nn.CrossEntropyLoss(), optimizer, train_loader, val_loader,
                             scheduler=scheduler, test_loader=test_loader, epochs=config["epochs"],
                             run_dir=run.path, seed=config["seed"], config=config, progress=progress,
                             probe=probe, probe_epochs=config["probe_epochs"])
    result = trainer.fit(resume=run.resume)
    draw_row_figures(run.path)
    if result.status == "diverged":
        where = result.summary["diverged"]
        common.say(f"[{name}] diverged at epoch {where['epoch']}, {where['phase']} batch {where['batch']} "
                   f"(loss {where['loss']}); recorded in {run.path / 'summary.json'}")
    return load_summary(run.path)


# ----------------------------------------------------------------------------------------- figures
def load_block_stats(path):
    """block_stats.json (a row folder or the file) as a dict."""
    import json
    path = Path(path)
    path = path / BLOCK_STATS if path.is_dir() else path
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _figure(ncols, width_each=6.0, height=4.5):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width_each * ncols, height), layout="tight")
    FigureCanvasAgg(fig)
    return fig


def _plot_positive(ax, values, **style):
    """Plot against 1-based positions; None / non-positive values (log axis) become gaps."""
    ys = [v if v is not None and v > 0 else math.nan for v in values]
    ax.plot(range(1, len(ys) + 1), ys, **style)


def _scale_marks(ax, names):
    """Tick every block, label the first of each scale, and draw a line where a scale begins."""
    ax.set_xticks(range(1, len(names) + 1))
    ax.set_xticklabels([n.replace("scale", "s").replace(".block", ".b") for n in names], rotation=90, fontsize=7)
    for i, n in enumerate(names):
        if i and n.endswith(".block0"):
            ax.axvline(i + 0.5, color="0.7", linewidth=0.8, linestyle=":")


def draw_row_figures(folder):
    """``block_grad_var.png`` (batch variance and L2 norm per block, a curve per probe point) and, for BN
    models, ``bn_beta_gamma.png`` (Appendix F); returns the files written."""
    folder = Path(folder)
    if not (folder / BLOCK_STATS).exists():
        return []
    points = load_block_stats(folder)["points"]
    if not points:
        return []
    model = load_config(folder).get("model", folder.name)
    names = list(points[0]["blocks"])
    fig = _figure(2)
    ax_var, ax_l2 = fig.subplots(1, 2)
    for i, point in enumerate(points):
        style = dict(marker="o", markersize=3.5, color=f"C{i % 10}", label=point["label"])
        _plot_positive(ax_var, [point["blocks"][n]["batch_var"] for n in names], **style)
        _plot_positive(ax_l2, [point["blocks"][n]["l2"] for n in names], **style)
    for ax, what in ((ax_var, "batch variance (mean over features)"), (ax_l2, "L2 norm")):
        ax.set_yscale("log")
        _scale_marks(ax, names)
        ax.set(xlabel="residual block (input left, output right)", ylabel=what,
               title=f"d loss / d block output: {what}")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=8, title="probe point")
    fig.suptitle(f"{model}: gradient w.r.t. each residual block's output (one fixed batch)")
    written = [folder / "block_grad_var.png"]
    fig.savefig(written[0], dpi=110)
    bn_names = list(points[0]["bn"])
    if bn_names:
        fig = _figure(1, width_each=max(7.0, 0.2 * len(bn_names) + 2))
        ax = fig.subplots()
        for i, point in enumerate(points):
            values = [point["bn"][n] for n in bn_names]
            ax.plot(range(1, len(values) + 1), [math.nan if v is None else v for v in values], marker="o",
                    markersize=3, color=f"C{i % 10}", label=point["label"])
        ax.set_xticks(range(1, len(bn_names) + 1))
        ax.set_xticklabels(bn_names, rotation=90, fontsize=6)
        ax.set(ylabel="mean |beta / gamma| over channels", title=f"{model}: BN layers (Appendix F)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, title="probe point")
        written.append(folder / "bn_beta_gamma.png")
        fig.savefig(written[-1], dpi=110)
    return written


def draw_study_figures(folders, out_dir):
    """``train_accuracy.png`` (Figure 8) and ``block_grad_var.png`` (models side by side per probe point)."""
    out_dir = Path(out_dir)
    written = []
    with_metrics = [(f, load_metrics(f)) for f in folders if (f / "metrics.csv").exists()]
    if any(rows for _, rows in with_metrics):
        fig = _figure(1, width_each=7.0)
        ax = fig.subplots()
        for i, (folder, rows) in enumerate(with_metrics):
            summary = load_summary(folder) if (folder / "summary.json").exists() else {}
            label = folder.name
            if summary.get("status") == "diverged":
                label += f" (diverged, epoch {summary['diverged']['epoch']})"
            ax.plot([r["epoch"] for r in rows], [100 * r["train_acc"] for r in rows], marker="o", color=f"C{i}",
                    label=label)
        ax.set(xlabel="epoch", ylabel="training accuracy (%)", title="Training accuracy (the paper's Figure 8)")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        written.append(out_dir / "train_accuracy.png")
        fig.savefig(written[-1], dpi=110)
    stats = [(f, load_block_stats(f)["points"]) for f in folders if (f / BLOCK_STATS).exists()]
    stats = [(f, points) for f, points in stats if points]
    if stats:
        labels = sorted({p["label"] for _, points in stats for p in points},
                        key=lambda lab: min(p["epoch"] for _, pts in stats for p in pts if p["label"] == lab))
        fig = _figure(len(labels), width_each=5.0)
        axes = np.atleast_1d(fig.subplots(1, len(labels), sharey=True))
        for ax, lab in zip(axes, labels):
            for i, (folder, points) in enumerate(stats):
                point = next((p for p in points if p["label"] == lab), None)
                if point is None:
                    continue
                names = list(point["blocks"])
                _plot_positive(ax, [point["blocks"][n]["batch_var"] for n in names], marker="o", markersize=3,
                               color=f"C{i}", label=folder.name)
                _scale_marks(ax, names)
            ax.set_yscale("log")
            epoch = next(p["epoch"] for _, pts in stats for p in pts if p["label"] == lab)
            ax.set_title(lab if lab == f"epoch {epoch}" else f"{lab} (epoch {epoch})")
            ax.set_xlabel("residual block (input left)")
            ax.grid(True, which="major", alpha=0.3)
            ax.legend(fontsize=7)
        axes[0].set_ylabel("batch variance of d loss / d block output")
        fig.suptitle("Per-block gradient variance (mean over features), one fixed batch")
        written.append(out_dir / "block_grad_var.png")
        fig.savefig(written[-1], dpi=110)
    return written


def _row_figures(folder):
    return [folder / name for name in ("block_grad_var.png", "bn_beta_gamma.png") if (folder / name).exists()]


def _figures_stale(folder):
    """True if block_stats.json is newer than the row's figure (or the figure is missing)."""
    stats, figure = folder / BLOCK_STATS, folder / "block_grad_var.png"
    return stats.exists() and (not figure.exists() or figure.stat().st_mtime < stats.stat().st_mtime)


# ----------------------------------------------------------------------------------------- table
def _variance_range(points, label):
    point = next((p for p in points if p["label"] == label), None)
    if point is None:
        return None, None
    values = [b["batch_var"] for b in point["blocks"].values()]
    if any(v is None for v in values):
        return None, "non-finite"
    return min(values), max(values)


def _input_block_change(points):
    """Last probe / init of the input-side block's variance (how far the first block's gradient moved)."""
    if len(points) < 2 or points[0]["label"] != "init":
        return None
    first = next(iter(points[0]["blocks"]))
    before, after = points[0]["blocks"][first]["batch_var"], points[-1]["blocks"][first]["batch_var"]
    return after / before if before and after is not None else None


def _format_range(lo, hi):
    if hi == "non-finite":
        return "non-finite"
    if lo is None:
        return "-"
    return f"{lo:.1e} .. {hi:.1e} (x{hi / lo:,.0f})" if lo > 0 else f"{lo:.1e} .. {hi:.1e}"


def row_record(folder):
    """One table row from a row folder."""
    config = load_config(folder)
    summary = load_summary(folder) if (folder / "summary.json").exists() else {}
    metrics = load_metrics(folder) if (folder / "metrics.csv").exists() else []
    last = metrics[-1] if metrics else {}
    points = load_block_stats(folder)["points"] if (folder / BLOCK_STATS).exists() else []
    status = summary.get("status", "missing summary")
    if status == "diverged" and summary.get("diverged"):
        where = summary["diverged"]
        status = f"diverged (epoch {where['epoch']}, {where['phase']} batch {where['batch']})"
    end_label = points[-1]["label"] if points and points[-1]["epoch"] > 0 else None
    return {
        "row": folder.name, "folder": str(folder), "model": config.get("model"),
        "bn": "yes" if config.get("batch_norm") else "no", "residual": "yes" if config.get("residual") else "no",
        "lr": config.get("lr"), "preset": config.get("preset"), "params": summary.get("num_parameters"),
        "epochs": len(metrics), "train_acc": last.get("train_acc"), "val_acc": last.get("val_acc"),
        "test_acc": summary.get("test_acc"), "seconds": summary.get("seconds"), "status": status,
        "var_init": _format_range(*_variance_range(points, "init")),
        "var_end": _format_range(*_variance_range(points, end_label)) if end_label else "-",
        "end_label": end_label, "input_block_change": _input_block_change(points),
    }


COLUMNS = [("model", "Model", None), ("bn", "BN", None), ("residual", "Shortcuts", None),
           ("params", "# Params", "int"), ("epochs", "Epochs", None), ("train_acc", "Train acc %", "pct"),
           ("val_acc", "Val acc %", "pct"), ("test_acc", "Test acc %", "pct"),
           ("var_init", "Block grad var at init (min .. max)", None),
           ("var_end", "Block grad var at the last probe", None), ("seconds", "Time (s)", "s"),
           ("status", "Status", None)]


def findings(records):
    """The paper's claims against this run: Table 1's order and Model-3's divergence."""
    notes = ["Paper (Table 1, full training): Model-1 92.5%, Model-2 90.6%, Model-3 9.09% (diverges). "
             "Chance level: 10.0%."]
    by_model = {r["model"]: r for r in records}
    m1, m2, m3 = (by_model.get(m) for m in MODELS)
    if m1 and m2 and m1["test_acc"] is not None and m2["test_acc"] is not None:
        notes.append(f"Model-1 minus Model-2 test accuracy: {100 * (m1['test_acc'] - m2['test_acc']):+.2f} points.")
    if m3 and m3["status"] == "finished":
        notes.append(f"Model-3 finished without a non-finite loss (the paper's diverged); final train accuracy "
                     f"{format_pct(m3['train_acc'])}% (chance 10%).")
    elif m3:
        notes.append(f"Model-3: {m3['status']}.")
    for r in records:
        change = r["input_block_change"]
        moved = "" if change is None else f"; the input-side block's variance moved x{change:.1e} from init"
        notes.append(f"{r['model']}: per-block gradient variance at init {r['var_init']}; "
                     f"at {r['end_label'] or 'the end'} {r['var_end']}{moved}.")
    notes.append("Training: Xavier init and zero biases as the paper; SGD momentum 0.9, lr 0.1, weight decay 1e-4, "
                 "batch 128, x0.1 steps, crop+flip augmentation are our choices where the paper is silent "
                 "(each row's config.json has every setting).")
    notes.append("Block gradient variance: one fixed batch (first training images, unaugmented, BN in train "
                 "mode), mean over features of the variance over the batch of d loss / d block output.")
    return notes


def format_pct(value):
    return common.format_cell(value, "pct")


def collect(paths, out_dir, preset=None, names=None, redraw=False):
    """Table, manifest and figures from the row folders under ``paths``; returns (table, records, figures).

    Row figures are drawn when missing or older than their block_stats.json, or always with ``redraw``.
    """
    folders = [f for f in common.find_row_dirs(paths) if load_config(f).get("study") == STUDY]
    if preset is not None:
        folders = [f for f in folders if load_config(f).get("preset") == preset]
    if names is not None:
        folders = [f for f in folders if f.name in names]
    order = {m: i for i, m in enumerate(MODELS)}
    folders.sort(key=lambda f: (order.get(load_config(f).get("model"), 99), f.name))
    records = [row_record(f) for f in folders]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    presets = sorted({str(r["preset"]) for r in records})
    if len(presets) > 1:
        raise ValueError(f"the folders mix presets {presets}; collect one preset at a time")
    title = f"BN vs residual branches in ResNet-15 (CIFAR-10, preset {', '.join(presets) or '?'})"
    table = common.write_study_table(out_dir, records, COLUMNS, title, notes=findings(records))
    common.write_manifest(out_dir, STUDY, presets[0] if len(presets) == 1 else presets,
                          [{"row": r["row"], "folder": r["folder"], "status": r["status"]} for r in records])
    figures = []
    for folder in folders:
        figures += draw_row_figures(folder) if redraw or _figures_stale(folder) else _row_figures(folder)
    figures += draw_study_figures(folders, out_dir)
    return table, records, figures


# ----------------------------------------------------------------------------------------- main
def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.out is None:
        args.out = common.default_out(STUDY)
    models = [args.model] if args.model else list(MODELS)
    if args.list:
        common.say(f"preset {args.preset}: {PRESETS[args.preset].description}")
        for model in models:
            common.say(f"  {common.row_name(model, args.lr)}")
        return 0
    if args.collect:
        try:
            table, records, figures = collect(args.collect, args.out, redraw=True)
        except ValueError as error:
            return common.fail(str(error))
        _report(table, figures, args.out)
        for path in args.collect:  # a study folder: which rows are finished, running, failed (cluster jobs)
            if path.is_dir() and not (path / "config.json").exists():
                common.say("\n".join(launch.describe_states(launch.row_states(path))))
        return 0

    try:
        configs = {model: row_config(args, model) for model in models}  # bad settings stop before training
    except ValueError as error:
        return common.fail(str(error))
    if args.launcher != "none":  # the rows as submitit jobs (experiments.launch): slurm returns at once
        result = launch.launch_rows(run_row, [(common.row_name(m, args.lr), configs[m]) for m in models], args,
                                    study=STUDY)
        if result.code == 2 or not result.waited:
            return result.code
        failed = result.code
    else:
        failed = _run_here(models, configs, args)
        if failed is None:
            return 2
    names = {common.row_name(m, args.lr) for m in models}
    table, _, figures = collect([args.out], args.out, preset=args.preset, names=names)
    _report(table, figures, args.out)
    return 1 if failed else 0


def _run_here(models, configs, args):
    """The rows one after the other in this process; the number that failed (None: stop the study)."""
    threads = common.apply_threads(args.threads)
    common.say(f"ResNet BN study, preset {args.preset}: {len(models)} row(s) -> {args.out} ({threads} threads)")
    failed = 0
    for model in models:
        try:
            run_row(configs[model], args.out, data_dir=args.data_dir, download=args.download, resume=args.resume,
                    progress=not args.no_progress)
        except Exception as error:  # noqa: BLE001 - one row failing must not lose the others' table
            if common.is_setup_error(error):
                print(f"error: {error}", file=sys.stderr, flush=True)
                return None
            failed += 1
            print(f"error: row {model} failed: {type(error).__name__}: {error}", file=sys.stderr, flush=True)
    return failed


def _report(table, figures, out_dir):
    common.say("")
    common.say(Path(table).read_text())
    for figure in figures:
        common.say(f"Figure:        {figure}")
    common.say(f"Everything is in {out_dir}: results.md, results.csv, manifest.json, figures, one folder per model.")


if __name__ == "__main__":
    sys.exit(main())
