"""The GSC study's synthetic part, measured: every dataset of one architecture, in worker processes, merged.

One row of the study is one architecture measured on ``config["datasets"]`` fresh datasets of
``config["points"]`` points (``minigrad.measure.gsc.measure_architecture``: a freshly initialised network
per dataset, the whole dataset one batch). Dataset k gets the seeds

    network:  [seed, 2, architecture index + 1, k + 1]      dataset:  [seed, 1, k + 1]

so every architecture sees the same datasets, and the sums (``GradientScaleStats``) are merged in dataset
order: the result does not depend on how many workers measured it. The workers are processes of one
BLAS and one Numba thread each (``worker_pool``): the work is many independent datasets, and processes
also parallelise NumPy's element-wise work, which threads would not.

``summarise`` turns the merged sums into the table's figures: GSC(1, 0) and GSC(L, 0), the least-squares
slope of log10 GSC(l, 0) over l = 1..L with its R^2 and growth per layer 10^slope, whether that is an
explosion (``minigrad.measure.gsc.explodes``), and the pre-activation statistics at l = 1 and l = L.
"""
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor, as_completed

import numpy as np

from .. import threads
from ..models.mlp import ARCHITECTURES, EXPLODING_IN_PAPER
from ..runs import json_safe
from . import gsc as G

__all__ = ["WorkerPool", "worker_pool", "measure_one", "measure_datasets", "measure_row", "summarise", "curve_rows"]


def _single_threaded():
    """Worker start-up: one BLAS and one Numba thread, so N workers use N cores."""
    threads.set_num_threads(1)


def worker_pool(workers, datasets):
    """``workers`` single-threaded worker processes (None for one: the work then runs here)."""
    workers = max(1, min(workers, datasets))
    if workers == 1:
        return None
    # spawn, not fork: forking a process whose BLAS and Numba thread pools are running is unsafe
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_single_threaded)


class WorkerPool:
    """A context manager holding one ``worker_pool`` (``.pool``) for several rows, shut down at exit."""

    def __init__(self, workers, datasets):
        self.workers, self.pool = max(1, min(workers, datasets)), None

    def __enter__(self):
        self.pool = worker_pool(self.workers, self.workers)
        return self

    def __exit__(self, *exc):
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)
        self.pool = None
        return False


def measure_one(architecture, k, config):
    """GSC sums of ``architecture`` on dataset ``k`` of the study (a worker process runs this):
    ``(k, (stats, CPU seconds))``."""
    arch_index = list(ARCHITECTURES).index(architecture)
    started = time.process_time()  # CPU time: on a shared machine the wall time says little
    stats = G.measure_architecture(
        architecture, n_points=config["points"], depth=config["depth"], width=config["width"],
        # seed words are never 0: SeedSequence pads with zeros, so [s, 2, 0] would equal [s, 2]
        seed=[config["seed"], 2, arch_index + 1, k + 1], dataset_seed=[config["seed"], 1, k + 1],
        dtype=np.dtype(config["dtype"]))
    return k, (stats, time.process_time() - started)


def measure_datasets(config, pool, progress=False):
    """Measure every dataset (in ``pool``, or here with one thread when it is None), merged in dataset
    order. Returns (stats, CPU seconds)."""
    from tqdm.auto import tqdm

    architecture, n = config["architecture"], config["datasets"]
    bar = tqdm(total=n, desc=f"{architecture:>10}", unit="dataset", disable=not progress, leave=True)
    results = {}
    try:
        if pool is None:
            before = threads.get_num_threads()["numba"]
            threads.set_num_threads(1)
            try:
                for k in range(n):
                    results[k] = measure_one(architecture, k, config)[1]
                    bar.update(1)
            finally:
                threads.set_num_threads(before)
        else:
            for future in as_completed([pool.submit(measure_one, architecture, k, config) for k in range(n)]):
                k, result = future.result()
                results[k] = result
                bar.update(1)
    finally:
        bar.close()
    total = G.GradientScaleStats(config["depth"])
    for k in range(n):
        total.merge(results[k][0])
    return total, sum(cpu for _, cpu in results.values())


def measure_row(config, pool=None, progress=False):
    """One architecture's row: ``(stats, summary)``, the summary JSON-ready with status, wall and CPU seconds.
    Without ``pool``, a pool of the current thread count is made for the row and shut down after it."""
    started = time.perf_counter()
    own = pool is None
    if own:
        pool = worker_pool(threads.get_num_threads()["numba"], config["datasets"])
    try:
        stats, cpu_seconds = measure_datasets(config, pool, progress)
    finally:
        if own and pool is not None:
            pool.shutdown()
    seconds = time.perf_counter() - started
    return stats, {"status": "finished", **json_safe(summarise(config["architecture"], stats, seconds)),
                   "cpu_seconds": cpu_seconds}


def summarise(architecture, stats, seconds=None):
    """The table's figures for one architecture."""
    gsc, L = stats.gsc, stats.n_layers
    slope, r_squared = G.log_fit(gsc)
    return {
        "architecture": architecture, "layers": L, "gsc_1": float(gsc[1]), "gsc_L": float(gsc[L]),
        "log10_slope": slope, "growth_per_layer": G.growth_per_layer(gsc), "fit_r2": r_squared,
        "explodes": G.explodes(gsc), "explodes_in_paper": architecture in EXPLODING_IN_PAPER,
        "pre_std_1": float(stats.pre_activation_std[1]), "pre_std_L": float(stats.pre_activation_std[L]),
        "sign_div_1": float(stats.sign_diversity[1]), "sign_div_L": float(stats.sign_diversity[L]),
        "datasets": stats.n_batches, "points": stats.n_points, "seconds": seconds,
    }


def curve_rows(curves):
    """``{architecture: GradientScaleStats}`` -> rows (architecture, layer, gsc, pre_activation_std,
    sign_diversity) for l = 0..L: the study's ``gsc_curves.csv``."""
    return [{"architecture": a, "layer": int(l), "gsc": float(g), "pre_activation_std": float(s),
             "sign_diversity": float(d)}
            for a, stats in curves.items()
            for l, g, s, d in zip(stats.layers, stats.gsc, stats.pre_activation_std, stats.sign_diversity)]
