"""Speed of minigrad on this machine, against its own BLAS and against PyTorch in the same run.

    python -m benchmarks.speed [--threads N] [--repeats 7] [--models VGG08,VGG38,VGG38_BN_RC] [--no-torch]

Measures (medians of repeated runs, float32, batch 100):
1. the BLAS: sgemm GFLOP/s of the GEMM shapes a 3x3 32->32 convolution makes at 32x32 ... 4x4 maps;
2. layers: Conv2d 3x3 32->32 forward and backward at each map size (GFLOP/s and % of the BLAS on the
   same GEMMs), BatchNorm2d, LeakyReLU, AvgPool2d(2), each beside PyTorch;
3. a full training step (forward, cross-entropy, backward, Adam) of VGG08, VGG38 and VGG38 BN+RC, each in
   a fresh subprocess so its peak RSS is its own, beside PyTorch's step of the same model and weights.
Prints a table and saves JSON (default ``benchmarks/results-<date>.json``). PyTorch is optional: it is
used when installed and never needed by minigrad.
"""
import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

BATCH = 100
MAP_SIZES = (32, 16, 8, 4)
CHANNELS = 32


def median_time(fn, repeats, warmup=2):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def torch_available():
    try:
        import torch  # noqa: F401
        return True
    except ImportError:
        return False


def set_threads(threads):
    from minigrad.threads import get_num_threads, set_num_threads
    set_num_threads(threads)
    if torch_available():
        import torch
        torch.set_num_threads(threads or os.cpu_count())
    return get_num_threads()


# ------------------------------------------------------------------------------------------- machine
def machine_info(threads):
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"date": time.strftime("%Y-%m-%d %H:%M"), "cpu": cpu, "cores": os.cpu_count(), "threads": threads,
            "python": platform.python_version(), "numpy": np.__version__}
    try:
        import numba
        info["numba"] = numba.__version__
        from threadpoolctl import threadpool_info
        info["blas"] = ", ".join(f"{p.get('internal_api')} {p.get('version')}" for p in threadpool_info()
                                 if p.get("user_api") == "blas")
    except ImportError:
        pass
    if torch_available():
        import torch
        info["torch"] = torch.__version__
    return info


# ------------------------------------------------------------------------------------------- BLAS
def conv_gemm_shapes(size):
    """(m, k, n) of the three GEMMs of a 3x3 32->32 conv on (BATCH, 32, size, size), padding 1."""
    rows, k = BATCH * size * size, CHANNELS * 9
    return {"forward": (rows, k, CHANNELS), "grad_weight": (CHANNELS, rows, k), "grad_input": (rows, CHANNELS, k)}


def bench_blas(repeats):
    rng = np.random.default_rng(0)
    results = {}
    for size in MAP_SIZES:
        total_time, total_flops = 0.0, 0.0
        for name, (m, k, n) in conv_gemm_shapes(size).items():
            a = rng.standard_normal((m, k), dtype=np.float32)
            b = rng.standard_normal((k, n), dtype=np.float32)
            out = np.empty((m, n), np.float32)
            t = median_time(lambda: np.matmul(a, b, out=out), repeats)
            total_time += t
            total_flops += 2.0 * m * k * n
        results[f"conv{size}"] = {"seconds": total_time, "gflops": total_flops / total_time / 1e9}
    a = rng.standard_normal((2048, 2048), dtype=np.float32)
    t = median_time(lambda: a @ a, repeats)
    results["square2048"] = {"seconds": t, "gflops": 2 * 2048 ** 3 / t / 1e9}
    return results


# ------------------------------------------------------------------------------------------- layers
def _layer_cases():
    from minigrad import nn
    cases = []
    for size in MAP_SIZES:
        flops = 2.0 * BATCH * size * size * CHANNELS * CHANNELS * 9
        cases.append((f"conv3x3 {size}x{size}", lambda: nn.Conv2d(CHANNELS, CHANNELS, 3, padding=1, bias=False),
                      size, flops))
    cases.append(("batchnorm2d 32x32", lambda: nn.BatchNorm2d(CHANNELS), 32, None))
    cases.append(("leaky_relu 32x32", lambda: nn.LeakyReLU(0.01), 32, None))
    cases.append(("avgpool2 32x32", lambda: nn.AvgPool2d(2), 32, None))
    return cases


def bench_layers(repeats, with_torch):
    from benchmarks.torch_mirror import to_torch
    rng = np.random.default_rng(0)
    results = {}
    for name, make, size, flops in _layer_cases():
        layer = make()
        x = rng.standard_normal((BATCH, CHANNELS, size, size), dtype=np.float32)
        y = layer(x)
        g = rng.standard_normal(y.shape, dtype=np.float32)

        def forward():
            layer(x)

        def backward():
            layer(x)
            layer.backward(g)

        t_fwd = median_time(forward, repeats)
        t_both = median_time(backward, repeats)
        entry = {"forward": t_fwd, "backward": max(t_both - t_fwd, 0.0), "forward_backward": t_both}
        if flops:
            entry["gflops_fwd_bwd"] = 3 * flops / t_both / 1e9
        if with_torch:
            import torch
            tl = to_torch(layer)
            tx = torch.from_numpy(x).requires_grad_(True)
            tg = torch.from_numpy(g)

            def t_forward():
                with torch.no_grad():
                    tl(tx)

            def t_backward():
                tx.grad = None
                tl.zero_grad(set_to_none=True)
                tl(tx).backward(tg)

            entry["torch_forward"] = median_time(t_forward, repeats)
            entry["torch_forward_backward"] = median_time(t_backward, repeats)
            entry["ratio_vs_torch"] = t_both / entry["torch_forward_backward"]
        results[name] = entry
    return results


# ------------------------------------------------------------------------------------------- steps
def peak_rss_mb():
    """This process's peak resident memory in MB.

    On Linux, VmHWM of /proc/self/status: ``ru_maxrss`` would not do, because exec keeps the parent's
    high-water mark (a worker started by a 600 MB benchmark process would report at least 600 MB).
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux, bytes on macOS


def step_worker(model_name, framework, threads, repeats, num_classes=100):
    """Time one model's training step in this (fresh) process; prints one JSON line."""
    set_threads(threads)
    import minigrad
    from minigrad import nn, optim
    from minigrad.models.vgg import build_vgg
    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH, 3, 32, 32), dtype=np.float32)
    y = rng.integers(0, num_classes, BATCH)
    minigrad.manual_seed(0)
    model = build_vgg(model_name, num_classes=num_classes)
    baseline = peak_rss_mb()
    if framework == "minigrad":
        crit = nn.CrossEntropyLoss()
        opt = optim.Adam(model.parameters(), lr=1e-3)

        def step():
            opt.zero_grad()
            crit(model(x), y)
            model.backward(crit.backward())
            opt.step()
    else:
        import torch
        from benchmarks.torch_mirror import to_torch
        tmodel = to_torch(model)
        del model
        tx, ty = torch.from_numpy(x), torch.from_numpy(y)
        crit = torch.nn.CrossEntropyLoss()
        opt = torch.optim.Adam(tmodel.parameters(), lr=1e-3)

        def step():
            opt.zero_grad()
            crit(tmodel(tx), ty).backward()
            opt.step()

    seconds = median_time(step, repeats, warmup=2)
    peak = peak_rss_mb()
    print(json.dumps({"model": model_name, "framework": framework, "seconds": seconds,
                      "peak_rss_mb": peak, "baseline_rss_mb": baseline}))


def bench_steps(models, threads, repeats, with_torch):
    results = {}
    frameworks = ["minigrad"] + (["torch"] if with_torch else [])
    for model in models:
        for framework in frameworks:
            command = [sys.executable, "-m", "benchmarks.speed", "--step-worker", model, "--framework", framework,
                       "--repeats", str(repeats)]
            if threads:
                command += ["--threads", str(threads)]
            output = subprocess.run(command, check=True, capture_output=True, text=True,
                                    cwd=Path(__file__).resolve().parent.parent).stdout
            results[f"{model}/{framework}"] = json.loads(output.strip().splitlines()[-1])
            print(f"  {model:12s} {framework:8s} {results[f'{model}/{framework}']['seconds']:.3f} s/step", flush=True)
    return results


# ------------------------------------------------------------------------------------------- report
def report(info, blas, layers, steps):
    lines = [f"minigrad speed, {info['date']}, {info['cpu']}, {info['threads']} threads "
             f"(numpy {info['numpy']}, numba {info.get('numba')}, BLAS {info.get('blas')}, torch {info.get('torch', 'not installed')})",
             "", "BLAS sgemm (the three GEMMs of a 3x3 32->32 conv, batch 100):",
             "| shape | GFLOP/s |", "|---|---|"]
    for name, r in blas.items():
        lines.append(f"| {name} | {r['gflops']:.1f} |")
    lines += ["", "Layers (batch 100, 32 channels, float32; times in ms, medians):",
              "| layer | fwd | fwd+bwd | GFLOP/s | % of BLAS | torch fwd+bwd | minigrad/torch |", "|---|---|---|---|---|---|---|"]
    for name, r in layers.items():
        size = name.split()[-1].split("x")[0]
        gf = r.get("gflops_fwd_bwd")
        pct = f"{100 * gf / blas[f'conv{size}']['gflops']:.0f}%" if gf and f"conv{size}" in blas else ""
        torch_t = r.get("torch_forward_backward")
        gf_s = f"{gf:.1f}" if gf else ""
        torch_s = f"{1e3 * torch_t:.2f}" if torch_t is not None else ""
        ratio = f"{r['ratio_vs_torch']:.2f}" if torch_t is not None else ""
        lines.append(f"| {name} | {1e3 * r['forward']:.2f} | {1e3 * r['forward_backward']:.2f} | {gf_s} | {pct} | "
                     f"{torch_s} | {ratio} |")
    lines += ["", "Training step (forward, loss, backward, Adam; batch 100, 100 classes):",
              "| model | minigrad s/step | torch s/step | minigrad/torch | minigrad peak RSS MB | torch peak RSS MB |",
              "|---|---|---|---|---|---|"]
    for model in dict.fromkeys(k.split("/")[0] for k in steps):
        mg, tt = steps.get(f"{model}/minigrad"), steps.get(f"{model}/torch")
        torch_s = f"{tt['seconds']:.3f}" if tt else ""
        ratio = f"{mg['seconds'] / tt['seconds']:.2f}" if tt else ""
        torch_rss = f"{tt['peak_rss_mb']:.0f}" if tt else ""
        lines.append(f"| {model} | {mg['seconds']:.3f} | {torch_s} | {ratio} | {mg['peak_rss_mb']:.0f} | {torch_rss} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.speed", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=None, help="threads for Numba, the BLAS and torch (default all)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--models", default="VGG08,VGG38,VGG38_BN_RC")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    parser.add_argument("--skip", default="", help="comma list of sections to skip: blas,layers,steps")
    parser.add_argument("--out", type=Path, default=None, help="JSON file (default benchmarks/results-<date>.json)")
    parser.add_argument("--step-worker", help=argparse.SUPPRESS)
    parser.add_argument("--framework", default="minigrad", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.step_worker:
        step_worker(args.step_worker, args.framework, args.threads, args.repeats)
        return 0
    threads = set_threads(args.threads)
    with_torch = torch_available() and not args.no_torch
    info = machine_info(threads)
    skip = set(filter(None, args.skip.split(",")))
    print(f"benchmarking on {info['cpu']} with {threads} threads (torch: {info.get('torch', 'no')})", flush=True)
    blas = {} if "blas" in skip else bench_blas(args.repeats)
    layers = {} if "layers" in skip else bench_layers(args.repeats, with_torch)
    steps = {} if "steps" in skip else bench_steps(args.models.split(","), args.threads, max(3, args.repeats // 2), with_torch)
    text = report(info, blas, layers, steps)
    print(text)
    out = args.out or Path(__file__).resolve().parent / f"results-{time.strftime('%Y%m%d-%H%M')}.json"
    out.write_text(json.dumps({"machine": info, "blas": blas, "layers": layers, "steps": steps}, indent=2))
    print(f"\nJSON written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
