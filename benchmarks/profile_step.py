"""Where a training step's time goes: per layer type, forward and backward, and around the kernels.

    python -m benchmarks.profile_step [--model VGG38] [--framework minigrad|torch] [--threads 2] [--steps 5]

minigrad: every module's forward and backward is timed (exclusive of its children, so a VGG block's own
time is its residual sum and Python glue), as are the loss, ``zero_grad`` and the optimiser step. For
the layers that hand chunks to the worker threads (``minigrad.threads.parallel_chunks``), the time
between the call and its return that no worker spent in a chunk is counted as hand-off (waking and
joining the workers, and a worker waiting for the other at the end). The figures are sums over
``--steps`` steps after two warm-up steps, divided by the number of steps.

torch: ``torch.profiler`` over the same steps, by operator (self CPU time).

Run it under the shared lock (``flock /tmp/minigrad-cpu.lock ...``) and read it as a breakdown, not a
benchmark: the timers themselves add a few microseconds per call.
"""
import argparse
import collections
import sys
import threading
import time

import numpy as np

BATCH = 100


def _inputs(num_classes):
    rng = np.random.default_rng(0)
    return rng.standard_normal((BATCH, 3, 32, 32), dtype=np.float32), rng.integers(0, num_classes, BATCH)


class _Timers:
    """Exclusive wall time per key on the main thread (a stack of open timers), plus counts."""

    def __init__(self):
        self.total = collections.defaultdict(float)
        self.count = collections.Counter()
        self.stack = []

    def wrap(self, key, fn):
        def timed(*args, **kwargs):
            self.stack.append(0.0)
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - start
                children = self.stack.pop()
                if self.stack:
                    self.stack[-1] += elapsed
                self.total[key] += elapsed - children
                self.count[key] += 1
        return timed


def profile_minigrad(model_name, threads, steps, num_classes=100):
    import minigrad
    from minigrad import nn, optim
    from minigrad import threads as thread_module
    from minigrad.models.vgg import build_vgg

    thread_module.set_num_threads(threads)
    x, y = _inputs(num_classes)
    minigrad.manual_seed(0)
    model = build_vgg(model_name, num_classes=num_classes)
    crit = nn.CrossEntropyLoss()
    opt = optim.Adam(model.parameters(), lr=1e-3)
    timers = _Timers()
    handoff = {"calls": 0, "wall": 0.0, "work": 0.0}
    lock = threading.Lock()
    original_parallel_chunks = thread_module.parallel_chunks

    def counted_parallel_chunks(work, chunks, make_state=None):
        def timed_work(n0, n1, state):
            start = time.perf_counter()
            work(n0, n1, state)
            with lock:
                handoff["work"] += time.perf_counter() - start
        start = time.perf_counter()
        states = original_parallel_chunks(timed_work, chunks, make_state)
        used = min(len(chunks), thread_module.numba.get_num_threads())
        handoff["calls"] += 1
        handoff["wall"] += (time.perf_counter() - start) * used
        return states

    # Every module that imported parallel_chunks by name gets the counting version.
    for module in list(sys.modules.values()):
        if getattr(module, "__name__", "").startswith("minigrad.") and \
                getattr(module, "parallel_chunks", None) is original_parallel_chunks:
            module.parallel_chunks = counted_parallel_chunks

    def step():
        opt.zero_grad()
        crit(model(x), y)
        model.backward(crit.backward())
        opt.step()

    for _ in range(2):
        step()
    for name, m in model.named_modules():
        kind = type(m).__name__
        object.__setattr__(m, "forward", timers.wrap((kind, "forward"), m.forward))
        object.__setattr__(m, "backward", timers.wrap((kind, "backward"), m.backward))
    crit.forward = timers.wrap(("CrossEntropyLoss", "forward"), crit.forward)
    crit.backward = timers.wrap(("CrossEntropyLoss", "backward"), crit.backward)
    opt.step = timers.wrap(("Adam", "step"), opt.step)
    opt.zero_grad = timers.wrap(("Adam", "zero_grad"), opt.zero_grad)
    for k in handoff:
        handoff[k] = 0
    start = time.perf_counter()
    for _ in range(steps):
        step()
    wall = (time.perf_counter() - start) / steps
    return wall, timers, handoff


def report_minigrad(model_name, threads, steps):
    wall, timers, handoff = profile_minigrad(model_name, threads, steps)
    print(f"minigrad {model_name}, {threads} threads: {1e3 * wall:.0f} ms per step (timed, {steps} steps)")
    rows = sorted(timers.total.items(), key=lambda kv: -kv[1])
    print("| layer type | pass | ms/step | calls/step | share |\n|---|---|---|---|---|")
    for (kind, what), seconds in rows:
        print(f"| {kind} | {what} | {1e3 * seconds / steps:.1f} | {timers.count[(kind, what)] // steps} | "
              f"{100 * seconds / steps / wall:.0f}% |")
    accounted = sum(timers.total.values()) / steps
    print(f"| (outside any timer: the step's own Python) | | {1e3 * (wall - accounted):.1f} | | |")
    if handoff["calls"]:
        idle = (handoff["wall"] - handoff["work"]) / steps / max(threads, 1)
        print(f"\nparallel_chunks: {handoff['calls'] // steps} calls/step; worker time in chunks "
              f"{1e3 * handoff['work'] / steps / max(threads, 1):.0f} ms/step per thread; hand-off and waiting "
              f"{1e3 * idle:.0f} ms/step ({1e3 * idle * steps / handoff['calls']:.2f} ms per call)")


def report_torch(model_name, threads, steps, num_classes=100):
    import torch
    from torch.profiler import ProfilerActivity, profile

    import minigrad
    from benchmarks.torch_mirror import to_torch
    from minigrad.models.vgg import build_vgg

    torch.set_num_threads(threads)
    x, y = _inputs(num_classes)
    minigrad.manual_seed(0)
    tmodel = to_torch(build_vgg(model_name, num_classes=num_classes))
    tx, ty = torch.from_numpy(x), torch.from_numpy(y)
    crit = torch.nn.CrossEntropyLoss()
    opt = torch.optim.Adam(tmodel.parameters(), lr=1e-3)

    def step():
        opt.zero_grad()
        crit(tmodel(tx), ty).backward()
        opt.step()

    for _ in range(2):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    wall = (time.perf_counter() - start) / steps
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    print(f"torch {torch.__version__} {model_name}, {threads} threads: {1e3 * wall:.0f} ms per step "
          f"(unprofiled, {steps} steps)")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile_step", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="VGG38")
    parser.add_argument("--framework", choices=("minigrad", "torch"), default="minigrad")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args(argv)
    if args.framework == "minigrad":
        report_minigrad(args.model, args.threads, args.steps)
    else:
        report_torch(args.model, args.threads, args.steps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
