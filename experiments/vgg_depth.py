"""The VGG depth study of the MLP coursework: VGG08 learns, VGG38 does not, BN and residuals fix it.

    python -m experiments.vgg_depth                      # quick preset: CIFAR-10, 3 rows, minutes
    python -m experiments.vgg_depth --preset full --download   # the report's protocol on CIFAR-100
    python -m experiments.vgg_depth --model VGG38_BN --lr 1e-2 --epochs 2   # one row
    python -m experiments.vgg_depth --list | --print-commands | --collect DIR [DIR ...]
    python -m experiments.vgg_depth --preset full --launcher slurm --time-limit 720   # rows as SLURM jobs

Settings of the report (and the course's code): Adam lr 1e-3 (no weight decay), CosineAnnealingLR(T_max =
epochs, eta_min = 2e-5) stepped per epoch, batch 100, crop + flip augmentation, 47,500 / 2,500 split,
test on the best-validation checkpoint. Normalisation: the full preset uses the course's fixed constants
(mean 0.4914, 0.4822, 0.4465; std 0.2023, 0.1994, 0.2010, SOURCE-NOTES A.3), the quick preset the
per-channel mean and std of the training split. Each row is a run folder ``OUT/<model>-lr<lr>/``; the
study writes ``OUT/results.md``, ``results.csv``, ``manifest.json`` and figures: training curves,
gradient flow at the first and last epoch, and mean |grad| per layer at every epoch (the report's
Figures 2, 3 and 5).
"""
import math
import sys

import numpy as np

import minigrad
from minigrad import optim
from minigrad.models.vgg import build_vgg, parse_vgg_name
from minigrad.runs import load_grad_stats

from . import study
from .study import Preset, Study, format_lr, positive_float, positive_int, row_name, training_record


class VGGDepth(Study):
    name = "vgg_depth"
    title = "VGG depth study"
    description = __doc__
    presets = {
        "quick": Preset(
            "VGG08, VGG38 and VGG38 BN+RC on a 4,000-image CIFAR-10 training subset for 4 epochs",
            dataset="cifar10", epochs=4, train_subset=4000, normalization="split",
            rows=(("VGG08", 1e-3), ("VGG38", 1e-3), ("VGG38_BN_RC", 1e-3))),
        "full": Preset(
            "the report's Table 1: seven rows, CIFAR-100, 100 epochs each, the course's normalisation constants",
            dataset="cifar100", epochs=100, train_subset=None, normalization="course",
            rows=(("VGG08", 1e-3), ("VGG38", 1e-3), ("VGG38_BN", 1e-3), ("VGG38_RC", 1e-3),
                  ("VGG38_BN_RC", 1e-3), ("VGG38_BN", 1e-2), ("VGG38_BN_RC", 1e-2))),
    }
    columns = [("model", "Model", None), ("lr", "LR", "sci"), ("params", "# Params", "int"),
               ("train_loss", "Train loss", None), ("train_acc", "Train acc %", "pct"),
               ("val_loss", "Val loss", None), ("val_acc", "Val acc %", "pct"),
               ("test_acc", "Test acc %", "pct"), ("seconds", "Time (s)", "s"), ("status", "Status", None)]
    row_figure_names = ("training_curves.png", "grad_flow_first.png", "grad_flow_last.png", "grad_flow_epochs.png")
    row_figure_sources = ("metrics.csv", "grad_stats.json")

    def add_arguments(self, parser):
        parser.add_argument("--model", type=_vgg_name,
                            help="run one row with this model (VGG08, VGG38, VGG38_BN, VGG38_RC, VGG38_BN_RC, ...)")
        parser.add_argument("--lr", type=positive_float, default=None,
                            help="learning rate (default 1e-3; without --model: of every row)")
        parser.add_argument("--epochs", type=positive_int, default=None, help="epochs (default: the preset's)")
        parser.add_argument("--batch-size", type=positive_int, default=100, help="batch size (default 100)")
        parser.add_argument("--dataset", choices=("cifar10", "cifar100"), default=None,
                            help="dataset (default: the preset's; quick uses cifar10, full cifar100)")
        parser.add_argument("--train-subset", type=positive_int, default=None,
                            help="train on a stratified subset of N training images (default: the preset's)")
        parser.add_argument("--full-train", action="store_true", help="use the whole training split (no subset)")
        parser.add_argument("--val-size", type=positive_int, default=2500,
                            help="validation images held out of the 50,000 (stratified, split seed 0; default 2500)")
        parser.add_argument("--test-subset", type=positive_int, default=None,
                            help="evaluate on a stratified subset of N test images (default: all 10,000)")
        parser.add_argument("--reduction-shortcut", choices=("none", "avgpool", "conv1x1"), default="none",
                            help="residual connections in the reduction blocks too (the report's section 5.1)")
        parser.add_argument("--scheduler-interval", choices=("epoch", "iteration"), default="epoch",
                            help="step the cosine schedule per epoch (the reference results) or per iteration "
                                 "(the 2023 course code, T_max counted in iterations)")

    def rows(self, args):
        preset = self.presets[args.preset]
        if args.model:
            models = [(args.model, args.lr or 1e-3)]
        else:
            models = [(model, args.lr or lr) for model, lr in preset.rows]
        return [(row_name(model, lr), self.row_config(args, model, lr)) for model, lr in models]

    def row_flags(self, name, config):
        return ["--model", config["model"], "--lr", format_lr(config["lr"])]

    def row_config(self, args, model, lr):
        """Every setting of one row (written to its config.json; a re-run must match it)."""
        preset = self.presets[args.preset]
        subset = None if args.full_train else (args.train_subset or preset.train_subset)
        epochs = args.epochs or preset.epochs
        return {
            "study": self.name, "preset": args.preset, "model": model, "lr": lr,
            "epochs": epochs, "batch_size": args.batch_size, "seed": args.seed,
            "dataset": args.dataset or preset.dataset, "train_subset": subset, "n_val": args.val_size,
            "split_seed": 0, "test_subset": args.test_subset, "normalization": preset.normalization,
            "optimizer": "Adam", "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0,
            "scheduler": "CosineAnnealingLR", "T_max": epochs if args.scheduler_interval == "epoch" else 100,
            "eta_min": 2e-5, "scheduler_interval": args.scheduler_interval,
            "augment": "crop32-pad4+hflip", "reduction_shortcut": args.reduction_shortcut,
            "num_filters": 32, "minigrad_version": minigrad.__version__, "threads": args.threads,
        }

    def run_row(self, row):
        c = row.config
        splits = row.splits()
        minigrad.manual_seed(c["seed"])
        model = build_vgg(c["model"], num_classes=splits.num_classes, reduction_shortcut=c["reduction_shortcut"],
                          num_filters=c["num_filters"])
        optimizer = optim.Adam(model.parameters(), lr=c["lr"], betas=tuple(c["betas"]), eps=c["eps"],
                               weight_decay=c["weight_decay"])
        scheduler = optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=c["T_max"], eta_min=c["eta_min"])
        train, val, test = row.loaders(c["batch_size"], test_subset=c["test_subset"])
        trainer = row.trainer(model, optimizer, train, val, scheduler=scheduler, test_loader=test,
                              scheduler_interval=c["scheduler_interval"])
        return row.fit(trainer)

    def record(self, folder):
        return training_record(folder)

    def table_title(self, records, preset):
        return f"VGG depth study ({records[0]['dataset'] if records else '?'}, preset {preset})"

    def findings(self, records, folders):
        """The study's claims, measured: chance-level VGG38, BN+RC above it, vanishing early gradients."""
        by_model = {r["model"]: (r, f) for r, f in zip(records, folders) if r["lr"] == 1e-3}
        if not records:
            return []
        num_classes = 100 if records[0]["dataset"] == "cifar100" else 10
        chance = 1.0 / num_classes
        notes = [f"Chance level: {100 * chance:.1f}% ({num_classes} classes)."]
        if "VGG38" in by_model and by_model["VGG38"][0]["val_acc"] is not None:
            acc = by_model["VGG38"][0]["val_acc"]
            verdict = "at chance: it does not learn" if abs(acc - chance) <= 0.05 else "above chance"
            notes.append(f"VGG38 final val accuracy {100 * acc:.2f}% ({verdict}).")
            if "VGG38_BN_RC" in by_model and by_model["VGG38_BN_RC"][0]["val_acc"] is not None:
                gain = by_model["VGG38_BN_RC"][0]["val_acc"] - acc
                notes.append(f"VGG38 BN+RC: {100 * gain:+.2f} points over VGG38.")
        if "VGG08" in by_model and "VGG38" in by_model:
            try:
                first = [load_grad_stats(by_model[m][1])["epochs"][0]["mean"] for m in ("VGG08", "VGG38")]
            except (OSError, KeyError, IndexError, ValueError):
                first = None
            if first:
                ratio = early_layer_ratio(*first)
                verdict = ("vanishing gradients in VGG38" if ratio >= VANISHING_RATIO
                           else f"less than {VANISHING_RATIO}x: no clear vanishing")
                notes.append(f"First epoch, first 3 weight layers from the input: VGG08's mean |grad| is "
                             f"{ratio:.3g}x VGG38's ({verdict}).")
        normalization = {r.get("normalization") for r in map(_config_of, folders)}
        if "course" in normalization:
            notes.append("Inputs normalised with the course's constants (mean 0.4914, 0.4822, 0.4465; std 0.2023, "
                         "0.1994, 0.2010), as the report's code does.")
        return notes

    def figures(self, records, folders, out_dir):
        from minigrad import plots
        finished = [f for f, r in zip(folders, records) if (f / "metrics.csv").exists() and r["epochs"]]
        if not finished:
            return []
        figures = plots.plot_training_curves(finished, out_dir / "training_curves.png")
        for epoch in ("first", "last"):
            figures += plots.plot_grad_flow(finished, out_dir / f"grad_flow_{epoch}.png", epoch=epoch, log=True)
        figures += plots.plot_grad_flow_epochs(finished, out_dir / "grad_flow_epochs.png")
        return figures

    def draw_row_figures(self, folder):
        from minigrad import plots
        if not (folder / "metrics.csv").exists():
            return []
        figures = plots.plot_training_curves([folder], folder / "training_curves.png")
        for epoch in ("first", "last"):
            figures += plots.plot_grad_flow([folder], folder / f"grad_flow_{epoch}.png", epoch=epoch, log=True)
        figures += plots.plot_grad_flow_epochs([folder], folder / "grad_flow_epochs.png")
        return figures


def _vgg_name(text):
    import argparse
    try:
        parse_vgg_name(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text.upper()


def _config_of(folder):
    from minigrad.runs import load_config
    return load_config(folder)


# ----------------------------------------------------------------------------------------- the measurements
VANISHING_RATIO = 100  # DECISIONS 17: VGG38's early layers at least 100x below VGG08's


def _weights_mean_abs(stats):
    """mean |grad| of weight tensors (biases excluded) in forward order: [(name, value)]."""
    return [(k, v["mean_abs"]) for k, v in stats.items() if ":" not in k and k.endswith("weight")]


def early_layer_ratio(stats_shallow, stats_deep, n_layers=3):
    """Geometric mean over the first ``n_layers`` weights (by position from the input) of shallow/deep."""
    a, b = _weights_mean_abs(stats_shallow), _weights_mean_abs(stats_deep)
    ratios = [va / vb for (_, va), (_, vb) in zip(a[:n_layers], b[:n_layers]) if vb > 0]
    if not ratios:
        return math.inf
    return float(np.exp(np.mean(np.log(ratios))))


STUDY = VGGDepth()


def main(argv=None):
    return study.main(STUDY, argv)


if __name__ == "__main__":
    sys.exit(main())
