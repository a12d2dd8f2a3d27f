"""BN vs residual branches in a pre-activation ResNet (the BN-in-residual-networks paper, sections 4-5, App. G).

    python -m experiments.resnet_bn                        # quick: Model-1/2/3 on a CIFAR-10 subset (Table 1)
    python -m experiments.resnet_bn --preset resnet99-quick | batch-quick | init-quick | sweep-quick
    python -m experiments.resnet_bn --preset full | resnet99 | batch | init | sweep   # the paper's steps
    python -m experiments.resnet_bn --model Model-3 --lr 0.01 --step-probe 2   # one row
    python -m experiments.resnet_bn --list | --collect DIR

Models (DECISIONS 21): Model-1 BN + shortcuts; Model-2 BN, every shortcut removed; Model-3 shortcuts,
every BN removed (a NaN loss is recorded as ``status: diverged`` with epoch and batch, not a crash).
Presets (``--list`` says what each runs): Model-1/2/3 (Table 1, Figures 5, 6, 8-11, 13); Model-1 ResNet-99
(Figure 7), at batch 128/256/512 (14), with weights N(0, 0.01^2) / N(0, 0.1^2) (15); Model-3 at lr 0.1 to
0.003, probed every few steps of epoch 1 (Figure 12). A preset row's own setting wins over the flag.

Training. The paper gives the network (ResNet-15 on CIFAR-10, Xavier init, zero biases) but no training
recipe: the optimiser, learning rate, schedule, epochs, widths (16/32/64), stem and head are *our*
choices: SGD momentum 0.9, lr 0.1, weight decay 1e-4 on every parameter, batch 128, MultiStepLR (x0.1 at
the preset's milestones, stepped per epoch), crop 32 pad 4 + horizontal flip, 47,500 / 2,500 split.
``full`` trains 200 epochs, probed at epochs 67 and 134 (near steps 25,000 and 50,000); the other full
presets count the paper's steps: train to step 75,000 (resnet99) or 25,000 (batch, init, sweep), probe at
the epochs nearest steps 25k/50k/75k, x0.1 at half and three quarters of the epochs.

The per-block statistic (``minigrad.measure.block_variance``, whose docstring has the maths): one fixed
batch, the first ``batch_size`` training images unaugmented, forward in training mode and backward; per
residual block the batch variance of d loss / d block output (mean over features) and its L2 norm, and
per BN layer mean |beta / gamma| (Appendix F), at init, after epoch 1, the probe epochs and the end (and
every ``--step-probe`` steps of epoch 1), in ``<row>/block_stats.json``.

Figures: per row ``block_grad_var.png``, ``bn_beta_gamma.png``; per study ``train_accuracy.png`` (Figure 8),
``block_grad_var.png`` (a panel per probe point: Figures 5, 7), ``block_grad_var_rows.png`` (a panel per row
at its last probe: 9-11, 14, 15), ``first_epoch_steps.png`` (a panel per row, a curve per step: 12).
"""
import sys

import minigrad
from minigrad import optim
from minigrad.measure.block_variance import (BlockProbe, format_range, input_block_change, load_block_stats,
                                             output_sign_diversity, verdict)
from minigrad.models.resnet import MODEL_VARIANTS, build_resnet
from minigrad.runs import load_config, load_summary

from . import study
from .study import Preset, Study, format_cell, positive_float, positive_int, row_name, training_record

MODELS = tuple(MODEL_VARIANTS)
QUICK = dict(epochs=3, milestones=(2,), probe_epochs=(0, 1, "last"), train_subset=2560, val_subset=500,
             test_subset=2000, steps=None, step_probe=None)  # steps: epochs from the paper's step counts
FULL = dict(train_subset=None, val_subset=None, test_subset=None, milestones=(0.5, 0.75), probe_steps=(),
            probe_epochs=(0, 1, "last"), step_probe=None)  # milestones: ints are epochs, floats fractions of the epochs
SUBSET = "on a 2,560-image CIFAR-10 subset for 3 epochs (x0.1 after epoch 2); validation 500, test 2,000 images"
ROWS = {"main": tuple(dict(model=m) for m in MODELS), "resnet99": (dict(model="Model-1", blocks_per_scale=33),),
        "batch": tuple(dict(model="Model-1", batch_size=b) for b in (128, 256, 512)),
        "init": tuple(dict(model="Model-1", init_std=s) for s in (0.01, 0.1)),
        "sweep": tuple(dict(model="Model-3", lr=lr) for lr in (0.1, 0.03, 0.01, 0.003))}
SUFFIX = {"blocks_per_scale": lambda v: f"-ResNet{3 * v}", "batch_size": lambda v: f"-bs{v}",
          "init_std": lambda v: f"-std{v:g}"}  # lr and model are in the name already
SETTINGS = {"lr": 0.1, "batch_size": 128, "blocks_per_scale": 5, "init_std": None}  # the flags' defaults


class ResNetBN(Study):
    name = "resnet_bn"
    title = "ResNet BN study"
    description = __doc__
    presets = {
        "quick": Preset(f"Model-1/2/3 {SUBSET}", rows=ROWS["main"], **QUICK),
        "full": Preset("Model-1/2/3 for 200 epochs (our recipe; the paper gives none) on the 47,500-image training "
                       "split (x0.1 at epochs 100 and 150); the whole validation and test sets", rows=ROWS["main"],
                       **{**FULL, "epochs": 200, "milestones": (100, 150), "probe_epochs": (0, 1, 67, 134, "last"),
                          "steps": None}),
        "resnet99-quick": Preset(f"Model-1 ResNet-99 (33 blocks per scale, Figure 7) {SUBSET}", rows=ROWS["resnet99"],
                                 **QUICK),
        "batch-quick": Preset(f"Model-1 at batch 128, 256, 512 (Figure 14) {SUBSET}", rows=ROWS["batch"], **QUICK),
        "init-quick": Preset(f"Model-1, weights N(0, 0.01^2) and N(0, 0.1^2) (Figure 15) {SUBSET}",
                             rows=ROWS["init"], **QUICK),
        "sweep-quick": Preset(f"Model-3 at lr 0.1, 0.03, 0.01, 0.003, probed every 2 steps of epoch 1 (Figure 12) "
                              f"{SUBSET}", rows=ROWS["sweep"], **{**QUICK, "step_probe": 2}),
        "resnet99": Preset("Model-1 ResNet-99 to step 75,000, probes near steps 25k, 50k, 75k", rows=ROWS["resnet99"],
                           steps=75000, **{**FULL, "probe_steps": (25000, 50000)}),
        "batch": Preset("Model-1 at batch 128, 256, 512, each to step 25,000", rows=ROWS["batch"], steps=25000, **FULL),
        "init": Preset("Model-1 with N(0, 0.01^2) and N(0, 0.1^2) weights to step 25,000", rows=ROWS["init"],
                       steps=25000, **FULL),
        "sweep": Preset("Model-3 at lr 0.1, 0.03, 0.01, 0.003 to step 25,000, probed every 10 steps of epoch 1",
                        rows=ROWS["sweep"], steps=25000, **{**FULL, "step_probe": 10}),
    }
    columns = [("model", "Model", None), ("bn", "BN", None), ("residual", "Shortcuts", None),
               ("params", "# Params", "int"), ("epochs", "Epochs", None), ("train_acc", "Train acc %", "pct"),
               ("val_acc", "Val acc %", "pct"), ("test_acc", "Test acc %", "pct"),
               ("var_init", "Block grad var at init (min .. max)", None),
               ("var_end", "Block grad var at the last probe", None), ("seconds", "Time (s)", "s"),
               ("status", "Status", None)]
    optional_columns = [("lr", "LR", "g"), ("batch_size", "Batch", None), ("blocks", "Blocks", None),
                        ("init_std", "Init std", None), ("verdict", "Verdict", None)]
    row_figure_names = ("block_grad_var.png",)
    row_figure_sources = ("block_stats.json",)

    def add_arguments(self, parser):
        parser.add_argument("--model", choices=MODELS, help="run one row with this model")
        parser.add_argument("--lr", type=positive_float, default=None, help="learning rate (default 0.1)")
        parser.add_argument("--epochs", type=positive_int, default=None, help="epochs (default: the preset's)")
        parser.add_argument("--batch-size", type=positive_int, default=None,
                            help="batch size, also of the probe (default 128)")
        parser.add_argument("--train-subset", type=positive_int, default=None,
                            help="train on a stratified subset of N training images (default: the preset's)")
        parser.add_argument("--full-train", action="store_true", help="use the whole training split (no subset)")
        parser.add_argument("--n-val", type=positive_int, default=2500,
                            help="validation images held out (default 2500)")
        parser.add_argument("--width", type=positive_int, default=16,
                            help="filters of the first scale; the others double it (default 16: 16, 32, 64)")
        parser.add_argument("--blocks-per-scale", type=positive_int, default=None,
                            help="residual blocks per scale (default 5: ResNet-15; 33: ResNet-99)")
        parser.add_argument("--init-std", type=positive_float, default=None,
                            help="weights from N(0, std^2) instead of Xavier uniform (Appendix G)")
        parser.add_argument("--step-probe", type=positive_int, default=None, metavar="K",
                            help="also probe every K optimiser steps of epoch 1 (default: the preset's, else off)")

    def rows(self, args):
        specs = [dict(model=args.model)] if args.model else self.presets[args.preset].rows
        configs = [(self.row_config(args, **spec), "".join(SUFFIX[k](v) for k, v in spec.items() if k in SUFFIX))
                   for spec in specs]
        return [(row_name(c["model"], c["lr"], suffix), c) for c, suffix in configs]

    def row_config(self, args, model, **spec):
        """Every setting of one row (written to its config.json; a re-run must match it)."""
        preset = self.presets[args.preset]
        s = {k: spec.get(k, getattr(args, k) if getattr(args, k) is not None else v) for k, v in SETTINGS.items()}
        subset = None if args.full_train else (args.train_subset or preset.train_subset)
        if preset.steps and not args.epochs:  # epochs from the paper's steps
            per_epoch = -(-(subset or 50000 - args.n_val) // s["batch_size"])
            epochs = max(1, -(-preset.steps // per_epoch))
            probe_epochs = (0, 1, *(max(1, round(p / per_epoch)) for p in preset.probe_steps), "last")
        else:
            epochs, probe_epochs = args.epochs or preset.epochs, preset.probe_epochs
        milestones = [m if isinstance(m, int) else round(m * epochs) for m in preset.milestones]
        probes = sorted({epochs if e == "last" else e for e in probe_epochs if e == "last" or e <= epochs})
        config = {
            "study": self.name, "preset": args.preset, "model": model, **MODEL_VARIANTS[model], "lr": s["lr"],
            "epochs": epochs, "batch_size": s["batch_size"], "seed": args.seed, "dataset": "cifar10",
            "train_subset": subset, "n_val": args.n_val, "split_seed": 0,
            "val_subset": preset.val_subset, "test_subset": preset.test_subset,
            "optimizer": "SGD", "momentum": 0.9, "weight_decay": 1e-4, "nesterov": False,
            "scheduler": "MultiStepLR", "milestones": sorted({m for m in milestones if 0 < m < epochs}), "gamma": 0.1,
            "augment": "crop32-pad4+hflip", "init": "xavier_uniform, zero biases",
            "num_filters": [args.width, 2 * args.width, 4 * args.width],
            "num_blocks_per_scale": s["blocks_per_scale"], "probe_epochs": probes,
            "probe_batch": f"first {s['batch_size']} training images, unaugmented, BN in train mode",
            "minigrad_version": minigrad.__version__, "threads": args.threads,
        }
        if s["init_std"] is not None:  # keys only off the default, so the default rows' configs stay as they were
            config.update(init=f"normal(0, {s['init_std']:g}^2), zero biases", init_std=s["init_std"])
        if args.step_probe or preset.step_probe:
            config["step_probe_every"] = args.step_probe or preset.step_probe
        return config

    def run_row(self, row):
        from minigrad.data import BatchLoader
        c = row.config
        splits = row.splits()
        minigrad.manual_seed(c["seed"])
        model = build_resnet(c["model"], num_filters=c["num_filters"], num_blocks_per_scale=c["num_blocks_per_scale"],
                             num_classes=splits.num_classes, init_std=c.get("init_std"))
        optimizer = optim.SGD(model.parameters(), lr=c["lr"], momentum=c["momentum"],
                              weight_decay=c["weight_decay"], nesterov=c["nesterov"])
        scheduler = optim.lr_scheduler.MultiStepLR(optimizer, milestones=c["milestones"], gamma=c["gamma"])
        batch = c["batch_size"]
        train, val, test = row.loaders(batch, val_subset=c["val_subset"], test_subset=c["test_subset"])
        probe_x, probe_y = next(iter(BatchLoader(splits.train_images[:batch], splits.train_labels[:batch], batch,
                                                 mean=splits.mean, std=splits.std).epoch()))
        probe = BlockProbe(row.path / "block_stats.json", probe_x, probe_y, c["probe_batch"], c["probe_epochs"],
                           step_every=c.get("step_probe_every"))
        return row.fit(row.trainer(model, optimizer, train, val, scheduler=scheduler, test_loader=test,
                                   callbacks=[probe], plots=True))

    def record(self, folder):
        record, config, stats = training_record(folder), load_config(folder), load_block_stats(folder)
        points, summary = stats["points"], load_summary(folder) if (folder / "summary.json").exists() else {}
        end = points[-1] if points and points[-1]["epoch"] > 0 else None
        record.update({
            "bn": "yes" if config.get("batch_norm") else "no", "residual": "yes" if config.get("residual") else "no",
            "lr": config["lr"], "batch_size": config["batch_size"],
            "init_std": f"{config['init_std']:g}" if "init_std" in config else "xavier",
            "blocks": 3 * config["num_blocks_per_scale"],
            "var_init": format_range(points[0]) if points and points[0]["epoch"] == 0 else "-",
            "var_end": format_range(end) if end else "-", "end_label": end and end["label"],
            "input_block_change": input_block_change(points), "signs": output_sign_diversity(points)})
        if "steps" in stats:
            record["verdict"], record["why"] = verdict(summary.get("status"), stats, record["train_acc"], 0.1,
                                                       summary.get("diverged"))
        return record

    def table_columns(self, records):
        """The fixed columns, plus each setting that differs between the rows and the sweep's verdict."""
        varied = [c for c in self.optional_columns if len({str(r.get(c[0])) for r in records}) > 1
                  or (c[0] == "verdict" and any("verdict" in r for r in records))]
        return self.columns[:1] + varied + self.columns[1:]

    def sort_folders(self, folders):
        order = {m: i for i, m in enumerate(MODELS)}
        configs = {f: load_config(f) for f in folders}
        return sorted(folders, key=lambda f: (order.get(configs[f].get("model"), 99), -configs[f].get("lr", 0), f.name))

    def table_title(self, records, preset):
        depth = ", ".join(sorted({f"ResNet-{r['blocks']}" for r in records})) or "ResNet"
        return f"BN vs residual branches in {depth} (CIFAR-10, preset {preset})"

    def findings(self, records, folders):
        """The paper's claims against this run: Table 1's order, Model-3's divergence, the sweep's verdicts."""
        notes = ["Paper (Table 1, full training): Model-1 92.5%, Model-2 90.6%, Model-3 9.09% (diverges). "
                 "Chance level: 10.0%."]
        by_model = {r["model"]: r for r in records}
        m1, m2, m3 = (by_model.get(m) for m in MODELS)
        if m1 and m2 and m1["test_acc"] is not None and m2["test_acc"] is not None:
            notes.append(f"Model-1 minus Model-2 test accuracy: {100 * (m1['test_acc'] - m2['test_acc']):+.2f} points.")
        if m3 and "verdict" not in m3:
            acc = format_cell(m3["train_acc"], "pct")
            notes.append(f"Model-3: {m3['status']}" + (f" without a non-finite loss (the paper's diverged); final "
                         f"train accuracy {acc}% (chance 10%)." if m3["status"] == "finished" else "."))
        for r in records:
            change = r["input_block_change"]
            moved = "" if change is None else f"; the input-side block's variance moved x{change:.1e} from init"
            notes.append(f"{r['row']}: per-block gradient variance at init {r['var_init']}; "
                         f"at {r['end_label'] or 'the end'} {r['var_end']}{moved}.")
        sweep = [r for r in records if "verdict" in r]
        notes += [f"{r['row']} (lr {r['lr']:g}): **{r['verdict']}**: {r['why']}." for r in sweep]
        if sweep:
            bad = [f"{r['lr']:g}" for r in sweep if r["verdict"] in ("diverges", "explodes")]
            rest = [f"{r['lr']:g} ({r['verdict']})" for r in sweep if r["verdict"] not in ("diverges", "explodes")]
            notes.append("Against the paper's Figure 12 (Model-3's gradient explodes from the start, its loss soon "
                         "undefined): " + (f"we agree at lr {', '.join(bad)}" if bad else "we see it at no rate")
                         + (f"; we disagree at lr {', '.join(rest)} (finite loss, no explosion)" if rest else "")
                         + ". The paper gives no optimiser or learning rate to compare with.")
            dead = [r for r in sweep if r["verdict"] == "stops learning" and r["signs"]
                    and r["signs"][1] < r["signs"][0] / 4]
            notes += ["Why, as we measure it: " + "; ".join(
                f"at lr {r['lr']:g} the output-side block's sign diversity fell from {r['signs'][0]:.3f} to "
                f"{r['signs'][1]:.3f}" for r in dead) + ". Its features keep one sign over the batch, so the ReLU "
                "opening each branch and the head passes almost nothing and the gradient vanishes instead of "
                "exploding: without BN nothing re-centres the residual stream after the first large steps."
            ] if dead else []
        return notes + [
            "Training recipe: the paper gives none. Xavier init and zero biases are the paper's; SGD, lr, schedule, "
            "epochs, widths, stem, head and augmentation are ours (each row's config.json has every setting).",
            "Block gradient variance: one fixed batch (first training images, unaugmented, BN in train mode), mean "
            "over features of the variance over the batch of d loss / d block output."]


    def draw_row_figures(self, folder):
        from minigrad.plots import plot_block_panels
        points, model = load_block_stats(folder)["points"], load_config(folder).get("model", folder.name)
        if not points:
            return []
        panels = [(what, [(p["label"], {n: b[key] for n, b in p["blocks"].items()}) for p in points])
                  for key, what in (("batch_var", "batch variance (mean over features)"), ("l2", "L2 norm"))]
        written = plot_block_panels(panels, folder / "block_grad_var.png", sharey=False,
                                    title=f"{model}: d loss / d block output, one fixed batch, per probe point")
        if points[0]["bn"]:
            bn = [(p["label"], p["bn"]) for p in points]
            written += plot_block_panels([("mean |beta / gamma| over channels", bn)], folder / "bn_beta_gamma.png",
                                         log=False, title=f"{model}: BN layers (Appendix F)")
        return written

    def figures(self, records, folders, out_dir):
        """Figure 8 (training accuracy), per-point and per-row block panels, and the step-probe panels."""
        from minigrad.plots import plot_block_panels, plot_train_accuracy
        with_metrics = [f for f in folders if (f / "metrics.csv").exists()]
        written = plot_train_accuracy(with_metrics, out_dir / "train_accuracy.png",
                                      title="Training accuracy (the paper's Figure 8)") if with_metrics else []
        stats = [(f, load_block_stats(f)) for f in folders]
        stats = [(f, s) for f, s in stats if s["points"]]
        var = lambda p: {n: b["batch_var"] for n, b in p["blocks"].items()}  # noqa: E731
        where = lambda p: f"epoch {p['epoch']}" + (f", step {p['step']:,}" if "step" in p else "")  # noqa: E731
        ylabel = "batch variance of d loss / d block output"
        first = {}  # probe label -> its first point (for the epoch order and the step in the title)
        for p in sorted((p for _, s in stats for p in s["points"]), key=lambda p: p["epoch"]):
            first.setdefault(p["label"], p)
        panels = [(f"{lab} ({where(p)})", [(f.name, var(q)) for f, s in stats for q in s["points"]
                                           if q["label"] == lab]) for lab, p in first.items()]
        if panels:
            written += plot_block_panels(panels, out_dir / "block_grad_var.png", ylabel=ylabel,
                                         title="Per-block gradient variance, one panel per probe point")
        if len(stats) > 1:
            panels = [(f"{f.name}: {s['points'][-1]['label']} ({where(s['points'][-1])})",
                       [(f.name, var(s["points"][-1]))]) for f, s in stats]
            written += plot_block_panels(panels, out_dir / "block_grad_var_rows.png", ylabel=ylabel,
                                         title="Per-block gradient variance at each row's last probe")
        steps = [(f, [s["points"][0]] + s["steps"]) for f, s in stats if s.get("steps")]
        if steps:
            last = max(p["step"] for _, pts in steps for p in pts)
            panels = [(f"{f.name}: first {pts[-1]['step']} steps", [(f"step {p['step']}", var(p), p["step"] / last)
                                                                   for p in pts]) for f, pts in steps]
            written += plot_block_panels(panels, out_dir / "first_epoch_steps.png", ylabel=ylabel, colormap="viridis",
                                         colorbar=("optimiser step (0 = init)", 0, last),
                                         title="Model-3 over its first epoch (the paper's Figure 12); gaps: non-finite")
        return written


STUDY = ResNetBN()


def main(argv=None):
    return study.main(STUDY, argv)


if __name__ == "__main__":
    sys.exit(main())
