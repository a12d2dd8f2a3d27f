"""The VGG depth study of the MLP coursework: VGG08 learns, VGG38 does not, BN and residuals fix it.

    python -m experiments.vgg_depth                      # quick preset: CIFAR-10, 3 rows, minutes
    python -m experiments.vgg_depth --preset full --download   # the report's protocol on CIFAR-100
    python -m experiments.vgg_depth --model VGG38_BN --lr 1e-2 --epochs 2   # one row
    python -m experiments.vgg_depth --list | --print-commands | --collect DIR [DIR ...]
    python -m experiments.vgg_depth --preset full --launcher slurm --time-limit 720   # rows as SLURM jobs

Settings of the report (and the course's code): Adam lr 1e-3 (no weight decay), CosineAnnealingLR(T_max =
epochs, eta_min = 2e-5) stepped per epoch, batch 100, crop + flip augmentation, 47,500 / 2,500 split,
test on the best-validation checkpoint. Each row is a run folder ``OUT/<model>-lr<lr>/``; the study writes
``OUT/results.md``, ``results.csv``, ``manifest.json`` and figures (training curves, gradient flow).
"""
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import minigrad
from minigrad import nn, optim
from minigrad.models.vgg import build_vgg, parse_vgg_name
from minigrad.runs import load_config, load_grad_stats, load_metrics, load_summary, prepare_run_dir

from . import common, launch

STUDY = "vgg_depth"


@dataclass(frozen=True)
class Preset:
    dataset: str
    epochs: int
    rows: tuple
    train_subset: int = None
    batch_size: int = 100
    description: str = ""
    extra: dict = field(default_factory=dict)


PRESETS = {
    "quick": Preset(
        dataset="cifar10", epochs=4, train_subset=4000,
        rows=(("VGG08", 1e-3), ("VGG38", 1e-3), ("VGG38_BN_RC", 1e-3)),
        description="VGG08, VGG38 and VGG38 BN+RC on a 4,000-image CIFAR-10 training subset for 4 epochs",
    ),
    "full": Preset(
        dataset="cifar100", epochs=100,
        rows=(("VGG08", 1e-3), ("VGG38", 1e-3), ("VGG38_BN", 1e-3), ("VGG38_RC", 1e-3),
              ("VGG38_BN_RC", 1e-3), ("VGG38_BN", 1e-2), ("VGG38_BN_RC", 1e-2)),
        description="the report's Table 1: seven rows, CIFAR-100, 100 epochs each",
    ),
}


def build_parser():
    parser = common.make_parser(STUDY, __doc__)
    common.add_common_args(parser, STUDY, PRESETS)
    parser.add_argument("--model", help="run one row with this model (VGG08, VGG38, VGG38_BN, VGG38_RC, VGG38_BN_RC, ...)")
    parser.add_argument("--lr", type=float, default=None, help="learning rate of the --model row (default 1e-3)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs (default: the preset's)")
    parser.add_argument("--batch-size", type=int, default=None, help="batch size (default 100)")
    parser.add_argument("--dataset", choices=("cifar10", "cifar100"), default=None,
                        help="dataset (default: the preset's; quick uses cifar10, full cifar100)")
    parser.add_argument("--train-subset", type=int, default=None,
                        help="train on a stratified subset of N training images (default: the preset's)")
    parser.add_argument("--full-train", action="store_true", help="use the whole training split (no subset)")
    parser.add_argument("--val-size", type=int, default=2500,
                        help="validation images held out of the 50,000 (stratified, split seed 0; default 2500)")
    parser.add_argument("--test-subset", type=int, default=None,
                        help="evaluate on a stratified subset of N test images (default: all 10,000)")
    parser.add_argument("--reduction-shortcut", choices=("none", "avgpool", "conv1x1"), default="none",
                        help="residual connections in the reduction blocks too (the report's section 5.1)")
    parser.add_argument("--scheduler-interval", choices=("epoch", "iteration"), default="epoch",
                        help="step the cosine schedule per epoch (the reference results) or per iteration "
                             "(the 2023 course code, T_max counted in iterations)")
    parser.add_argument("--list", action="store_true", help="list the rows of the preset and exit")
    parser.add_argument("--print-commands", action="store_true", help="print one command per row and exit")
    parser.add_argument("--collect", nargs="+", type=Path, metavar="DIR",
                        help="build the table and figures from finished run folders (or study folders), and "
                             "say which rows are missing, running or failed")
    launch.add_launcher_args(parser)
    return parser


def study_rows(args):
    """The (model, lr) rows this command runs."""
    preset = PRESETS[args.preset]
    if args.model:
        parse_vgg_name(args.model)  # fails early with a clear message
        return [(args.model.upper(), args.lr if args.lr is not None else 1e-3)]
    if args.lr is not None:
        return [(model, args.lr) for model, _ in preset.rows]
    return list(preset.rows)


def row_config(args, model, lr):
    """Every setting of one row (written to its config.json; a re-run must match it)."""
    preset = PRESETS[args.preset]
    subset = None if args.full_train else (args.train_subset if args.train_subset is not None else preset.train_subset)
    epochs = args.epochs if args.epochs is not None else preset.epochs
    return {
        "study": STUDY, "preset": args.preset, "model": model, "lr": lr,
        "epochs": epochs, "batch_size": args.batch_size or preset.batch_size, "seed": args.seed,
        "dataset": args.dataset or preset.dataset, "train_subset": subset, "n_val": args.val_size, "split_seed": 0,
        "test_subset": args.test_subset,
        "optimizer": "Adam", "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0,
        "scheduler": "CosineAnnealingLR", "T_max": epochs if args.scheduler_interval == "epoch" else 100,
        "eta_min": 2e-5, "scheduler_interval": args.scheduler_interval,
        "augment": "crop32-pad4+hflip", "reduction_shortcut": args.reduction_shortcut,
        "num_filters": 32, "minigrad_version": minigrad.__version__, "threads": args.threads,
    }


def command_for(args, model, lr):
    parts = [sys.executable, "-m", f"experiments.{STUDY}", "--preset", args.preset, "--model", model,
             "--lr", common.format_lr(lr), "--out", str(args.out), "--seed", str(args.seed), "--resume"]
    for flag, value in (("--epochs", args.epochs), ("--batch-size", args.batch_size), ("--dataset", args.dataset),
                        ("--train-subset", args.train_subset), ("--data-dir", args.data_dir),
                        ("--val-size", args.val_size if args.val_size != 2500 else None),
                        ("--test-subset", args.test_subset),
                        ("--threads", args.threads)):
        if value is not None:
            parts += [flag, str(value)]
    if args.full_train:
        parts.append("--full-train")
    if args.reduction_shortcut != "none":
        parts += ["--reduction-shortcut", args.reduction_shortcut]
    if args.scheduler_interval != "epoch":
        parts += ["--scheduler-interval", args.scheduler_interval]
    if args.download:
        parts.append("--download")
    return " ".join(parts)


def run_row(config, out_dir, *, data_dir=None, download=False, resume=False, progress=True):
    """Train one row into ``out_dir/<row>/`` (or reuse it when finished); returns its summary dict."""
    from minigrad.data import BatchLoader, stratified_subset
    from minigrad.train import Trainer

    name = common.row_name(config["model"], config["lr"])
    run = prepare_run_dir(out_dir, name, config, resume=resume)
    if run.done:
        common.say(f"[{name}] already {run.summary.get('status')}; reusing {run.path}")
        return run.summary
    splits = common.load_splits(config, data_dir, download)
    minigrad.manual_seed(config["seed"])
    model = build_vgg(config["model"], num_classes=splits.num_classes,
                      reduction_shortcut=config["reduction_shortcut"], num_filters=config["num_filters"])
    optimizer = optim.Adam(model.parameters(), lr=config["lr"], betas=tuple(config["betas"]),
                           eps=config["eps"], weight_decay=config["weight_decay"])
    scheduler = optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config["T_max"], eta_min=config["eta_min"])
    batch = config["batch_size"]
    train_loader = BatchLoader(splits.train_images, splits.train_labels, batch, shuffle=True, augment=True,
                               mean=splits.mean, std=splits.std)
    val_loader = BatchLoader(splits.val_images, splits.val_labels, batch, mean=splits.mean, std=splits.std)
    test_images, test_labels = splits.test_images, splits.test_labels
    if config.get("test_subset") is not None and config["test_subset"] < len(test_labels):
        keep = stratified_subset(test_labels, config["test_subset"], seed=0)
        test_images, test_labels = test_images[keep], test_labels[keep]
    test_loader = BatchLoader(test_images, test_labels, batch, mean=splits.mean, std=splits.std)
    common.say(f"[{name}] {model.num_parameters():,} parameters, {len(train_loader)} steps/epoch, "
               f"{config['epochs']} epochs -> {run.path}")
    trainer = Trainer(model, nn.CrossEntropyLoss(), optimizer, train_loader, val_loader,
                      scheduler=scheduler, test_loader=test_loader, epochs=config["epochs"],
                      run_dir=run.path, seed=config["seed"], config=config,
                      scheduler_interval=config["scheduler_interval"], progress=progress)
    trainer.fit(resume=run.resume)
    return load_summary(run.path)


# ----------------------------------------------------------------------------------------- collecting
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


def row_record(folder):
    """One table row from a run folder."""
    config, summary = load_config(folder), (load_summary(folder) if (folder / "summary.json").exists() else {})
    metrics = load_metrics(folder) if (folder / "metrics.csv").exists() else []
    last = metrics[-1] if metrics else {}
    return {
        "row": folder.name, "folder": str(folder), "model": config.get("model"), "lr": config.get("lr"),
        "preset": config.get("preset"), "dataset": config.get("dataset"),
        "params": summary.get("num_parameters"), "epochs": len(metrics),
        "train_loss": last.get("train_loss"), "train_acc": last.get("train_acc"),
        "val_loss": last.get("val_loss"), "val_acc": last.get("val_acc"),
        "best_val_acc": summary.get("best_val_acc"), "test_acc": summary.get("test_acc"),
        "seconds": summary.get("seconds"), "status": summary.get("status", "missing summary"),
    }


COLUMNS = [("model", "Model", None), ("lr", "LR", "sci"), ("params", "# Params", "int"),
           ("train_loss", "Train loss", None), ("train_acc", "Train acc %", "pct"),
           ("val_loss", "Val loss", None), ("val_acc", "Val acc %", "pct"),
           ("test_acc", "Test acc %", "pct"), ("seconds", "Time (s)", "s"), ("status", "Status", None)]


VANISHING_RATIO = 100  # DECISIONS 17: VGG38's early layers at least 100x below VGG08's


def findings(records, folders):
    """The study's claims, measured: chance-level VGG38, BN+RC above it, vanishing early gradients."""
    by_model = {r["model"]: (r, f) for r, f in zip(records, folders) if r["lr"] == 1e-3}
    notes = []
    if not records:
        return notes
    num_classes = 100 if records[0]["dataset"] == "cifar100" else 10
    chance = 1.0 / num_classes
    notes.append(f"Chance level: {100 * chance:.1f}% ({num_classes} classes).")
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
            ratio = early_layer_ratio(*first)
            verdict = ("vanishing gradients in VGG38" if ratio >= VANISHING_RATIO
                       else f"less than {VANISHING_RATIO}x: no clear vanishing")
            notes.append(f"First epoch, first 3 weight layers from the input: VGG08's mean |grad| is "
                         f"{ratio:.3g}x VGG38's ({verdict}).")
        except (OSError, KeyError, IndexError, ValueError):
            pass
    return notes


def collect(paths, out_dir, preset=None):
    """Table, manifest and figures from the row folders under ``paths``.

    Returns (table path, records, figures, row states): the states (``launch.row_states``) say which rows
    of the preset are finished, running, pending (cluster jobs), failed (with the job's log) or missing.
    """
    from minigrad import plots

    folders = common.find_row_dirs(paths)
    if preset is not None:
        folders = [f for f in folders if load_config(f).get("preset") == preset]
    presets = {load_config(f).get("preset") for f in folders}
    if len(presets) > 1:
        raise ValueError(f"the folders mix presets {sorted(map(str, presets))}; collect one preset at a time")
    records = [row_record(f) for f in folders]
    states = _row_states(paths, folders, preset or next(iter(presets), None))
    for record in records:  # a dead job's row says "running" in its summary: the job state knows better
        if record["row"] in states and states[record["row"]].status != "unknown":
            record["status"] = states[record["row"]].status
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    title = f"VGG depth study ({records[0]['dataset'] if records else '?'}, preset {next(iter(presets), '?')})"
    notes = findings(records, folders)
    table = common.write_study_table(out_dir, records, COLUMNS, title, notes=notes)
    common.write_manifest(out_dir, STUDY, next(iter(presets), None),
                          [{"row": r["row"], "folder": r["folder"], "status": r["status"]} for r in records])
    finished = [f for f, r in zip(folders, records) if (f / "metrics.csv").exists() and r["epochs"]]
    figures = []  # the study's figures (each row folder gets the same three of its own)
    if finished:
        figures += plots.plot_training_curves(finished, out_dir / "training_curves.png")
        for epoch in ("first", "last"):
            figures += plots.plot_grad_flow(finished, out_dir / f"grad_flow_{epoch}.png", epoch=epoch, log=True)
        for folder in finished:
            if _row_figures_stale(folder):  # the Trainer drew them at the end of the row; redraw only if not
                plots.plot_training_curves([folder], folder / "training_curves.png")
                for epoch in ("first", "last"):
                    plots.plot_grad_flow([folder], folder / f"grad_flow_{epoch}.png", epoch=epoch, log=True)
    return table, records, figures, list(states.values())


ROW_FIGURES = ("training_curves.png", "grad_flow_first.png", "grad_flow_last.png")


def _row_figures_stale(folder):
    """True if a row figure is missing or older than the row's metrics.csv."""
    metrics = (folder / "metrics.csv").stat().st_mtime
    return any(not (folder / f).exists() or (folder / f).stat().st_mtime < metrics for f in ROW_FIGURES)


def _row_states(paths, folders, preset):
    """launch.RowState per row: the preset's rows and every row folder or submitted job under ``paths``."""
    expected = [common.row_name(m, lr) for m, lr in PRESETS[preset].rows] if preset in PRESETS else []
    states = {}
    for path in map(Path, paths):
        if (path / "config.json").exists():  # a row folder: its study folder knows its job
            states.update({s.row: s for s in launch.row_states(path.parent) if s.row == path.name})
        elif path.is_dir():
            states.update({s.row: s for s in launch.row_states(path, expected)})
    for name in expected:
        states.setdefault(name, launch.RowState(name, "missing", None, detail="no run folder found"))
    return {name: state for name, state in states.items()
            if name in expected or any(f.name == name for f in folders) or state.job_id}


# ----------------------------------------------------------------------------------------- main
def main(argv=None):
    args = build_parser().parse_args(argv)
    if args.out is None:
        args.out = common.default_out(STUDY)
    rows = study_rows(args)
    if args.list:
        preset = PRESETS[args.preset]
        common.say(f"preset {args.preset}: {preset.description}")
        for model, lr in rows:
            common.say(f"  {common.row_name(model, lr)}")
        return 0
    if args.print_commands:
        for model, lr in rows:
            common.say(command_for(args, model, lr))
        return 0
    if args.collect:
        table, records, figures, states = collect(args.collect, args.out)
        _report(table, records, figures, states)
        return 0

    if args.launcher != "none":  # the rows as submitit jobs (experiments.launch): slurm returns at once
        result = launch.launch_rows(run_row, [(common.row_name(m, lr), row_config(args, m, lr)) for m, lr in rows],
                                    args, study=STUDY)
        if result.code == 2 or not result.waited:
            return result.code
        failed = result.code
    else:
        threads = common.apply_threads(args.threads)
        common.say(f"VGG depth study, preset {args.preset}: {len(rows)} row(s) -> {args.out} ({threads} threads)")
        failed = 0
        for model, lr in rows:
            config = row_config(args, model, lr)
            try:
                run_row(config, args.out, data_dir=args.data_dir, download=args.download, resume=args.resume,
                        progress=not args.no_progress)
            except (FileNotFoundError, ValueError, RuntimeError, OSError) as error:
                if common.is_setup_error(error):
                    print(f"error: {error}", file=sys.stderr, flush=True)
                    return 2
                failed += 1
                print(f"error: row {common.row_name(model, lr)} failed: {error}", file=sys.stderr, flush=True)
    names = {common.row_name(m, lr) for m, lr in rows}
    table, records, figures, states = collect([args.out], args.out, preset=args.preset)
    _report(table, [r for r in records if r["row"] in names] or records, figures,
            [s for s in states if s.row in names])
    return 1 if failed else 0


def _report(table, records, figures, states=()):
    common.say("")
    common.say(Path(table).read_text())
    for line in launch.describe_states(states) if states else ():
        common.say(line)
    common.say(f"Results table: {table}")
    common.say(f"Results CSV:   {Path(table).with_suffix('.csv')}")
    for figure in figures:
        common.say(f"Figure:        {figure}")
    if figures:
        common.say("Each row's folder has its own training_curves.png, grad_flow_first.png and grad_flow_last.png.")


if __name__ == "__main__":
    common.plain_warnings()
    sys.exit(main())
