"""A study's rows as cluster jobs through submitit: a SLURM job array, or local subprocesses.

    python -m experiments.vgg_depth --preset full --launcher slurm --partition cpu --time-limit 720 \\
        --cpus-per-job 8 --mem-gb 8 --download        # submits the 7 rows as one job array, prints the ids
    python -m experiments.vgg_depth --collect results/vgg_depth   # the table from the rows done so far
    python -m experiments.vgg_depth --launcher local  # the same jobs as local processes (waits for them)

Each row becomes one job that calls the study's own row function, ``fn(config, out_dir, *, data_dir,
download, resume, progress)`` (``vgg_depth.run_row``), exactly as the in-process run does: one row = one run
folder ``OUT/<row>/``. The job first sets Numba's and the BLAS's thread count to the CPUs it was given.

Preemption and time limits. SLURM sends SIGUSR2 before it stops a job (``--signal``; submitit asks for it
90 s before the time limit) and on preemption. submitit catches it and calls the job's ``checkpoint()``,
which resubmits the same row with ``resume=True`` (``RowJob.checkpoint``); submitit then requeues the job.
Nothing needs saving at that moment: the Trainer checkpoints every epoch and ``fit(resume=True)`` redoes the
interrupted epoch exactly, so a requeued row ends with the metrics of an uninterrupted one. A row may be
requeued after a time-out ``max_timeouts`` times (preemptions do not count).

Fitting the cluster. Before submitting, ``sinfo`` says what the partition's nodes have (CPUs, memory) and
its time limit. The defaults fit them: 4 CPUs per job, or the most one node has if fewer; 1440 minutes, or
the partition's limit if shorter; memory: the cluster's default (no ``--mem``). A request no node can
satisfy (``--cpus-per-job``, ``--mem-gb``, ``--time-limit``) is refused, naming the limit and the flag,
instead of a job array that pends forever (SLURM's reason ``PartitionConfig``).

Records. ``OUT/jobs/`` is submitit's folder (pickled jobs, logs ``<job>_0_log.out`` / ``.err``);
``OUT/jobs.json`` maps each submitted row to its job id and logs; each job writes
``OUT/jobs/<job>_row.json`` (host, pid, threads, state: running | requeued | finished | failed, the error).
``row_states`` reads them (and asks ``squeue``, or checks the local process) to tell which rows are
finished, running, pending (with SLURM's reason, and what to do when it can never start), failed (with
the log) or missing. Nothing here unpickles anything.

A study adopts ``--launcher`` in a few lines (``vgg_depth`` does)::

    launch.add_launcher_args(parser)                                    # in build_parser()
    if args.launcher != "none":                                         # in main(), before the in-process loop
        result = launch.launch_rows(run_row, [(row name, row config), ...], args, study=STUDY)
        if result.code == 2 or not result.waited:                       # refused, or submitted to SLURM
            return result.code
    states = launch.row_states(study_dir, expected_row_names)           # in --collect
    print("\\n".join(launch.describe_states(states)))

This lives in ``experiments/`` because it is command-line wiring around a study's rows (flags, run folders
under ``--out``, the collect command); the library itself knows nothing of clusters. submitit is optional
(``pip install -e .[cluster]``): it is imported only when a launcher is used.
"""
import importlib
import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from minigrad.runs import (
    DONE_STATUSES,
    RunDirError,
    load_config,
    load_metrics,
    prepare_run_dir,
    write_json_atomic,
)

__all__ = [
    "LAUNCHERS",
    "LaunchOptions",
    "LauncherError",
    "PartitionLimits",
    "RowJob",
    "RowState",
    "add_launcher_args",
    "describe_states",
    "import_submitit",
    "job_threads",
    "launch_rows",
    "make_executor",
    "partition_limits",
    "row_states",
]

LAUNCHERS = ("none", "local", "slurm")
JOBS_FILE = "jobs.json"     # OUT/jobs.json: row -> job id and logs (written by the submitting process)
JOBS_FOLDER = "jobs"        # OUT/jobs/: submitit's pickles and logs, and each job's own record
LOCAL_TIME_LIMIT = 7 * 24 * 60  # minutes: the local executor always has one (its own default is 2 min)
SLURM_CPUS = 4                 # default CPUs of a SLURM job, when one node of the partition has as many
SLURM_TIME_LIMIT = 1440        # default minutes of a SLURM job, when the partition allows as many
INSTALL_HINT = 'pip install -e ".[cluster]"'


class LauncherError(RuntimeError):
    """The launcher cannot be used as asked (the message says why and what to do)."""


# ----------------------------------------------------------------------------------------- options
def add_launcher_args(parser):
    """--launcher and its options (partition, time limit, CPUs, memory, rows at once)."""
    group = parser.add_argument_group("cluster jobs (submitit; needs " + INSTALL_HINT + ")")
    group.add_argument("--launcher", choices=LAUNCHERS, default="none",
                       help="none: run the rows here, one after the other (default); slurm: submit them as one "
                            "SLURM job array and return; local: the same jobs as local processes, then wait")
    group.add_argument("--partition", default=None, help="SLURM partition (default: the cluster's default)")
    group.add_argument("--time-limit", type=int, default=None, metavar="MIN",
                       help="time limit of each job in minutes (slurm default 1440, or the partition's limit if "
                            "shorter); a row that reaches it is requeued and resumes from its latest checkpoint")
    group.add_argument("--cpus-per-job", type=int, default=None,
                       help="CPUs of each job, and its thread count (slurm default 4, or the most one node of the "
                            "partition has if fewer; local: cores / --max-parallel)")
    group.add_argument("--mem-gb", type=float, default=None, help="memory of each job in GB (default: the cluster's)")
    group.add_argument("--max-parallel", type=int, default=None,
                       help="rows running at once (slurm default: all; local default 1)")
    return parser


@dataclass
class LaunchOptions:
    """How rows become jobs: ``launcher`` "local" or "slurm", and what each job asks for."""

    launcher: str
    partition: str = None
    time_limit: int = None      # minutes
    cpus_per_job: int = None
    mem_gb: float = None
    max_parallel: int = None
    max_timeouts: int = 10      # requeues after a time-out before the row is failed (preemptions are free)

    def __post_init__(self):
        if self.launcher not in ("local", "slurm"):
            raise LauncherError(f"launcher must be 'local' or 'slurm', got {self.launcher!r}")
        for name in ("time_limit", "cpus_per_job", "max_parallel"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise LauncherError(f"--{name.replace('_', '-')} must be a positive whole number, got {value!r}")
        if self.mem_gb is not None and not self.mem_gb > 0:
            raise LauncherError(f"--mem-gb must be positive, got {self.mem_gb!r}")
        if self.launcher == "local" and self.partition is not None:
            raise LauncherError("--partition is a SLURM setting; it means nothing with --launcher local")

    @classmethod
    def from_args(cls, args):
        return cls(args.launcher, partition=args.partition, time_limit=args.time_limit,
                   cpus_per_job=args.cpus_per_job, mem_gb=args.mem_gb, max_parallel=args.max_parallel)

    def resolved(self, n_rows, limits=None):
        """The options with every default filled in for ``n_rows`` rows.

        SLURM: ``limits`` (a ``PartitionLimits``, from ``partition_limits``) fits the defaults to the
        partition and refuses a request none of its nodes can run (LauncherError naming the flag and limit).
        """
        from minigrad.threads import available_cores
        if self.launcher == "slurm":
            parallel = self.max_parallel or n_rows
            cpus = self.cpus_per_job or SLURM_CPUS
            limit = self.time_limit or SLURM_TIME_LIMIT
            if limits is not None:
                cpus, limit = limits.fit(self.cpus_per_job, self.mem_gb, self.time_limit)
        else:
            parallel = self.max_parallel or 1
            cpus = self.cpus_per_job or max(1, available_cores() // parallel)
            limit = self.time_limit or LOCAL_TIME_LIMIT
        return LaunchOptions(self.launcher, self.partition, limit, cpus, self.mem_gb, parallel, self.max_timeouts)


# ----------------------------------------------------------------------------------------- the partition
@dataclass(frozen=True)
class PartitionLimits:
    """A SLURM partition as ``sinfo`` sees it: its nodes' ``(CPUs, memory in MB)`` and its time limit."""

    name: str
    nodes: tuple                # ((cpus, memory_mb), ...), one per node
    max_minutes: int = None     # None: no limit

    def fit(self, cpus=None, mem_gb=None, minutes=None):
        """``(cpus, minutes)`` for a job: the requested values, checked, or the defaults fitted to the partition.

        A job runs on one node, so some node must have both the CPUs and the memory asked for.
        """
        where = f"partition {self.name!r}"
        most_cpus = max(c for c, _ in self.nodes)
        most_mem = max(m for _, m in self.nodes)
        if cpus is not None and cpus > most_cpus:
            raise LauncherError(f"--cpus-per-job {cpus}: no node of {where} has that many CPUs (the largest has "
                                f"{most_cpus}); ask for at most {most_cpus}, or choose another --partition")
        if mem_gb is not None and mem_gb * 1024 > most_mem:
            raise LauncherError(f"--mem-gb {mem_gb:g}: no node of {where} has that much memory (the largest has "
                                f"{most_mem / 1024:.1f} GB); ask for less, or choose another --partition")
        enough_mem = [c for c, m in self.nodes if mem_gb is None or mem_gb * 1024 <= m]
        if cpus is None:
            cpus = min(SLURM_CPUS, max(enough_mem))
        elif cpus > max(enough_mem):
            raise LauncherError(f"--cpus-per-job {cpus} with --mem-gb {mem_gb:g}: no node of {where} has both "
                                f"(the nodes with {mem_gb:g} GB have at most {max(enough_mem)} CPUs)")
        if minutes is None:
            minutes = SLURM_TIME_LIMIT if self.max_minutes is None else min(SLURM_TIME_LIMIT, self.max_minutes)
        elif self.max_minutes is not None and minutes > self.max_minutes:
            raise LauncherError(f"--time-limit {minutes}: {where} allows at most {self.max_minutes} minutes")
        return cpus, minutes

    def describe(self):
        sizes = sorted(set(self.nodes))
        nodes = ", ".join(f"{c} CPUs / {m / 1024:.1f} GB" for c, m in sizes[-3:])
        limit = "no time limit" if self.max_minutes is None else f"time limit {self.max_minutes} min"
        return f"partition {self.name}: {len(self.nodes)} node(s), the largest {nodes}; {limit}"


def _slurm_minutes(text):
    """sinfo's time limit (``infinite``, ``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH[:MM[:SS]]``) in whole minutes
    (None: no limit)."""
    text = text.strip()
    if text.lower() in ("infinite", "unlimited", "n/a", ""):
        return None
    days, _, rest = text.rpartition("-")
    parts = [int(p) for p in rest.split(":")]
    if days:  # D-HH[:MM[:SS]]
        hours, minutes = (parts + [0])[:2]
    elif len(parts) == 3:  # HH:MM:SS
        hours, minutes = parts[:2]
    else:  # MM[:SS]
        hours, minutes = 0, parts[0]
    return (int(days or 0) * 24 + hours) * 60 + minutes  # seconds dropped: a limit, rounded down


def partition_limits(partition=None):
    """``PartitionLimits`` of ``partition`` (default: the cluster's default partition), from ``sinfo``."""
    command = ["sinfo", "--noheader", "--all", "--Node", "--format=%P|%c|%m|%l"]
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise LauncherError(f"--launcher slurm: cannot ask SLURM for its partitions ({' '.join(command)}: "
                            f"{error}); sinfo, sbatch and srun must be on PATH") from None
    if out.returncode != 0:
        raise LauncherError(f"--launcher slurm: {' '.join(command)} failed: {out.stderr.strip() or out.returncode}")
    found, default = {}, None
    for line in out.stdout.splitlines():
        fields = line.strip().split("|")
        if len(fields) != 4:
            continue
        name, cpus, memory, limit = fields
        if name.endswith("*"):
            name = default = name[:-1]
        try:
            node = (int(cpus.rstrip("+")), int(memory.rstrip("+")))
            minutes = _slurm_minutes(limit)
        except ValueError:
            continue  # a line sinfo could not fill in (a node that never registered): not a size to fit
        found.setdefault(name, ([], minutes))[0].append(node)
    if partition is None:
        if default is None:
            raise LauncherError(f"this SLURM cluster has no default partition: choose one with --partition "
                                f"({', '.join(sorted(found)) or 'sinfo lists none'})")
        partition = default
    if partition not in found:
        raise LauncherError(f"--partition {partition}: SLURM has no such partition (sinfo lists: "
                            f"{', '.join(sorted(found)) or 'none'})")
    nodes, minutes = found[partition]
    return PartitionLimits(partition, tuple(nodes), minutes)


def import_submitit(launcher="slurm"):
    """submitit, or a LauncherError that says how to install it."""
    try:
        import submitit
    except ImportError:
        raise LauncherError(f"--launcher {launcher} needs submitit, an optional extra: {INSTALL_HINT} "
                            "(or pip install submitit)") from None
    return submitit


def make_executor(options, folder):
    """A submitit executor for ``options`` (resolved) writing its pickles and logs into ``folder``."""
    submitit = import_submitit(options.launcher)
    try:
        executor = submitit.AutoExecutor(folder=folder, cluster=options.launcher,
                                         **{f"{options.launcher}_max_num_timeout": options.max_timeouts})
    except RuntimeError as error:  # SlurmExecutor refuses to start without srun
        raise LauncherError(f"--launcher slurm: no SLURM here ({error}); sbatch and srun must be on PATH") from None
    params = {"timeout_min": options.time_limit, "cpus_per_task": options.cpus_per_job, "mem_gb": options.mem_gb,
              "nodes": 1, "tasks_per_node": 1}
    if options.launcher == "slurm":
        params.update(slurm_partition=options.partition, slurm_array_parallelism=options.max_parallel)
    executor.update_parameters(**params)
    return executor


# ----------------------------------------------------------------------------------------- the job
def job_threads(requested=None):
    """Threads for a job: the CPUs SLURM gave it, else ``requested``, within this process's cores."""
    import numba

    from minigrad.threads import available_cores
    for variable in ("SLURM_CPUS_PER_TASK", "SLURM_CPUS_ON_NODE"):
        if os.environ.get(variable, "").isdigit():
            requested = int(os.environ[variable])
            break
    ceiling = min(available_cores(), numba.config.NUMBA_NUM_THREADS)
    return max(1, min(requested or ceiling, ceiling))


def _function_path(function):
    """``"module:qualname"`` of a study's row function, so the job imports it instead of unpickling it."""
    module = function.__module__
    if module == "__main__":  # python -m experiments.vgg_depth: the module's real name is in its spec
        spec = getattr(sys.modules["__main__"], "__spec__", None)
        if spec is None:
            raise LauncherError("run the study as a module (python -m experiments.<study>) to use --launcher")
        module = spec.name
    return f"{module}:{function.__qualname__}"


def _resolve(path):
    module, _, qualname = path.partition(":")
    target = importlib.import_module(module)
    for part in qualname.split("."):
        target = getattr(target, part)
    return target


class RowJob:
    """One row as a checkpointable submitit job: ``job()`` trains the row, ``job.checkpoint()`` requeues it.

    ``function`` is ``"module:qualname"`` of the study's row function, called as
    ``function(config, out_dir, resume=resume, progress=False, **row_kwargs)``. This follows submitit's
    ``helpers.Checkpointable`` protocol (submitit calls ``checkpoint`` on any job callable that has one and
    runs the DelayedSubmission it returns after the requeue) without subclassing it, so that importing this
    module does not import submitit.
    """

    def __init__(self, function, row, config, out_dir, row_kwargs=None, cpus=None, resume=False, attempt=1):
        self.function, self.row, self.config = function, row, config
        self.out_dir, self.row_kwargs, self.cpus = str(out_dir), dict(row_kwargs or {}), cpus
        self.resume, self.attempt = resume, attempt

    def __call__(self):
        from minigrad.threads import set_num_threads
        threads = set_num_threads(job_threads(self.cpus))
        folder = Path(self.out_dir) / self.row
        self._record("running", threads=threads)
        again = f" (attempt {self.attempt}: resuming from the latest checkpoint)" if self.attempt > 1 else ""
        print(f"[{self.row}] job {self._job_id()} on {socket.gethostname()}, {threads} thread(s), "
              f"writing {folder}{again}", flush=True)
        try:
            summary = _resolve(self.function)(self.config, self.out_dir, resume=self.resume, progress=False,
                                              **self.row_kwargs)
        except Exception as error:
            self._record("failed", threads=threads, error=f"{type(error).__name__}: {error}")
            raise
        status = summary.get("status") if isinstance(summary, dict) else None
        self._record(status if status in DONE_STATUSES else "failed", threads=threads,
                     error=None if status in DONE_STATUSES else f"the row ended with status {status!r}")
        print(f"[{self.row}] {status}: {folder}", flush=True)
        return summary

    def checkpoint(self, *args, **kwargs):
        """Called by submitit on SIGUSR2 (preemption, time limit): the same row, resumed, after the requeue."""
        from submitit.helpers import DelayedSubmission
        self._record("requeued")
        print(f"[{self.row}] interrupted: requeued, it will resume from its latest checkpoint", flush=True)
        return DelayedSubmission(RowJob(self.function, self.row, self.config, self.out_dir, self.row_kwargs,
                                        self.cpus, resume=True, attempt=self.attempt + 1))

    # the job's own record, OUT/jobs/<job>_row.json
    @staticmethod
    def _job_id():
        from submitit import JobEnvironment
        return JobEnvironment().job_id

    def _record(self, state, **extra):
        from submitit import JobEnvironment
        env = JobEnvironment()
        write_json_atomic(Path(env.paths.folder) / f"{env.job_id}_row.json", {
            "row": self.row, "job_id": env.job_id, "state": state, "attempt": self.attempt, "host": socket.gethostname(),
            "pid": os.getpid(), "time": time.strftime("%Y-%m-%dT%H:%M:%S"), **extra})


# ----------------------------------------------------------------------------------------- submitting
@dataclass
class LaunchResult:
    """What ``launch_rows`` did: ``code`` (0 ok, 1 a row failed, 2 nothing submitted), ``waited`` (local),
    the rows submitted with their job ids and logs, and those skipped because they were done."""

    code: int
    waited: bool = False
    submitted: list = field(default_factory=list)
    reused: list = field(default_factory=list)


def _say(*parts):
    print(*parts, flush=True)


def _error(message):
    print(f"error: {message}", file=sys.stderr, flush=True)


def launch_rows(function, rows, args, *, study=None, options=None, poll_s=2.0):
    """Submit ``rows`` = [(row name, config)] of a study as jobs running ``function``; returns a LaunchResult.

    Uses the study's common flags on ``args`` (``out``, ``resume``, ``data_dir``, ``download``, ``preset``) and
    the launcher options (``LaunchOptions.from_args(args)`` unless ``options`` is given). Before anything is
    submitted every row folder is checked as an in-process run would (``prepare_run_dir``: a config that
    differs, an unfinished row without ``--resume``), a row whose job is still queued or running refuses a
    second job, finished rows are reused, and the data is found (or downloaded, once). SLURM: one job array,
    then return. Local: at most ``max_parallel`` rows at once, waiting for all of them.
    """
    out_dir = Path(args.out).absolute()
    try:
        function_path = function if isinstance(function, str) else _function_path(function)
        options = options or LaunchOptions.from_args(args)
        import_submitit(options.launcher)
        limits = partition_limits(options.partition) if options.launcher == "slurm" else None
        options = options.resolved(len(rows), limits)
        _check_preset(out_dir, getattr(args, "preset", None))
        todo, reused = _check_rows(rows, out_dir, args.resume)
        if todo:
            check_data([config for _, config in todo], args.data_dir, args.download)
            executor = make_executor(options, out_dir / JOBS_FOLDER)
    except (LauncherError, RunDirError, FileNotFoundError, ValueError, OSError) as error:
        _error(error)
        return LaunchResult(2)
    if not todo:
        _say(f"every row is done already ({len(reused)}); nothing to submit")
        return LaunchResult(0, waited=options.launcher == "local", reused=reused)
    row_kwargs = {"data_dir": str(Path(args.data_dir).absolute()) if args.data_dir else None,
                  "download": bool(args.download)}
    if getattr(args, "tensorboard", None):  # --tensorboard DIR: each job writes its row's events to DIR/<row>/
        row_kwargs["tensorboard"] = str(Path(args.tensorboard).absolute())
    jobs = [RowJob(function_path, name, config, out_dir, dict(row_kwargs, row=name), options.cpus_per_job,
                   resume=True) for name, config in todo]
    # resume=True in the job is safe: _check_rows already refused unfinished rows without --resume, so
    # what a job may find is its own folder, or a folder this same submission was asked to continue.
    module = function_path.split(":")[0]
    study = study or module.rsplit(".", 1)[-1]
    collect = f"python -m {module} --collect {out_dir}"
    if options.launcher == "slurm":
        _say(f"SLURM {limits.describe()}")
        submitted = _record_jobs(out_dir, study, args, options, todo, executor.submit_array(jobs))
        array = submitted[0]["job_id"].split("_")[0]
        _say(f"Submitted {len(submitted)} row(s) of {study} to SLURM as job array {array} "
             f"(at most {options.max_parallel} at once; {options.cpus_per_job} CPUs, {options.time_limit} min"
             f"{f', {options.mem_gb:g} GB' if options.mem_gb else ''} each"
             f"{f', partition {options.partition}' if options.partition else ''}):")
        _print_rows(submitted)
        _say(f"Job records: {out_dir / JOBS_FILE}")
        _say(f"Watch:       squeue -j {array}        Cancel: scancel {array}")
        _say(f"Collect:     {collect}")
        return LaunchResult(0, submitted=submitted, reused=reused)
    submitted, failed = _run_local(executor, jobs, todo, out_dir, study, args, options, poll_s)
    _say(f"Collect again any time: {collect}")
    return LaunchResult(1 if failed else 0, waited=True, submitted=submitted, reused=reused)


def _check_rows(rows, out_dir, resume):
    """Split rows into (to submit, done); raise before any submission if a row may not run."""
    live = {s.row: s for s in row_states(out_dir) if s.status in ("running", "pending")}
    busy = [f"{name} (job {live[name].job_id}, {live[name].detail})" for name, _ in rows if name in live]
    if busy:
        raise LauncherError(f"rows already queued or running: {'; '.join(busy)}. Wait for them "
                            "(--collect shows their state) or cancel them first.")
    todo, reused = [], []
    for name, config in rows:
        run = prepare_run_dir(out_dir, name, config, resume=resume)  # the in-process run's checks, same words
        if run.done:
            _say(f"[{name}] already {run.summary.get('status')}; reusing {run.path}")
            reused.append(name)
        else:
            todo.append((name, config))
    return todo, reused


def _check_preset(out_dir, preset):
    """One study folder holds the jobs of one preset (a table never mixes presets)."""
    record = _read_json(out_dir / JOBS_FILE) or {}
    if record.get("preset") not in (None, preset):
        raise LauncherError(f"{out_dir / JOBS_FILE}: this folder holds jobs of preset {record['preset']!r}, "
                            f"not {preset!r}; choose another --out")


def check_data(configs, data_dir, download):
    """Find each CIFAR dataset the rows read (download it once here, not in every job)."""
    names = sorted({c.get("dataset") for c in configs if c.get("dataset") in ("cifar10", "cifar100")})
    if not names:
        return
    from minigrad.data import find_cifar, load_cifar
    for name in names:
        if find_cifar(name, data_dir) is None:
            load_cifar(name, data_dir=data_dir, download=download)  # raises the usual "not found" message


def _record_jobs(out_dir, study, args, options, todo, jobs):
    """Write OUT/jobs.json (earlier rows' entries kept) and return this submission's entries."""
    path = out_dir / JOBS_FILE
    record = _read_json(path) or {}
    entries = []
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    for (name, _), job in zip(todo, jobs):
        entries.append({"row": name, "job_id": str(job.job_id), "launcher": options.launcher,
                        "stdout": str(job.paths.stdout), "stderr": str(job.paths.stderr), "submitted": stamp})
    rows = {r["row"]: r for r in record.get("rows", [])}
    rows.update({e["row"]: e for e in entries})
    write_json_atomic(path, {"study": study, "preset": getattr(args, "preset", None),
                             "folder": str(out_dir / JOBS_FOLDER), "rows": list(rows.values())})
    return entries


def _print_rows(entries):
    width = max(len(e["row"]) for e in entries)
    for e in entries:
        _say(f"  {e['row']:<{width}}  job {e['job_id']:<10}  log {e['stdout']}")


def _run_local(executor, jobs, todo, out_dir, study, args, options, poll_s):
    """Local jobs, ``max_parallel`` at a time: start, wait, report each; returns (entries, failed rows)."""
    waiting = list(zip(todo, jobs))
    running, entries, failed = [], [], []
    _say(f"Running {len(jobs)} row(s) of {study} as local submitit jobs ({options.max_parallel} at once, "
         f"{options.cpus_per_job} thread(s) each); Ctrl-C stops them")
    try:
        while waiting or running:
            if waiting and len(running) < options.max_parallel:
                wave = waiting[:options.max_parallel - len(running)]
                waiting = waiting[len(wave):]
                started = executor.submit_array([job for _, job in wave])
                new = _record_jobs(out_dir, study, args, options, [row for row, _ in wave], started)
                _print_rows(new)
                entries += new
                running += list(zip(new, started))
            time.sleep(poll_s)
            for entry, job in list(running):
                if not job.done():
                    continue
                running.remove((entry, job))
                state = _row_state(out_dir, entry["row"], entry)
                if state.status in DONE_STATUSES:
                    _say(f"[{entry['row']}] {state.status} (job {entry['job_id']})")
                else:
                    failed.append(entry["row"])
                    _say(f"[{entry['row']}] failed (job {entry['job_id']}): {state.detail}; log {state.log}")
    except KeyboardInterrupt:
        for _, job in running:
            job.cancel(check=False)
        raise
    return entries, failed


# ----------------------------------------------------------------------------------------- states
@dataclass
class RowState:
    """Where a row stands: ``status`` finished | diverged | running | pending | failed | unfinished | missing."""

    row: str
    status: str
    folder: Path
    job_id: str = None
    log: Path = None     # the job's error log (stderr; stdout is next to it, .out)
    detail: str = ""


def _read_json(path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


# SLURM's reasons for a pending job that no waiting will resolve (squeue %r), and what they mean.
NEVER_STARTS = {
    "PartitionConfig": "it asks for more CPUs or memory than any node of its partition has",
    "PartitionTimeLimit": "its time limit is longer than its partition allows",
    "PartitionNodeLimit": "it asks for more nodes than its partition allows",
    "BadConstraints": "no node of its partition satisfies its request",
}


def _pending_detail(job_id, reason):
    """SLURM's reason a job pends, and what to do when it can never start."""
    if not reason or reason in ("None", "(null)"):
        return ""
    if reason in NEVER_STARTS:
        return (f" (reason {reason}: {NEVER_STARTS[reason]}, so it will never start; scancel {job_id.split('_')[0]} "
                "and submit again with a smaller --cpus-per-job, --mem-gb or --time-limit)")
    return f" (reason {reason})"


def _slurm_alive(job_ids):
    """{job id: (SLURM state, reason)} of the jobs still known to squeue; None if squeue cannot answer."""
    arrays = sorted({j.split("_")[0] for j in job_ids})
    try:
        out = subprocess.run(["squeue", "-h", "-r", "-o", "%i|%T|%r", "-j", ",".join(arrays)],
                             capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        # squeue rejects ids it has forgotten (ended more than MinJobAge ago): then nothing is alive
        return {} if "Invalid job id" in out.stderr else None
    states = {}
    for line in out.stdout.splitlines():
        job_id, _, rest = line.strip().partition("|")
        state, _, reason = rest.partition("|")
        states[job_id] = (state, reason)
    return states


def _local_alive(job_id):
    """True if the local job's controller process (pid = job id) still runs."""
    try:
        cmdline = Path(f"/proc/{int(job_id)}/cmdline").read_bytes()
    except (OSError, ValueError):
        try:
            os.kill(int(job_id), 0)
        except (OSError, ValueError):
            return False
        return True
    return b"submitit" in cmdline


def _progress(folder):
    try:
        done = len(load_metrics(folder))
        return f"{done}/{load_config(folder).get('epochs', '?')} epochs"
    except (OSError, ValueError):
        return "no epoch done yet"


def _row_state(out_dir, row, entry, slurm_states=None):
    """The state of one row from its folder, its job record and (if needed) the cluster."""
    folder = Path(out_dir) / row
    summary = _read_json(folder / "summary.json") or {}
    status = summary.get("status")
    if status in DONE_STATUSES:
        return RowState(row, status, folder, entry and entry["job_id"],
                        detail="" if status == "finished" else f"diverged: {summary.get('diverged')}")
    if entry is None:
        if not folder.exists():
            return RowState(row, "missing", folder, detail="no run folder: not run or not submitted")
        if status == "failed":
            return RowState(row, "failed", folder, detail=summary.get("error", "failed"))
        return RowState(row, "unfinished", folder,
                        detail=f"{_progress(folder)}; no job record (continue it with --resume)")
    job_id, log = entry["job_id"], Path(entry["stderr"])
    own = _read_json(Path(entry["stderr"]).parent / f"{job_id}_row.json") or {}
    if entry.get("launcher") == "slurm":
        states = slurm_states if slurm_states is not None else _slurm_alive([job_id])
        alive, reason = (None, "") if states is None else states.get(job_id, (None, ""))
        if states is None:
            return RowState(row, "unknown", folder, job_id, log, f"squeue did not answer; {_progress(folder)}")
    else:
        alive, reason = ("RUNNING" if _local_alive(job_id) else None), ""
    if alive:
        pending = alive not in ("RUNNING", "COMPLETING")
        what = "requeued, waiting to resume" if own.get("state") == "requeued" else alive.lower()
        if pending:
            what += _pending_detail(job_id, reason)
        return RowState(row, "pending" if pending else "running", folder, job_id, log,
                        f"{what}; {_progress(folder)}")
    if own.get("state") == "failed":
        return RowState(row, "failed", folder, job_id, log, own.get("error") or "failed")
    if status == "failed":
        return RowState(row, "failed", folder, job_id, log, summary.get("error", "failed"))
    if not own:
        return RowState(row, "failed", folder, job_id, log, "the job ended without starting the row")
    return RowState(row, "failed", folder, job_id, log,
                    f"the job ended while the row was {own.get('state')} ({_progress(folder)}): killed "
                    "(time limit, memory, node)?")


def row_states(study_dir, expected=()):
    """RowState of every row of a study folder: its row folders, its submitted jobs and ``expected`` names."""
    study_dir = Path(study_dir)
    record = _read_json(study_dir / JOBS_FILE) or {}
    entries = {e["row"]: e for e in record.get("rows", [])}
    names = list(expected) + [n for n in entries if n not in expected]
    if study_dir.is_dir():
        names += sorted(p.name for p in study_dir.iterdir()
                        if (p / "config.json").exists() and p.name not in names)
    slurm_ids = [e["job_id"] for e in entries.values() if e.get("launcher") == "slurm"]
    slurm_states = _slurm_alive(slurm_ids) if slurm_ids else {}
    return [_row_state(study_dir, name, entries.get(name), slurm_states) for name in names]


def describe_states(states):
    """Lines for the user: a count per status, then one line per row that is not finished."""
    order = ("finished", "diverged", "running", "pending", "unfinished", "failed", "unknown", "missing")
    counts = {s: sum(st.status == s for st in states) for s in order}
    lines = ["Rows: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n)]
    for st in states:
        if st.status == "finished":
            continue
        job = f"job {st.job_id}: " if st.job_id else ""
        log = f"; log {st.log} (and {Path(st.log).with_suffix('.out').name})" if st.log and st.status == "failed" else ""
        lines.append(f"  {st.status:<10} {st.row}  {job}{st.detail}{log}")
    return lines
