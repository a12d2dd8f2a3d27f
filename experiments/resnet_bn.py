"""BN vs residual branches in a pre-activation ResNet-15 (the BN-in-residual-networks paper, section 5).

    python -m experiments.resnet_bn                        # quick preset: Model-1/2/3 on a CIFAR-10 subset
    python -m experiments.resnet_bn --preset full          # whole training split, 200 epochs per model
    python -m experiments.resnet_bn --model Model-3 --epochs 1   # one row
    python -m experiments.resnet_bn --list | --collect DIR

Models (DECISIONS 21): Model-1 BN + shortcuts; Model-2 BN, every shortcut removed; Model-3 shortcuts,
every BN removed (expected to diverge: recorded as ``status: diverged`` with epoch and batch, not a crash).

Training. The paper gives the network (ResNet-15 on CIFAR-10, Xavier init, zero biases) but no training
recipe: the optimiser, learning rate, schedule, epochs, widths (16/32/64), stem and head are *our*
choices: SGD momentum 0.9, lr 0.1, weight decay 1e-4 on every parameter, batch 128, MultiStepLR (x0.1 at
the preset's milestones, stepped per epoch), crop 32 pad 4 + horizontal flip, 47,500 / 2,500 split. The
full preset's 200 epochs are ours too; its probe points (epochs 67 and 134) sit near the paper's steps
25,000 and 50,000.

The per-block statistic (the paper's Figures 5-12), measured by the ``BlockProbe`` callback: at the
probe points (before training = epoch 0, and after the preset's epochs), one fixed batch, the first
``batch_size`` images of the training (sub)set unaugmented, goes forward in training mode (BN with batch
statistics, as in training) and the mean cross-entropy backward; for each residual block, with
g = d loss / d (block output) of shape (N, C, H, W): ``batch_var`` = mean over the C*H*W features of the
variance over the N images, and ``l2`` = ||g||_2. The probe leaves no trace: BN running statistics and
parameter gradients are put back. Appendix F: ``mean |beta / gamma|`` of each BN layer, same points.
Everything goes to ``<row>/block_stats.json``.

Outputs: one folder per row (config, metrics, checkpoints, summary, block_stats.json,
``block_grad_var.png``, ``bn_beta_gamma.png``); study level ``results.md`` / ``results.csv`` (Table 1 and
the per-block variance range), ``manifest.json``, ``train_accuracy.png`` (Figure 8),
``block_grad_var.png`` (the three models at each probe point, shared log axis).
"""
import math
import sys
from pathlib import Path

import numpy as np

import minigrad
from minigrad import nn, optim
from minigrad.models.resnet import MODEL_VARIANTS, build_resnet
from minigrad.runs import json_safe, load_config, load_metrics, load_summary, write_json_atomic
from minigrad.train import Callback

from . import study
from .study import Preset, Study, format_cell, new_figure, positive_float, positive_int, row_name, training_record

BLOCK_STATS = "block_stats.json"
MODELS = tuple(MODEL_VARIANTS)


class ResNetBN(Study):
    name = "resnet_bn"
    title = "ResNet BN study"
    description = __doc__
    presets = {
        "quick": Preset(
            "Model-1/2/3 for 3 epochs on a 2,560-image CIFAR-10 training subset (lr 0.1, x0.1 after epoch 2); "
            "validation on 500 and test on 2,000 stratified images",
            epochs=3, milestones=(2,), probe_epochs=(0, 1, "last"), train_subset=2560, val_subset=500,
            test_subset=2000),
        "full": Preset(
            # 372 steps per epoch at batch 128: epochs 67 and 134 end near the paper's steps 25,000 and 50,000
            "Model-1/2/3 for 200 epochs (our recipe; the paper gives none) on the 47,500-image training split "
            "(x0.1 at epochs 100 and 150); the whole validation and test sets",
            epochs=200, milestones=(100, 150), probe_epochs=(0, 1, 67, 134, "last"), train_subset=None,
            val_subset=None, test_subset=None),
    }
    columns = [("model", "Model", None), ("bn", "BN", None), ("residual", "Shortcuts", None),
               ("params", "# Params", "int"), ("epochs", "Epochs", None), ("train_acc", "Train acc %", "pct"),
               ("val_acc", "Val acc %", "pct"), ("test_acc", "Test acc %", "pct"),
               ("var_init", "Block grad var at init (min .. max)", None),
               ("var_end", "Block grad var at the last probe", None), ("seconds", "Time (s)", "s"),
               ("status", "Status", None)]
    row_figure_names = ("block_grad_var.png",)
    row_figure_sources = (BLOCK_STATS,)

    def add_arguments(self, parser):
        parser.add_argument("--model", choices=MODELS, help="run one row with this model")
        parser.add_argument("--lr", type=positive_float, default=0.1, help="learning rate (default 0.1)")
        parser.add_argument("--epochs", type=positive_int, default=None, help="epochs (default: the preset's)")
        parser.add_argument("--batch-size", type=positive_int, default=128,
                            help="batch size, also of the probe (default 128)")
        parser.add_argument("--train-subset", type=positive_int, default=None,
                            help="train on a stratified subset of N training images (default: the preset's)")
        parser.add_argument("--full-train", action="store_true", help="use the whole training split (no subset)")
        parser.add_argument("--n-val", type=positive_int, default=2500, help="validation images held out (default 2500)")
        parser.add_argument("--width", type=positive_int, default=16,
                            help="filters of the first scale; the others double it (default 16: 16, 32, 64)")
        parser.add_argument("--blocks-per-scale", type=positive_int, default=5,
                            help="residual blocks per scale (default 5)")

    def rows(self, args):
        models = [args.model] if args.model else list(MODELS)
        return [(row_name(model, args.lr), self.row_config(args, model)) for model in models]

    def row_flags(self, name, config):
        return ["--model", config["model"]]

    def row_config(self, args, model):
        """Every setting of one row (written to its config.json; a re-run must match it)."""
        preset = self.presets[args.preset]
        epochs = args.epochs or preset.epochs
        subset = None if args.full_train else (args.train_subset or preset.train_subset)
        probes = sorted({epochs if e == "last" else e for e in preset.probe_epochs if e == "last" or e <= epochs})
        return {
            "study": self.name, "preset": args.preset, "model": model, **MODEL_VARIANTS[model], "lr": args.lr,
            "epochs": epochs, "batch_size": args.batch_size, "seed": args.seed, "dataset": "cifar10",
            "train_subset": subset, "n_val": args.n_val, "split_seed": 0,
            "val_subset": preset.val_subset, "test_subset": preset.test_subset,
            "optimizer": "SGD", "momentum": 0.9, "weight_decay": 1e-4, "nesterov": False,
            "scheduler": "MultiStepLR", "milestones": [m for m in preset.milestones if m < epochs], "gamma": 0.1,
            "augment": "crop32-pad4+hflip", "init": "xavier_uniform, zero biases",
            "num_filters": [args.width, 2 * args.width, 4 * args.width],
            "num_blocks_per_scale": args.blocks_per_scale, "probe_epochs": probes,
            "probe_batch": f"first {args.batch_size} training images, unaugmented, BN in train mode",
            "minigrad_version": minigrad.__version__, "threads": args.threads,
        }

    def run_row(self, row):
        from minigrad.data import BatchLoader
        c = row.config
        splits = row.splits()
        minigrad.manual_seed(c["seed"])
        model = build_resnet(c["model"], num_filters=c["num_filters"], num_blocks_per_scale=c["num_blocks_per_scale"],
                             num_classes=splits.num_classes)
        optimizer = optim.SGD(model.parameters(), lr=c["lr"], momentum=c["momentum"],
                              weight_decay=c["weight_decay"], nesterov=c["nesterov"])
        scheduler = optim.lr_scheduler.MultiStepLR(optimizer, milestones=c["milestones"], gamma=c["gamma"])
        batch = c["batch_size"]
        train, val, test = row.loaders(batch, val_subset=c["val_subset"], test_subset=c["test_subset"])
        probe_x, probe_y = next(iter(BatchLoader(splits.train_images[:batch], splits.train_labels[:batch], batch,
                                                 mean=splits.mean, std=splits.std).epoch()))
        probe = BlockProbe(row.path / BLOCK_STATS, probe_x, probe_y, c["probe_batch"], c["probe_epochs"])
        trainer = row.trainer(model, optimizer, train, val, scheduler=scheduler, test_loader=test,
                              callbacks=[probe], plots=True)
        return row.fit(trainer)

    def record(self, folder):
        record = training_record(folder)
        config = load_config(folder)
        points = load_block_stats(folder)["points"] if (folder / BLOCK_STATS).exists() else []
        end_label = points[-1]["label"] if points and points[-1]["epoch"] > 0 else None
        record.update({
            "bn": "yes" if config.get("batch_norm") else "no", "residual": "yes" if config.get("residual") else "no",
            "var_init": _format_range(*_variance_range(points, "init")),
            "var_end": _format_range(*_variance_range(points, end_label)) if end_label else "-",
            "end_label": end_label, "input_block_change": _input_block_change(points)})
        return record

    def sort_folders(self, folders):
        order = {m: i for i, m in enumerate(MODELS)}
        return sorted(folders, key=lambda f: (order.get(load_config(f).get("model"), 99), f.name))

    def table_title(self, records, preset):
        return f"BN vs residual branches in ResNet-15 (CIFAR-10, preset {preset})"

    def findings(self, records, folders):
        """The paper's claims against this run: Table 1's order and Model-3's divergence."""
        notes = ["Paper (Table 1, full training): Model-1 92.5%, Model-2 90.6%, Model-3 9.09% (diverges). "
                 "Chance level: 10.0%."]
        by_model = {r["model"]: r for r in records}
        m1, m2, m3 = (by_model.get(m) for m in MODELS)
        if m1 and m2 and m1["test_acc"] is not None and m2["test_acc"] is not None:
            notes.append(f"Model-1 minus Model-2 test accuracy: {100 * (m1['test_acc'] - m2['test_acc']):+.2f} points.")
        if m3 and m3["status"] == "finished":
            notes.append(f"Model-3 finished without a non-finite loss (the paper's diverged); final train accuracy "
                         f"{format_cell(m3['train_acc'], 'pct')}% (chance 10%).")
        elif m3:
            notes.append(f"Model-3: {m3['status']}.")
        for r in records:
            change = r["input_block_change"]
            moved = "" if change is None else f"; the input-side block's variance moved x{change:.1e} from init"
            notes.append(f"{r['model']}: per-block gradient variance at init {r['var_init']}; "
                         f"at {r['end_label'] or 'the end'} {r['var_end']}{moved}.")
        notes.append("Training recipe: the paper gives none. Xavier init and zero biases are the paper's; SGD momentum "
                     "0.9, lr 0.1, weight decay 1e-4, batch 128, x0.1 steps, the number of epochs, widths 16/32/64, "
                     "stem and head and crop+flip augmentation are our choices (each row's config.json has every "
                     "setting).")
        notes.append("Block gradient variance: one fixed batch (first training images, unaugmented, BN in train "
                     "mode), mean over features of the variance over the batch of d loss / d block output.")
        return notes

    def figures(self, records, folders, out_dir):
        return draw_study_figures(folders, out_dir)

    def draw_row_figures(self, folder):
        return draw_row_figures(folder)


# ----------------------------------------------------------------------------------------- the probe
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


class BlockProbe(Callback):
    """Trainer callback: ``probe_blocks`` on a fixed batch at the start of a fresh run (epoch 0) and at the
    end of each epoch in ``epochs``, kept in ``path`` (block_stats.json) and in the checkpoint."""

    state_key = "block_probe"

    def __init__(self, path, x, y, description, epochs):
        self.path, self.x, self.y, self.epochs = Path(path), x, y, set(epochs)
        self.record = {"probe": description, "points": []}

    def on_fit_start(self, trainer, start_epoch):
        if start_epoch == 1:  # a fresh run: the model is at its initialisation
            self.record["points"] = []
            if 0 in self.epochs:
                self.probe(trainer.model, 0, "init")
        else:
            write_json_atomic(self.path, json_safe(self.record))  # the file as the checkpoint had it

    def on_epoch_end(self, trainer, epoch, metrics):
        if epoch in self.epochs:
            self.probe(trainer.model, epoch, "end" if epoch == trainer.epochs else f"epoch {epoch}")

    def probe(self, model, epoch, label):
        point = {"epoch": epoch, "label": label, **probe_blocks(model, nn.CrossEntropyLoss(), self.x, self.y)}
        self.record["points"] = [p for p in self.record["points"] if p["epoch"] != epoch] + [json_safe(point)]
        write_json_atomic(self.path, self.record)
        return point

    def state_dict(self):
        return self.record

    def load_state_dict(self, state):
        self.record = state


# ----------------------------------------------------------------------------------------- figures
def load_block_stats(path):
    """block_stats.json (a row folder or the file) as a dict."""
    import json
    path = Path(path)
    with open(path / BLOCK_STATS if path.is_dir() else path, encoding="utf-8") as f:
        return json.load(f)


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
    points = load_block_stats(folder)["points"] if (folder / BLOCK_STATS).exists() else []
    if not points:
        return []
    model = load_config(folder).get("model", folder.name)
    names = list(points[0]["blocks"])
    fig = new_figure(12, 4.5, layout="tight")
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
        fig = new_figure(max(7.0, 0.2 * len(bn_names) + 2), 4.5, layout="tight")
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
        fig = new_figure(7.0, 4.5, layout="tight")
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
        fig = new_figure(5.0 * len(labels), 4.5, layout="tight")
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


# ----------------------------------------------------------------------------------------- table cells
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


STUDY = ResNetBN()


def main(argv=None):
    return study.main(STUDY, argv)


if __name__ == "__main__":
    sys.exit(main())
