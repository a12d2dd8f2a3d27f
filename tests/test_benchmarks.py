"""benchmarks.speed: the machine description printed beside every figure, and the report's tables."""
import pytest

speed = pytest.importorskip("benchmarks.speed")

SAPPHIRE_RAPIDS = """processor	: 0
vendor_id	: GenuineIntel
cpu family	: 6
model		: 143
model name	: Intel(R) Xeon(R) Platinum 8480+
stepping	: 8
flags		: fpu sse sse2 avx avx2 fma avx512f avx512bw avx512vl avx512_vnni avx512_bf16 amx_tile amx_bf16
"""
ZEN3 = "model name	: AMD EPYC 7B13 64-Core Processor\nflags		: fpu sse2 avx avx2 fma\n"
ARM = "processor	: 0\nFeatures	: fp asimd evtstrm aes sve\n"


@pytest.mark.parametrize("text, cpu, vector", [
    (SAPPHIRE_RAPIDS, "Intel(R) Xeon(R) Platinum 8480+ (family 6, model 143, stepping 8)", "AVX-512 + AMX"),
    (ZEN3, "AMD EPYC 7B13 64-Core Processor", "AVX2"),
    (ARM, None, "NEON + SVE"),
])
def test_cpu_info_names_the_model_and_the_widest_vector_extension(text, cpu, vector):
    info = speed.cpu_info(text)
    assert info["vector"] == vector
    if cpu is not None:
        assert info["cpu"] == cpu
    assert ("avx512f" in info["vector_flags"]) == (vector.startswith("AVX-512"))


def test_report_prints_the_machine_and_threads_beside_each_table():
    def stat(*values):
        return speed.summarise(list(values))
    info = {"date": "today", "cpu": "Some CPU", "vector": "AVX2", "cores": 2, "threads": {"numba": 2, "blas": 2},
            "torch_threads": 2, "numpy": "2", "numba": "0", "blas": "openblas", "rounds": 2}
    layers = {f: {"conv3x3 8x8": {"forward": stat(1e-3, 2e-3), "forward_backward": stat(3e-3, 3e-3),
                                  "gflops_fwd_bwd": stat(10.0, 12.0)}} for f in ("minigrad", "torch")}
    steps = {"VGG08": {f: {"seconds": stat(0.1, 0.2), "peak_rss_mb": stat(100.0, 110.0)} for f in ("minigrad", "torch")}}
    # ratios are taken within each round (paired), then their median: rounds 0.5, 0.5, 3.0 -> 0.50 (0.50-3.00),
    # where the ratio of the medians would read 3.0 / 2.0 = 1.50
    steps["VGG38"] = {"minigrad": {"seconds": stat(1.0, 3.0, 3.0), "peak_rss_mb": stat(1.0, 1.0, 1.0)},
                      "torch": {"seconds": stat(2.0, 6.0, 1.0), "peak_rss_mb": stat(1.0, 1.0, 1.0)}}
    text = speed.report(info, {}, layers, steps)
    tables = text.split("\n\n")[1:]
    assert len(tables) == 2 and all("Some CPU, AVX2, 2 cores; threads: minigrad" in t for t in tables)
    assert "| VGG08 | 0.150 | 0.150 | 1.00 (1.00-1.00) | 105 | 105 |" in text
    assert "| conv3x3 8x8 | 1.50 | 3.00 | 11 | 1.50 | 3.00 | 1.00 (1.00-1.00) |" in text
    assert "| VGG38 | 3.000 | 2.000 | 0.50 (0.50-3.00) | 1 | 1 |" in text
