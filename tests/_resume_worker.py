"""A tiny training run for the trainer tests, also run as a subprocess that the kill-and-resume test kills.

``build_trainer(run_dir, ...)`` makes a 2-layer MLP on 8-dim synthetic data (3 classes) with two dropout
layers (``nn.Dropout`` with its own Generator, and one drawing from the library's global generator),
Adam and a cosine schedule. As a script::

    python tests/_resume_worker.py RUN_DIR [--resume] [--mark EPOCH:BATCH]
                                           [--die-before-replace NAME:N] [--die-after-replace NAME:N]

``--mark`` prints ``MARK`` when that batch is drawn and then waits, so the parent can SIGKILL the run
mid-epoch. ``--die-*-replace`` makes the process SIGKILL itself around the N-th ``os.replace`` onto a
file called NAME: between writing a checkpoint's npz and its JSON, or just after metrics.csv was written.
"""
import argparse
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import minigrad  # noqa: E402
from minigrad import nn, optim  # noqa: E402
from minigrad.train import Callback, Trainer  # noqa: E402

N_TRAIN, N_VAL, N_TEST, BATCH = 240, 60, 60, 20


class ArrayLoader:
    """In-memory batches with the BatchLoader interface; shuffling and input noise come from ``rng``.

    ``hook(epoch_call, batch)`` runs before each batch is yielded (epoch_call counts ``epoch()`` calls).
    """

    def __init__(self, x, y, batch_size, shuffle=False, noise=0.0, hook=None):
        self.x, self.y, self.batch_size = x, y, batch_size
        self.shuffle, self.noise, self.hook = shuffle, noise, hook
        self.calls = 0

    def __len__(self):
        return -(-len(self.x) // self.batch_size)

    def epoch(self, rng):
        self.calls += 1
        order = rng.permutation(len(self.x)) if self.shuffle else np.arange(len(self.x))
        for batch, start in enumerate(range(0, len(order), self.batch_size), start=1):
            if self.hook is not None:
                self.hook(self.calls, batch)
            idx = order[start:start + self.batch_size]
            x = self.x[idx]
            if self.noise:
                x = x + self.noise * rng.standard_normal(x.shape).astype(np.float32)
            yield x, self.y[idx]


class GlobalNoiseMask(nn.Module):
    """Dropout drawing its masks from the library's global generator at each forward (nn.Dropout keeps
    its own generator): y = x * m / (1 - p) in training, identity in eval; backward g * m / (1 - p)."""

    def __init__(self, p):
        super().__init__()
        self.p = p

    def forward(self, x):
        if not self.training:
            self.scale = None
            return x
        keep = minigrad.random.default_generator().random(x.shape) >= self.p
        self.scale = keep.astype(x.dtype) / np.asarray(1 - self.p, x.dtype)
        return x * self.scale

    def backward(self, grad_output):
        return grad_output if self.scale is None else grad_output * self.scale


class RunningTally(Callback):
    """A stateful callback: counts every optimiser step of the run and sums the batch losses, and adds to
    each epoch's metrics the steps so far and the first weight's norm. If its state were not saved and
    restored, a resumed run would count fewer steps than an uninterrupted one."""

    def __init__(self):
        self.steps, self.loss_sum, self.fit_starts = 0, 0.0, []

    def on_fit_start(self, trainer, start_epoch):
        if start_epoch == 1:
            self.steps, self.loss_sum = 0, 0.0
        self.fit_starts.append(start_epoch)

    def on_batch_end(self, trainer, epoch, batch, logs):
        assert logs["step"] == (epoch - 1) * len(trainer.train_loader) + batch
        self.steps += 1
        self.loss_sum += logs["loss"] * logs["batch_size"]

    def on_epoch_end(self, trainer, epoch, metrics):
        weight = trainer.model[0].weight.data.astype(np.float64)
        return {"steps_so_far": self.steps, "loss_sum": self.loss_sum, "weight_norm": float(np.sqrt((weight ** 2).sum()))}

    def state_dict(self):
        return {"steps": self.steps, "loss_sum": self.loss_sum}

    def load_state_dict(self, state):
        self.steps, self.loss_sum = state["steps"], state["loss_sum"]


def make_data(seed=0):
    """Three Gaussian-ish classes in 8 dimensions, labels from a fixed linear map (learnable, not trivial)."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((8, 3))
    x = rng.standard_normal((N_TRAIN + N_VAL + N_TEST, 8)).astype(np.float32)
    y = np.argmax(x @ w + 0.5 * rng.standard_normal((len(x), 3)), axis=1).astype(np.int64)
    parts = np.cumsum([N_TRAIN, N_VAL])
    return np.split(x, parts), np.split(y, parts)


def build_model(seed=0):
    minigrad.manual_seed(seed)
    # Tanh, not ReLU: plain NumPy, so these many tiny batches cost no parallel-kernel start-up
    return nn.Sequential(nn.Linear(8, 16), nn.Dropout(0.1), nn.Tanh(), GlobalNoiseMask(0.1), nn.Linear(16, 3))


def build_trainer(run_dir, epochs=4, seed=0, hook=None, lr=1e-2, **trainer_kwargs):
    (x_train, x_val, x_test), (y_train, y_val, y_test) = make_data()
    model = build_model(seed)
    optimizer = optim.Adam(model.parameters(), lr=lr)
    scheduler = optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    kwargs = dict(scheduler=scheduler, epochs=epochs, run_dir=run_dir, seed=seed, progress=False,
                  log=lambda line: None, plots=False,
                  config={"model": "MLP-8-16-3", "lr": lr, "epochs": epochs, "seed": seed})
    kwargs.update(trainer_kwargs)
    return Trainer(model, nn.CrossEntropyLoss(), optimizer,
                   ArrayLoader(x_train, y_train, BATCH, shuffle=True, noise=0.05, hook=hook),
                   ArrayLoader(x_val, y_val, BATCH), test_loader=ArrayLoader(x_test, y_test, BATCH), **kwargs)


def _die_on_replace(name, count, before):
    """Patch os.replace so the process SIGKILLs itself at the count-th replace onto a file called name."""
    real_replace = os.replace
    seen = [0]

    def replace(src, dst, *args, **kwargs):
        hit = Path(dst).name == name
        if hit:
            seen[0] += 1
        if hit and seen[0] == count and before:
            os.kill(os.getpid(), signal.SIGKILL)
        real_replace(src, dst, *args, **kwargs)
        if hit and seen[0] == count and not before:
            os.kill(os.getpid(), signal.SIGKILL)

    os.replace = replace


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("run_dir")
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--mark", help="EPOCH:BATCH at which to print MARK and wait to be killed")
    parser.add_argument("--die-before-replace", help="NAME:N")
    parser.add_argument("--die-after-replace", help="NAME:N")
    parser.add_argument("--callback", action="store_true", help="train with the RunningTally callback")
    args = parser.parse_args()
    hook = None
    if args.mark:
        mark = tuple(int(v) for v in args.mark.split(":"))

        def hook(epoch_call, batch):
            if (epoch_call, batch) == mark:
                print("MARK", flush=True)
                time.sleep(60)  # the parent kills us here, mid-epoch

    for option, before in ((args.die_before_replace, True), (args.die_after_replace, False)):
        if option:
            name, count = option.rsplit(":", 1)
            _die_on_replace(name, int(count), before)
    callbacks = [RunningTally()] if args.callback else []
    result = build_trainer(args.run_dir, hook=hook, callbacks=callbacks).fit(resume=args.resume)
    print("STATUS", result.status, flush=True)


if __name__ == "__main__":
    main()
