"""The degradation of deep plain nets, and residual learning's fix (He et al., CVPR 2016, CIFAR-10).

    python -m experiments.degradation                     # quick preset: plain/resnet 20 and 56, ~15 minutes
    python -m experiments.degradation --preset full       # the paper's recipe, depths 20, 32, 44, 56, 110
    python -m experiments.degradation --nets plain --depths 20 32 --epochs 1   # these rows (a product)
    python -m experiments.degradation --list | --print-commands | --collect DIR [DIR ...]

The claim (the lecture, showing He et al.'s Figure 1): "more layers caused larger training and test error ...
Deeper network not overfitting, but harder to optimize"; residual learning fixes it (Figure 6; Table 6:
ResNet-20/32/44/56/110 test error 8.75/7.51/7.17/6.97/6.43%). The nets: ``minigrad.models.cifar_resnet``
(6n + 2 layers, BN after every conv, He-normal fan_in init, option-A shortcuts; plain = the same without
them). Rows are (plain | resnet) x depth, one folder ``OUT/plain-56/`` each.

Full preset = the paper's recipe: SGD momentum 0.9, weight decay 1e-4, batch 128, lr 0.1 divided by 10 at 32k
and 48k iterations, 173 epochs of the 47,500 / 2,500 split of DECISIONS 6 (64,356 iterations; the paper stops at 64k, on a 45k/5k split), 4-pixel pad +
random crop + flip; 110 layers warm up at lr 0.01 for 400 iterations (the paper: "until the training error is
below 80% (about 400 iterations)"). Quick = the same at lr 0.1 (the schedule's first phase) for 140 iterations
(2 epochs of an 8,960-image subset; 47,500 / 2,500 split, DECISIONS 6), evaluated on subsets: the start of
Figure 1, not its end. The table's test accuracy is the best-validation epoch's (the Trainer's rule; the paper
reports the last model, which the curve's last point measures).

Outputs: ``results.md`` / ``results.csv`` (one line per net, Table 6 beside ours, the findings); per row
``curve.csv`` (``minigrad.callbacks.StepCurve``: training loss and error over each window of iterations, test
loss and error in eval mode at its end); ``error_curves.png`` (Figures 1 and 6: training error dashed, test
error solid, one colour per depth, panels plain and residual), also per row.
"""
import sys
from pathlib import Path

import minigrad
from minigrad import optim
from minigrad.callbacks import StepCurve
from minigrad.models.cifar_resnet import DEPTHS, CifarResNet, blocks_for_depth
from minigrad.runs import load_config

from . import study
from .study import Preset, Study, new_figure, positive_int, row_name, training_record

CURVE = "curve.csv"
EVAL_BATCH = 500
PAPER_TEST_ERROR = {20: 8.75, 32: 7.51, 44: 7.17, 56: 6.97, 110: 6.43}  # He et al. Table 6, ResNets, %
NETS = ("plain", "resnet")


class Degradation(Study):
    name = "degradation"
    title = "Degradation of deep plain nets"
    description = __doc__
    presets = {
        "quick": Preset("plain-20, plain-56, resnet-20, resnet-56: 140 iterations at lr 0.1 (2 epochs of 8,960 "
                        "CIFAR-10 training images)", depths=(20, 56), epochs=2, train_subset=8960, n_val=2500,
                        val_subset=1000, test_subset=2000, milestones=(), curve_every=20, curve_test_subset=500),
        "full": Preset("plain and resnet x 20, 32, 44, 56, 110: the paper's 64k iterations (47,500 / 2,500 split)",
                       depths=DEPTHS, epochs=173, train_subset=None, n_val=2500, val_subset=None, test_subset=None,
                       milestones=(32000, 48000), curve_every=1000, curve_test_subset=None),
    }
    columns = [("model", "Model", None), ("depth", "Depth", None), ("residual", "Residual", "yn"),
               ("params", "# Params", "int"), ("steps", "Iterations", "int"), ("train_loss", "Train loss", "f4"),
               ("train_acc", "Train acc %", "pct"), ("val_acc", "Val acc %", "pct"), ("test_acc", "Test acc %", "pct"),
               ("test_err", "Test err %", "pct"), ("paper_test_err", "He et al. test err % (Table 6)", "pct"),
               ("seconds", "Time (s)", "s"), ("status", "Status", None)]
    row_figure_names = ("error_curves.png",)
    row_figure_sources = (CURVE,)

    def add_arguments(self, parser):
        parser.add_argument("--nets", nargs="+", choices=NETS, default=None, help="plain, resnet (default both)")
        parser.add_argument("--depths", nargs="+", type=_depth, default=None, metavar="D",
                            help="depths 6n + 2 (default: the preset's; rows are every net x every depth)")
        parser.add_argument("--epochs", type=positive_int, default=None, help="epochs (default: the preset's)")
        parser.add_argument("--train-subset", type=positive_int, default=None,
                            help="train on a stratified subset of N training images (default: the preset's)")
        parser.add_argument("--full-train", action="store_true", help="use the whole training split (no subset)")
        parser.add_argument("--val-size", type=positive_int, default=None,
                            help="validation images held out of the 50,000 (default 2500, DECISIONS 6)")
        parser.add_argument("--test-subset", type=positive_int, default=None,
                            help="final test on a stratified subset of N test images (default: the preset's)")

    def rows(self, args):
        preset = self.presets[args.preset]
        return [(row_name(f"{net}-{depth}"), self.row_config(args, net, depth))
                for net in dict.fromkeys(args.nets or NETS) for depth in dict.fromkeys(args.depths or preset.depths)]

    def row_flags(self, name, config):
        return ["--nets", config["net"], "--depths", str(config["depth"])]

    def row_config(self, args, net, depth):
        """Every setting of one row (written to its config.json; a re-run must match it)."""
        p = self.presets[args.preset]
        return {
            "study": self.name, "preset": args.preset, "model": f"{net}-{depth}", "net": net, "depth": depth,
            "residual": net == "resnet", "epochs": args.epochs or p.epochs, "batch_size": 128, "seed": args.seed,
            "dataset": "cifar10", "train_subset": None if args.full_train else (args.train_subset or p.train_subset),
            "n_val": args.val_size or p.n_val, "split_seed": 0, "val_subset": p.val_subset,
            "test_subset": args.test_subset or p.test_subset, "normalization": "split", "optimizer": "SGD",
            "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4, "milestones": list(p.milestones), "gamma": 0.1,
            "warmup_steps": 400 if depth >= 110 else 0, "warmup_lr": 0.01, "augment": "crop32-pad4+hflip",
            "init": "kaiming_normal fan_in (convs), PyTorch default (linear)", "shortcut": "option A",
            "curve_every": p.curve_every, "curve_test_subset": p.curve_test_subset,
            "minigrad_version": minigrad.__version__, "threads": args.threads}

    def run_row(self, row):
        c = row.config
        splits = row.splits()
        minigrad.manual_seed(c["seed"])
        model = CifarResNet(c["depth"], residual=c["residual"], num_classes=splits.num_classes)
        optimizer = optim.SGD(model.parameters(), lr=c["lr"], momentum=c["momentum"], weight_decay=c["weight_decay"])
        scheduler = PaperSchedule(optimizer, c["milestones"], c["gamma"], c["warmup_steps"], c["warmup_lr"])
        train, _, _ = row.loaders(c["batch_size"], test=False)
        _, val, test = row.loaders(EVAL_BATCH, val_subset=c["val_subset"], test_subset=c["test_subset"])
        _, _, curve_test = row.loaders(EVAL_BATCH, test_subset=c["curve_test_subset"])
        trainer = row.trainer(model, optimizer, train, val, scheduler=scheduler, test_loader=test,
                              scheduler_interval="iteration",
                              callbacks=[StepCurve(row.path / CURVE, curve_test, c["curve_every"], split="test")])
        return row.fit(trainer)

    def record(self, folder):
        r, c = training_record(folder), load_config(folder)
        curve = load_curve(folder)
        paper = PAPER_TEST_ERROR.get(c.get("depth")) if c.get("residual") and c.get("dataset") == "cifar10" else None
        r.update(depth=c.get("depth"), residual=c.get("residual"), steps=curve[-1]["step"] if curve else None,
                 test_err=None if r["test_acc"] is None else 1 - r["test_acc"],
                 paper_test_err=None if paper is None else paper / 100)
        return r

    def sort_folders(self, folders):
        return sorted(folders, key=lambda f: (bool(load_config(f).get("residual")), load_config(f).get("depth") or 0))

    def table_title(self, records, preset):
        return f"Degradation: plain against residual nets (CIFAR-10, preset {preset})"

    def findings(self, records, folders):
        done = {(r["residual"], r["depth"]): r for r in records
                if r["train_loss"] is not None and str(r["status"]).startswith("finished")}
        notes = []
        for residual, name in ((False, "plain"), (True, "resnet")):
            depths = sorted(d for res, d in done if res == residual)
            if len(depths) < 2:
                continue
            low, high = done[(residual, depths[0])], done[(residual, depths[-1])]
            higher = high["train_loss"] > low["train_loss"]
            verdict = (("the degradation showed: the deeper plain net is harder to optimise" if higher else
                        "the degradation did NOT show at this budget") if not residual else
                       ("residual learning's fix did NOT show at this budget: the deeper ResNet ends higher too"
                        if higher else "residual learning's fix showed: the deeper ResNet does not end higher"))
            claim = ("Figure 1: plain-56's training error is above plain-20's throughout" if not residual else
                     "Figure 6: the deeper ResNets reach lower training error")
            notes.append("Final training loss (mean over the last epoch, augmented batches, train mode): " +
                         ", ".join(f"{name}-{d} {done[(residual, d)]['train_loss']:.4f}" for d in depths) +
                         f" ({verdict}). He et al. {claim}.")
            if not residual and higher and None not in (high["test_err"], low["test_err"]):
                notes.append(f"Test error plain-{depths[0]} {100 * low['test_err']:.2f}%, plain-{depths[-1]} "
                             f"{100 * high['test_err']:.2f}%: the deeper net is worse on training loss "
                             f"{'and' if high['test_err'] > low['test_err'] else 'but not'} on test error; a higher "
                             "training error rules out overfitting (the lecture: \"not overfitting\").")
        for depth in sorted(d for res, d in done if res and (False, d) in done):
            plain, res = done[(False, depth)]["train_loss"], done[(True, depth)]["train_loss"]
            notes.append(f"Depth {depth}: resnet's final training loss {res:.4f}, plain's {plain:.4f} "
                         f"({'lower' if res < plain else 'not lower'}).")
        paper = sorted((r for r in done.values() if None not in (r["paper_test_err"], r["test_err"])),
                       key=lambda r: r["depth"])
        if paper:
            notes.append("Test error against Table 6 (after 64k iterations): " + ", ".join(
                f"resnet-{r['depth']} {100 * r['test_err']:.2f}% (paper {100 * r['paper_test_err']:.2f}%)" for r in paper))
        if done:
            steps = ", ".join(str(s) for s in sorted({r["steps"] for r in done.values() if r["steps"]})) or "?"
            notes.append(f"One seed; {steps} iterations of batch 128 (the paper: 64,000).")
        return notes

    def figures(self, records, folders, out_dir):
        curves = {f.name: load_curve(f) for f in folders}
        return draw_error_curves(records, curves, Path(out_dir) / "error_curves.png") if any(curves.values()) else []

    def draw_row_figures(self, folder):
        curve = load_curve(folder)
        return draw_error_curves([self.record(folder)], {folder.name: curve}, folder / "error_curves.png") if curve else []


def _depth(text):
    import argparse
    try:
        blocks_for_depth(int(text))
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return int(text)


class PaperSchedule(optim.lr_scheduler.LRScheduler):
    """Per iteration t: ``warmup_lr`` while t < ``warmup_steps``, then lr_0 * gamma ** (milestones <= t)."""

    def __init__(self, optimizer, milestones, gamma=0.1, warmup_steps=0, warmup_lr=0.01, last_epoch=-1):
        self.milestones, self.gamma = sorted(int(m) for m in milestones), gamma
        self.warmup_steps, self.warmup_lr = int(warmup_steps), warmup_lr
        super().__init__(optimizer, last_epoch)

    def get_lr(self):
        t = self.last_epoch
        if t < self.warmup_steps:
            return [self.warmup_lr for _ in self.base_lrs]
        return [lr * self.gamma ** sum(m <= t for m in self.milestones) for lr in self.base_lrs]


def load_curve(folder):
    return StepCurve.read(Path(folder) / CURVE)


# ----------------------------------------------------------------------------------------- figures
def _colours(records):
    depths = sorted({r["depth"] for r in records if r["depth"] is not None})
    return {d: f"C{i}" for i, d in enumerate(depths)}


def draw_error_curves(records, curves, path):
    """He et al.'s Figures 1 and 6: error against iterations, training dashed, test solid; plain | residual."""
    colours, panels = _colours(records), [res for res in (False, True) if any(r["residual"] == res for r in records)]
    fig = new_figure(5.6 * len(panels), 4.4, layout="tight")
    for ax, residual in zip(fig.subplots(1, len(panels), squeeze=False)[0], panels):
        for r in sorted((r for r in records if r["residual"] == residual and curves.get(r["row"])), key=lambda r: r["depth"]):
            points = curves[r["row"]]
            train = [p for p in points if p["train_err"] is not None]
            ax.plot([p["step"] for p in train], [100 * p["train_err"] for p in train], "--", marker=".",
                    color=colours[r["depth"]], linewidth=1.2)
            ax.plot([p["step"] for p in points], [100 * p["test_err"] for p in points], "-", marker=".",
                    color=colours[r["depth"]], linewidth=2, label=r["model"])
        ax.set(xlabel="iterations", ylabel="error (%)", title="residual (ResNet)" if residual else "plain", ylim=(0, 100))
        ax.plot([], [], "k--", linewidth=1.2, label="training error")
        ax.plot([], [], "k-", linewidth=2, label="test error")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("CIFAR-10 error against iterations (He et al. Fig. 1, 6: dashed training error over each window, "
                 "solid test error)", fontsize=9)
    fig.savefig(path, dpi=110)
    return [Path(path)]


STUDY = Degradation()


def main(argv=None):
    return study.main(STUDY, argv)


if __name__ == "__main__":
    sys.exit(main())
