"""Speed of minigrad on this machine, against its own BLAS and against PyTorch.

    python -m benchmarks.speed [--threads N] [--rounds 3] [--repeats 7] [--models VGG08,VGG38,VGG38_BN_RC]
                               [--no-torch] [--skip blas,layers,steps]

Measures (float32, batch 100):
1. the BLAS: sgemm GFLOP/s of the GEMM shapes a 3x3 32->32 convolution makes at 32x32 ... 4x4 maps
   (im2col + GEMM), and of a square 2048^3 product;
2. layers: forward and forward+backward of every layer type the studies use, beside PyTorch's: Conv2d 3x3
   32->32 at each map size, the other convolutions (3 input channels, stride 2, 1x1), the normalisations,
   activations, pools and dropout on (100, 32, 32, 32) maps, and Linear, BatchNorm1d, LayerNorm and the
   GSC study's activations on (10000, 100);
3. a full training step (forward, cross-entropy, backward, Adam) of VGG08, VGG38 and VGG38 BN+RC, beside
   PyTorch's step of the same model and weights.

Each framework is timed in its own fresh process (an idle OpenMP or BLAS pool of one slows the other when
both share a process), one process per section, alternating minigrad and PyTorch for ``--rounds`` rounds.
A process reports the median of ``--repeats`` timed runs after warm-up (a layer: of as many as fill half a
second); the table gives the median over rounds, and each ratio is the median of the rounds' own ratios
(and their range): the two processes of a round run one after the other, so their ratio is not moved
by the machine's speed drifting between rounds (a shared VM's can change by 1.5x within minutes). The CPU
model, its vector extensions (AVX2 / AVX-512 / AMX) and the thread counts are printed with the tables
and saved in the JSON (default ``benchmarks/results-<date>.json``). PyTorch is optional: it is used when
installed and never needed by minigrad. Run it alone on the machine (``flock /tmp/minigrad-cpu.lock
python -m benchmarks.speed ...`` on a shared one): a ratio measured on one CPU kind is not a claim about
another.
"""
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

BATCH = 100
MAP_SIZES = (32, 16, 8, 4)
CHANNELS = 32
FRAMEWORKS = ("minigrad", "torch")
ROOT = Path(__file__).resolve().parent.parent


def median_time(fn, repeats, warmup=2, min_seconds=0.0):
    """Median of ``repeats`` timed calls after ``warmup``, or of more calls until ``min_seconds`` are timed
    (a sub-millisecond layer then gets hundreds: a burst of the host's noise moves its median less)."""
    for _ in range(warmup):
        fn()
    times = []
    while len(times) < repeats or sum(times) < min_seconds:
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def paired_ratio(mine, theirs):
    """``"median (min-max)"`` of the per-round ratios mine/theirs: each round's two processes ran one after
    the other, so a ratio taken within a round is not moved by the machine's speed drifting between rounds."""
    ratios = [a / b for a, b in zip(mine["runs"], theirs["runs"])]
    return f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})"


def torch_available():
    try:
        import torch  # noqa: F401
        return True
    except ImportError:
        return False


# ------------------------------------------------------------------------------------------- machine
_VECTOR_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "avx512_fp16",
                 "amx_tile", "amx_bf16", "amx_int8", "neon", "asimd", "sve")


def cpu_info(cpuinfo_text=None):
    """``{"cpu": model name, "vector": "AVX-512" | "AVX2" | ..., "vector_flags": [...]}`` from /proc/cpuinfo.

    ``vector`` is the widest x86 SIMD level (AMX noted too); ``vector_flags`` the relevant flags present.
    """
    if cpuinfo_text is None:
        try:
            cpuinfo_text = Path("/proc/cpuinfo").read_text()
        except OSError:
            cpuinfo_text = ""
    model, flags, ids = platform.processor() or platform.machine(), set(), {}
    for line in cpuinfo_text.splitlines():
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key in ("model name", "Model", "cpu model") and value:
            model = value
        elif key in ("flags", "Features") and not flags:
            flags = set(value.split())
        elif key in ("cpu family", "model", "stepping") and key not in ids:
            ids[key] = value
    if len(ids) == 3:  # a VM often shows only "Intel Xeon Processor": the numbers say which generation
        model += f" (family {ids['cpu family']}, model {ids['model']}, stepping {ids['stepping']})"
    present = [f for f in _VECTOR_FLAGS if f in flags]
    if "avx512f" in flags:
        vector = "AVX-512"
    elif "avx2" in flags:
        vector = "AVX2"
    elif "avx" in flags:
        vector = "AVX"
    elif flags & {"asimd", "neon"}:
        vector = "NEON" + (" + SVE" if "sve" in flags else "")
    else:
        vector = "unknown"
    if "amx_tile" in flags:
        vector += " + AMX"
    return {"cpu": model, "vector": vector, "vector_flags": present}


def machine_info(threads):
    info = {"date": time.strftime("%Y-%m-%d %H:%M"), **cpu_info(), "cores": os.cpu_count(),
            "threads": threads, "python": platform.python_version(), "numpy": np.__version__}
    import numba
    from threadpoolctl import threadpool_info
    info["numba"] = numba.__version__
    info["blas"] = ", ".join(f"{p.get('internal_api')} {p.get('version')} ({p.get('architecture')} kernels)"
                             for p in threadpool_info() if p.get("user_api") == "blas")
    return info


def machine_line(info):
    return (f"{info['cpu']}, {info['vector']}, {info['cores']} cores; threads: minigrad {info['threads']}, "
            f"torch {info.get('torch_threads', '-')}")


# ------------------------------------------------------------------------------------------- workers
# Each runs in a fresh process (``--worker SECTION --framework F``) and prints one JSON line.
def set_threads(framework, threads):
    """The thread counts this process runs with: minigrad's Numba + BLAS, or torch's intra-op pool."""
    if framework == "torch":
        import torch
        torch.set_num_threads(threads or os.cpu_count())
        return {"torch": torch.get_num_threads(), "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
                "torch_version": torch.__version__}
    from minigrad.threads import get_num_threads, set_num_threads
    set_num_threads(threads)
    return get_num_threads()


def conv_gemm_shapes(size):
    """(m, k, n) of the three GEMMs of a 3x3 32->32 conv on (BATCH, 32, size, size), padding 1."""
    rows, k = BATCH * size * size, CHANNELS * 9
    return {"forward": (rows, k, CHANNELS), "grad_weight": (CHANNELS, rows, k), "grad_input": (rows, CHANNELS, k)}


def blas_worker(repeats):
    rng = np.random.default_rng(0)
    results = {}
    for size in MAP_SIZES:
        total_time, total_flops = 0.0, 0.0
        for m, k, n in conv_gemm_shapes(size).values():
            a = rng.standard_normal((m, k), dtype=np.float32)
            b = rng.standard_normal((k, n), dtype=np.float32)
            out = np.empty((m, n), np.float32)
            total_time += median_time(lambda: np.matmul(a, b, out=out), repeats)
            total_flops += 2.0 * m * k * n
        results[f"conv{size}"] = {"seconds": total_time, "gflops": total_flops / total_time / 1e9}
    a = rng.standard_normal((2048, 2048), dtype=np.float32)
    t = median_time(lambda: a @ a, repeats)
    results["square2048"] = {"seconds": t, "gflops": 2 * 2048 ** 3 / t / 1e9}
    return results


def layer_cases():
    """(name, constructor from a torch-like namespace, input shape, FLOPs of one forward or None): every
    layer type the studies use, at the sizes they use it (maps of 32 channels, batch 100; the GSC study's
    10,000 points of width 100)."""
    maps = (BATCH, CHANNELS, 32, 32)
    points = (10000, 100)
    cases = []
    for size in MAP_SIZES:
        cases.append((f"conv3x3 {size}x{size}", lambda nn: nn.Conv2d(CHANNELS, CHANNELS, 3, padding=1, bias=False),
                      (BATCH, CHANNELS, size, size), 2.0 * BATCH * size * size * CHANNELS * CHANNELS * 9))
    cases += [
        ("conv3x3 3->32 32x32", lambda nn: nn.Conv2d(3, CHANNELS, 3, padding=1), (BATCH, 3, 32, 32),
         2.0 * BATCH * 32 * 32 * 3 * CHANNELS * 9),
        ("conv3x3 stride 2 32->64 32x32", lambda nn: nn.Conv2d(CHANNELS, 64, 3, stride=2, padding=1), maps,
         2.0 * BATCH * 16 * 16 * CHANNELS * 64 * 9),
        ("conv1x1 32->64 32x32", lambda nn: nn.Conv2d(CHANNELS, 64, 1), maps, 2.0 * BATCH * 32 * 32 * CHANNELS * 64),
        ("batchnorm2d 32x32", lambda nn: nn.BatchNorm2d(CHANNELS), maps, None),
        ("groupnorm 8 groups 32x32", lambda nn: nn.GroupNorm(8, CHANNELS), maps, None),
        ("instancenorm2d 32x32", lambda nn: nn.InstanceNorm2d(CHANNELS), maps, None),
        ("leaky_relu 32x32", lambda nn: nn.LeakyReLU(0.01), maps, None),
        ("relu 32x32", lambda nn: nn.ReLU(), maps, None),
        ("sigmoid 32x32", lambda nn: nn.Sigmoid(), maps, None),
        ("avgpool2 32x32", lambda nn: nn.AvgPool2d(2), maps, None),
        ("maxpool2 32x32", lambda nn: nn.MaxPool2d(2), maps, None),
        ("adaptive_avgpool 32x32", lambda nn: nn.AdaptiveAvgPool2d(1), maps, None),
        ("dropout 0.5 32x32", lambda nn: nn.Dropout(0.5), maps, None),
        ("linear 100->100 (10000, 100)", lambda nn: nn.Linear(100, 100), points, 2.0 * 10000 * 100 * 100),
        ("batchnorm1d (10000, 100)", lambda nn: nn.BatchNorm1d(100), points, None),
        ("layernorm (10000, 100)", lambda nn: nn.LayerNorm(100), points, None),
        ("relu (10000, 100)", lambda nn: nn.ReLU(), points, None),
        ("tanh (10000, 100)", lambda nn: nn.Tanh(), points, None),
        ("selu (10000, 100)", lambda nn: nn.SELU(), points, None),
    ]
    return cases


def layers_worker(framework, repeats):
    rng = np.random.default_rng(0)
    results = {}
    for name, make, shape, flops in layer_cases():
        x = rng.standard_normal(shape, dtype=np.float32)
        if framework == "minigrad":
            from minigrad import nn
            layer = make(nn)
            g = rng.standard_normal(layer(x).shape, dtype=np.float32)

            def forward():
                layer(x)

            def forward_backward():
                layer(x)
                layer.backward(g)
        else:
            import torch
            layer = make(torch.nn)
            tx = torch.from_numpy(x).requires_grad_(True)
            with torch.no_grad():
                tg = torch.from_numpy(rng.standard_normal(tuple(layer(tx).shape), dtype=np.float32))

            def forward():
                with torch.no_grad():
                    layer(tx)

            def forward_backward():
                tx.grad = None
                layer.zero_grad(set_to_none=True)
                layer(tx).backward(tg)
        entry = {"forward": median_time(forward, repeats, min_seconds=0.5),
                 "forward_backward": median_time(forward_backward, repeats, min_seconds=0.5)}
        if flops:
            entry["gflops_fwd_bwd"] = 3 * flops / entry["forward_backward"] / 1e9
        results[name] = entry
    return results


def peak_rss_mb():
    """This process's peak resident memory in MB (VmHWM: ``ru_maxrss`` would keep the parent's peak)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def step_worker(framework, model_name, repeats, num_classes=100):
    """Median time of one training step of ``model_name`` (same weights in both frameworks)."""
    import minigrad
    from minigrad import nn, optim
    from minigrad.models.vgg import build_vgg
    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH, 3, 32, 32), dtype=np.float32)
    y = rng.integers(0, num_classes, BATCH)
    minigrad.manual_seed(0)
    model = build_vgg(model_name, num_classes=num_classes)
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
    return {"seconds": seconds, "peak_rss_mb": peak_rss_mb()}


def run_worker(args):
    # torch first: importing minigrad sets OMP_WAIT_POLICY=PASSIVE for Numba's OpenMP, which must not
    # reach torch's OpenMP runtime (it reads the variable when it loads).
    threads = set_threads(args.framework, args.threads)
    if args.worker == "blas":
        result = blas_worker(args.repeats)
    elif args.worker == "layers":
        result = layers_worker(args.framework, args.repeats)
    else:
        result = step_worker(args.framework, args.worker.split(":", 1)[1], args.repeats)
    print(json.dumps({"threads": threads, "result": result}))


def spawn(worker, framework, threads, repeats):
    command = [sys.executable, "-m", "benchmarks.speed", "--worker", worker, "--framework", framework,
               "--repeats", str(repeats)]
    if threads:
        command += ["--threads", str(threads)]
    out = subprocess.run(command, check=True, capture_output=True, text=True, cwd=ROOT).stdout
    return json.loads(out.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------------- summary
def _median_of(runs, path):
    values = []
    for run in runs:
        value = run
        for key in path:
            value = value[key]
        values.append(value)
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": values}


def summarise(runs):
    """Nested dicts of per-round numbers -> the same nesting with {"median", "min", "max", "runs"} leaves."""
    first = runs[0]
    if isinstance(first, dict):
        return {key: summarise([run[key] for run in runs]) for key in first}
    return _median_of(runs, ())


# ------------------------------------------------------------------------------------------- report
def _ms(entry):
    return f"{1e3 * entry['median']:.2f}"


def report(info, blas, layers, steps):
    machine = machine_line(info)
    lines = [f"minigrad speed, {info['date']}: {machine}",
             f"(numpy {info['numpy']}, numba {info['numba']}, BLAS {info['blas']}, "
             f"torch {info.get('torch_version', 'not installed')}; torch's CPU capability "
             f"{info.get('torch_cpu_capability', '-')}; medians over {info['rounds']} alternating rounds)"]
    if blas:
        lines += ["", f"BLAS sgemm on im2col's GEMMs of a 3x3 32->32 conv, batch 100 ({machine}):",
                  "| shape | GFLOP/s |", "|---|---|"]
        lines += [f"| {name} | {r['gflops']['median']:.1f} |" for name, r in blas.items()]
    if layers:
        lines += ["", f"Layers (float32; batch 100 of 32 channels, or 10,000 rows; ms, medians; {machine}):",
                  "| layer | fwd | fwd+bwd | GFLOP/s | torch fwd | torch fwd+bwd | minigrad/torch fwd+bwd "
                  "(range over rounds) |",
                  "|---|---|---|---|---|---|---|"]
        mine, theirs = layers["minigrad"], layers.get("torch")
        for name, r in mine.items():
            gflops = f"{r['gflops_fwd_bwd']['median']:.0f}" if "gflops_fwd_bwd" in r else ""
            cells = [name, _ms(r["forward"]), _ms(r["forward_backward"]), gflops, "", "", ""]
            if theirs:
                t = theirs[name]
                cells[4:] = [_ms(t["forward"]), _ms(t["forward_backward"]),
                             paired_ratio(r["forward_backward"], t["forward_backward"])]
            lines.append("| " + " | ".join(cells) + " |")
    if steps:
        lines += ["", f"Training step (forward, loss, backward, Adam; batch 100, 100 classes; {machine}):",
                  "| model | minigrad s/step | torch s/step | minigrad/torch (range over rounds) | "
                  "minigrad peak RSS MB | torch peak RSS MB |", "|---|---|---|---|---|---|"]
        for model, r in steps.items():
            mg, tt = r["minigrad"], r.get("torch")
            if tt:
                ratio = paired_ratio(mg["seconds"], tt["seconds"])
                torch_s, torch_rss = f"{tt['seconds']['median']:.3f}", f"{tt['peak_rss_mb']['median']:.0f}"
            else:
                ratio = torch_s = torch_rss = ""
            lines.append(f"| {model} | {mg['seconds']['median']:.3f} | {torch_s} | {ratio} | "
                         f"{mg['peak_rss_mb']['median']:.0f} | {torch_rss} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.speed", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=None, help="threads for minigrad (Numba, BLAS) and torch "
                                                                  "(default: all cores)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds, one process per framework each")
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per process (training steps: half)")
    parser.add_argument("--models", default="VGG08,VGG38,VGG38_BN_RC")
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    parser.add_argument("--skip", default="", help="comma list of sections to skip: blas,layers,steps")
    parser.add_argument("--out", type=Path, default=None, help="JSON file (default benchmarks/results-<date>.json)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--framework", default="minigrad", choices=FRAMEWORKS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        run_worker(args)
        return 0
    frameworks = ["minigrad"] + (["torch"] if torch_available() and not args.no_torch else [])
    skip = set(filter(None, args.skip.split(",")))
    from minigrad.threads import set_num_threads
    info = machine_info(set_num_threads(args.threads))
    info["rounds"] = args.rounds
    print(f"benchmarking on {machine_line(info)}", flush=True)
    sections = ([("blas", ["minigrad"], args.repeats)] if "blas" not in skip else []) + \
        ([("layers", frameworks, args.repeats)] if "layers" not in skip else []) + \
        ([(f"step:{m}", frameworks, max(3, args.repeats // 2)) for m in args.models.split(",")] if "steps" not in skip else [])
    runs = {}
    for round_ in range(args.rounds):
        for section, section_frameworks, repeats in sections:
            for framework in (section_frameworks if round_ % 2 == 0 else section_frameworks[::-1]):
                out = spawn(section, framework, args.threads, repeats)
                runs.setdefault((section, framework), []).append(out["result"])
                if framework == "torch":
                    info["torch_threads"] = out["threads"]["torch"]
                    info["torch_cpu_capability"] = out["threads"]["torch_cpu_capability"]
                    info["torch_version"] = out["threads"]["torch_version"]
                if section.startswith("step:"):
                    print(f"  round {round_ + 1}: {section[5:]:12s} {framework:8s} "
                          f"{out['result']['seconds']:.3f} s/step", flush=True)
        print(f"round {round_ + 1}/{args.rounds} done", flush=True)
    blas = summarise(runs[("blas", "minigrad")]) if ("blas", "minigrad") in runs else {}
    layers = {f: summarise(runs[("layers", f)]) for f in frameworks if ("layers", f) in runs}
    steps = {}
    for (section, framework), results in runs.items():
        if section.startswith("step:"):
            steps.setdefault(section[5:], {})[framework] = summarise(results)
    text = report(info, blas, layers, steps)
    print(text)
    out = args.out or Path(__file__).resolve().parent / f"results-{time.strftime('%Y%m%d-%H%M')}.json"
    out.write_text(json.dumps({"machine": info, "blas": blas, "layers": layers, "steps": steps}, indent=2))
    print(f"\nJSON written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
