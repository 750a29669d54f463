"""Run the benchmarks, print the tables, write ``plots/bench_step.png``,
``plots/bench_optimizer.png`` and ``plots/bench_family.png``.

Sections (``--only`` / ``--skip``): ``step`` (the seed training step, on an idle machine and with
one core kept busy by a ``while True: pass`` process that the benchmark starts and stops itself),
``mlp`` (784 -> 1024 -> ReLU -> 1024 -> ReLU -> 10, batch 256, Adam), ``optimizer`` (AMSGrad alone
on the seed model), ``sweep`` (AMSGrad over sizes against the same-streams loop), ``optimizers``
(every optimizer of the family alone, :data:`benchmarks.impls.FAMILY`), ``lowp`` (Adam alone on
float32, bfloat16 and float16 storage, :data:`benchmarks.impls.LOWP`), ``startup``.

Method: every implementation lives in its own worker process (``benchmarks.worker``), built and
warmed once. In each round the parent asks every worker, in a rotated order, for a block of timed
calls, with a short pause between blocks so that a library's spinning thread pool goes idle before
the next one runs. Reported: the median of all calls, the interquartile range, and ratios taken
per round (peer's round median / minnet's round median) and then medianed, so slow drift of the
machine's load cancels out. Run it on an otherwise idle machine; the load average is printed.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np
from tqdm import tqdm

from benchmarks import impls

ROOT = Path(__file__).resolve().parent.parent
PAUSE = 0.1  # seconds between blocks
#: ``--baseline DIR``: another checkout of minnet whose own workers run beside this one's.
BASELINE: Path | None = None
#: Suffix of a baseline worker's name.
AT_BASELINE = " @baseline"
POLICY_BLOCK = 0.4  # seconds per block at least, in the whole-step sections


class Worker:
    """A ``benchmarks.worker`` subprocess serving blocks of timed calls, importing minnet (and
    the benchmark's own code) from the checkout ``root``."""

    def __init__(self, *args: str, root: Path = ROOT) -> None:
        env = dict(
            os.environ, PYTHONPATH=os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])
        )
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.worker", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=root,
        )
        hello = self.proc.stdout.readline()
        msg = json.loads(hello) if hello else {"skip": "worker failed to start (see stderr)"}
        self.skip: str | None = msg.get("skip")
        #: One warm call's time per instance (``{key: seconds}``), as the worker measured it.
        self.per_call: dict[str, float] = msg.get("per_call", {})
        if self.skip:
            self.close()

    def run(self, k: int, key: str = "") -> list[float]:
        """Time ``k`` calls of instance ``key`` (default: the first); return their durations in
        seconds."""
        self.proc.stdin.write(f"run {k} {key}\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def close(self) -> None:
        """Stop the worker."""
        if self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait(timeout=60)


def alternate(
    workers: dict[str, Worker], rounds: int, k: int | dict[str, int], key: str = ""
) -> dict:
    """Run ``rounds`` rounds of ``k`` calls per worker (of instance ``key``), rotating the order
    every round.

    Returns ``{name: {"all": [...], "rounds": [round medians], "round_means": [...]}}``.
    """
    names = list(workers)
    out = {n: {"all": [], "rounds": [], "round_means": []} for n in names}
    for r in range(rounds):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            time.sleep(PAUSE)
            times = workers[name].run(k[name] if isinstance(k, dict) else k, key)
            out[name]["all"].extend(times)
            out[name]["rounds"].append(statistics.median(times))
            out[name]["round_means"].append(statistics.fmean(times))
    return out


@contextmanager
def busy_core() -> Iterator[None]:
    """Keep one core busy with another process (``python -c 'while True: pass'``) meanwhile."""
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)
        yield
    finally:
        proc.kill()
        proc.wait()


def add_baseline(workers: dict[str, Worker], names: Iterable[str], *args: str) -> None:
    """With ``--baseline``, start the baseline checkout's worker ``args`` as ``name +
    AT_BASELINE`` for each of ``names`` (minnet's own rows) that ``workers`` holds."""
    if BASELINE is None:
        return
    for name in list(names):
        if name in workers:
            w = Worker(*args, root=BASELINE)
            if not w.skip:
                workers[name + AT_BASELINE] = w


#: ``(section, row, size, per-round baseline time / this checkout's time)`` of every row that
#: has a baseline worker, for :func:`print_baseline`.
BASELINE_RATIOS: list[tuple[str, str, str, list[float], float, float]] = []


def record_baseline(section: str, res: dict, size: str = "") -> None:
    """Keep the per-round ratios of every ``name`` against ``name + AT_BASELINE`` in ``res``."""
    for name, r in res.items():
        b = res.get(name + AT_BASELINE)
        if b is not None:
            ratios = [a / c for a, c in zip(b["rounds"], r["rounds"])]
            BASELINE_RATIOS.append(
                (section, name, size, ratios, statistics.median(r["all"]),
                 statistics.median(b["all"]))
            )  # fmt: skip


def print_baseline() -> None:
    """This checkout against ``--baseline``: per-round time ratios (baseline / this)."""
    print(f"## This checkout against the baseline ({BASELINE})")
    print()
    print(
        "| section | row | params | this us | baseline us | baseline / this time "
        "(per-round median, min-max) |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for section, name, size, ratios, this, base in BASELINE_RATIOS:
        print(
            f"| {section} | {name} | {size} | {this * 1e6:.1f} | {base * 1e6:.1f} | "
            f"{statistics.median(ratios):.3f} ({min(ratios):.3f}-{max(ratios):.3f}) |"
        )
    print()


def summarize(res: dict, base: str) -> list[dict]:
    """Median, quartiles and per-round ratio against ``base`` for every implementation."""
    rows = []
    for name, r in res.items():
        q1, med, q3 = np.percentile(r["all"], [25, 50, 75])
        ratios = [a / b for a, b in zip(r["rounds"], res[base]["rounds"])] if base in res else []
        rows.append(
            {
                "name": name,
                "median": med,
                "q1": q1,
                "q3": q3,
                "round_min": min(r["rounds"]),
                "round_max": max(r["rounds"]),
                "ratio": statistics.median(ratios) if ratios else float("nan"),
                # base's time over this one's, per round: how the README quotes minnet
                # against a peer ("0.85x JAX's time")
                "base_ratio": statistics.median(1 / x for x in ratios) if ratios else float("nan"),
                "ratio_min": min(ratios) if ratios else float("nan"),
                "ratio_max": max(ratios) if ratios else float("nan"),
                "mean": statistics.fmean(r["all"]),
                "p90": float(np.percentile(r["all"], 90)),
                "mean_ratio": (
                    statistics.median(
                        a / b for a, b in zip(r["round_means"], res[base]["round_means"])
                    )
                    if base in res
                    else float("nan")
                ),
            }
        )
    return rows


def print_busy_table(
    rows: list[dict], idle: list[dict], base: str, floor: float | None = None
) -> None:
    """Markdown table for a run under load: means and 90th percentiles, ratios of round means,
    and each implementation's mean against its own idle median (and with ``floor``, the
    one-core floor in seconds, each mean's share of it)."""
    idle_median = {r["name"]: r["median"] for r in idle}
    print(
        "| implementation | mean us | median us | p90 us | x minnet mean (per-round median) "
        "| mean / own idle median |" + (" share of one core's floor |" if floor else "")
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |" + (" ---: |" if floor else ""))
    for r in rows:
        own = idle_median.get(r["name"])
        print(
            f"| {r['name']} | {r['mean'] * 1e6:.0f} | {r['median'] * 1e6:.0f} | "
            f"{r['p90'] * 1e6:.0f} | {r['mean_ratio']:.2f} | "
            f"{r['mean'] / own if own else float('nan'):.2f} |"
            + (f" {floor / r['mean']:.0%} |" if floor else "")
        )


def print_table(
    rows: list[dict], base: str, unit: float = 1e6, label: str = "us", floor: float | None = None
) -> None:
    """Markdown table: time per call and how many times slower than ``base``; with ``floor``
    (seconds: the machine's floor for this computation, :func:`work_floor`) a last column gives
    each row's share of it (floor / median time)."""
    print(
        f"| implementation | median {label} | IQR {label} | round medians {label} | "
        f"x {base} time (per-round median, min-max) |" + (" share of floor |" if floor else "")
    )
    print("| --- | ---: | ---: | ---: | ---: |" + (" ---: |" if floor else ""))
    for r in rows:
        print(
            f"| {r['name']} | {r['median'] * unit:.0f} | {r['q1'] * unit:.0f}-{r['q3'] * unit:.0f}"
            f" | {r['round_min'] * unit:.0f}-{r['round_max'] * unit:.0f} | "
            f"{r['ratio']:.2f} ({r['ratio_min']:.2f}-{r['ratio_max']:.2f}) |"
            + (f" {floor / r['median']:.0%} |" if floor else "")
        )


# -- the machine's floor (benchmarks.floor) ------------------------------------------------------

#: The seed step's products (forward 64x1000x100 and 64x100x10; dW of both layers and dX of
#: the second: the first layer's input gradient is not computed) and its AMSGrad pass (101,110
#: float32 parameters: param, grad and three state arrays read, param and state written).
SEED_FLOP = 2 * 64 * (2 * 1000 * 100 + 3 * 100 * 10)
SEED_BYTES = 101_110 * 9 * 4
#: The larger MLP's products (forward and dW of the three layers, dX of the last two) and its
#: Adam pass (1,863,690 parameters: param, grad and two moments read; param and moments written).
MLP_FLOP = 2 * 256 * (2 * (784 * 1024 + 1024 * 1024 + 1024 * 10) + 1024 * 1024 + 1024 * 10)
MLP_BYTES = 1_863_690 * 7 * 4
#: The peak FMA figures of this run (:func:`benchmarks.floor.measure`), set by :func:`main`.
FLOOR = None


def work_floor(flop: float, nbytes: float, threads: int) -> float:
    """Seconds: ``flop`` at this run's peak FMA rate plus ``nbytes`` at the triad bandwidth
    measured now on a working set of the same size (cache-resident for the seed step, DRAM for
    the MLP), on ``threads`` threads (1, or every core). A bound: the two overlap at best."""
    from benchmarks import floor as floor_mod

    peak = FLOOR.gflops_1 if threads <= 1 else FLOOR.gflops_all
    gbs = floor_mod.triad_gbs(threads, n=max(int(nbytes) // 12, 4096))
    return flop / (peak * 1e9) + nbytes / (gbs * 1e9)


def print_floor(what: str, flop: float, nbytes: float, threads: int) -> float:
    """Print and return :func:`work_floor` of ``what``."""
    s = work_floor(flop, nbytes, threads)
    print(
        f"- floor of {what} on {threads} thread{'s' if threads > 1 else ''}: {s * 1e6:,.0f} us "
        f"({flop / 1e6:,.1f} MFLOP at peak FMA, {nbytes / 1e6:,.2f} MB at the triad bandwidth "
        "of a working set that size; `python -m benchmarks.floor`)"
    )
    return s


# -- machine description ----------------------------------------------------------------------


def machine() -> list[str]:
    """CPU, ISA, load, library versions and thread settings, one line each."""
    lines = []
    cpu = platform.processor() or "?"
    flags: set[str] = set()
    try:
        text = Path("/proc/cpuinfo").read_text()
        cpu = re.search(r"model name\s*:\s*(.*)", text).group(1)
        flags = set(re.search(r"flags\s*:\s*(.*)", text).group(1).split())
    except (OSError, AttributeError):
        pass
    isa = ", ".join(f for f in ("avx2", "fma", "avx512f") if f in flags) or "?"
    lines.append(f"CPU: {cpu}, {os.cpu_count()} logical CPUs, {isa}")
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",)
    lines.append(f"load average before the run: {', '.join(f'{v:.2f}' for v in load)}")
    import numba

    lines.append(
        f"Python {platform.python_version()}, NumPy {np.__version__}, Numba {numba.__version__}"
    )
    for mod in ("torch", "jax", "optax", "threadpoolctl"):
        if importlib.util.find_spec(mod):
            lines.append(f"{mod} {__import__(mod).__version__}")
        else:
            lines.append(f"{mod}: not installed")
    env = {
        k: os.environ[k]
        for k in (
            "OMP_NUM_THREADS",
            "OPENBLAS_NUM_THREADS",
            "MKL_NUM_THREADS",
            "NUMBA_NUM_THREADS",
            "XLA_FLAGS",
        )
        if k in os.environ
    }
    lines.append(f"thread environment variables: {env or 'none set'}")
    try:
        from threadpoolctl import threadpool_info

        pools = [
            f"{p['internal_api']} {p.get('version')} ({p.get('architecture')}): "
            f"{p['num_threads']} threads"
            for p in threadpool_info()
            if p["user_api"] == "blas"
        ]
        lines.append("NumPy BLAS (minnet's matrix products): " + "; ".join(pools))
    except ImportError:
        lines.append("BLAS threads: unknown (install threadpoolctl to print them)")
    import minnet

    fixed = minnet.threads._policy.fixed
    lines.append(
        "minnet's thread policy: "
        + (
            f"fixed at {fixed} threads"
            if fixed is not None
            else "default (BLAS's own count on an idle machine, one thread less per core that "
            "other processes keep busy, sampled every 0.1 s from optimizer.step())"
        )
        + f"; threads now {minnet.get_num_threads()}; MINNET_NUM_THREADS="
        + os.environ.get("MINNET_NUM_THREADS", "unset")
    )
    from minnet import _pool

    if _pool.available():
        lines.append(
            "minnet's thread pool (minnet._pool): on; large Linear layers and optimizer steps "
            f"run on Numba's {_pool.threading_layer()!r} threading layer with row ownership, "
            f"NumPy's BLAS held at one thread; NUMBA_NUM_THREADS="
            f"{numba.config.NUMBA_NUM_THREADS}, OMP_WAIT_POLICY="
            f"{os.environ.get('OMP_WAIT_POLICY', 'unset')}, GOMP_SPINCOUNT="
            f"{os.environ.get('GOMP_SPINCOUNT', 'unset')}"
        )
    else:
        lines.append(
            f"minnet's thread pool: off ({_pool.reason()}); serial Numba optimizer kernels, "
            "NumPy products on BLAS's threads"
        )
    if importlib.util.find_spec("torch"):
        import torch

        lines.append(f"PyTorch intra-op threads: {torch.get_num_threads()}")
        if os.environ.get(impls.TORCH_THREADS_ENV):
            lines.append(
                "PyTorch intra-op threads in the optimizer-family table: "
                f"{os.environ[impls.TORCH_THREADS_ENV]} (--torch-threads)"
            )
    lines.append(kernel_vectorization())
    return lines


def kernel_vectorization() -> str:
    """Count vector registers in the float32 AMSGrad kernel's machine code."""
    import numba

    from minnet.optim._kernel import kernel
    from minnet.optim.adam import RULE, adam_scalars, ams_kind

    a = np.ones(64, np.float32)
    s = adam_scalars(
        a.dtype,
        lr=impls.LR,
        beta1=0.9,
        beta2=0.999,
        eps=1e-8,
        weight_decay=0.0,
        step=1,
        amsgrad=True,
    )
    mode, ams = 0, ams_kind(True, "raw")
    # The disk-cached kernel cannot show its assembly: compile the same function again, uncached.
    compiled = kernel(RULE, (mode, ams, False), False, True)
    fresh = numba.njit(error_model="numpy", nogil=True)(compiled.py_func)
    fresh(a, a.copy(), a.copy(), a.copy(), a.copy(), a[:0], s)
    asm = "\n".join(fresh.inspect_asm().values())
    counts = {r: len(re.findall(rf"%{r}\d+", asm)) for r in ("xmm", "ymm", "zmm")}
    packed = len(re.findall(r"\bv(?:sqrt|div|fmadd\w*|mul|add|max)ps\b", asm))
    return (
        f"AMSGrad float32 kernel machine code: {counts['zmm']} zmm, {counts['ymm']} ymm, "
        f"{counts['xmm']} xmm register uses; {packed} packed-single (…ps) sqrt/div/fma/mul/add/max "
        "instructions"
    )


# -- sections ----------------------------------------------------------------------------------


def _bench_workers(
    kind: str,
    names: Iterable[str],
    extra: tuple[str, ...],
    rounds: int,
    k: int,
    busy: list[dict] | None = None,
) -> tuple[list[dict], list[str]]:
    """Start one worker per implementation, alternate them, summarize against minnet.

    With ``busy`` (a list), the same workers are then alternated again while :func:`busy_core`
    keeps a core busy, and that summary is appended to ``busy``."""
    workers, notes = {}, []
    for name in names:
        w = Worker(kind, name, *extra)
        if w.skip:
            notes.append(f"{name}: skipped ({w.skip})")
        else:
            workers[name] = w
    add_baseline(workers, ["minnet"], kind, "minnet", *extra)
    # At least POLICY_BLOCK seconds per block: minnet's thread policy decides from samples
    # 0.1 s apart taken while it steps, so shorter blocks would never let it react to the load.
    ks = {n: max(k, _block_size(w.per_call.get("", 1.0), POLICY_BLOCK)) for n, w in workers.items()}
    try:
        res = alternate(workers, rounds, ks)
        record_baseline(kind, res)
        if busy is not None:
            with busy_core():
                busy.extend(summarize(alternate(workers, rounds, ks), "minnet"))
    finally:
        for w in workers.values():
            w.close()
    return summarize(res, "minnet"), notes


def bench_step(rounds: int, k: int, busy: list[dict]) -> tuple[list[dict], list[str]]:
    """Seed training step, every implementation; then again with one core busy (into
    ``busy``)."""
    return _bench_workers("step", impls.STEP_IMPLS, (), rounds, k, busy)


def bench_mlp(rounds: int, k: int) -> tuple[list[dict], list[str]]:
    """The larger MLP's training step, every implementation."""
    return _bench_workers("mlp", impls.MLP_IMPLS, (), rounds, k)


def bench_optimizer(rounds: int, k: int) -> tuple[list[dict], list[str]]:
    """AMSGrad step alone on the seed model's 101,110 float32 parameters."""
    return _bench_workers("opt", impls.OPT_IMPLS, ("seed",), rounds, k)


def bench_parts(rounds: int, steps: int) -> dict[str, dict[str, np.ndarray]]:
    """``benchmarks.parts`` in ``rounds`` fresh processes, idle and then with one core busy:
    ``{"idle" | "busy": {part: per-step seconds, all processes}}``."""
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    )
    out: dict[str, dict[str, list[float]]] = {"idle": {}, "busy": {}}
    for cond in ("idle", "busy"):
        for _ in range(rounds):
            ctx = busy_core() if cond == "busy" else nullcontext()
            with ctx:
                res = subprocess.run(
                    [sys.executable, "-m", "benchmarks.parts", str(steps)],
                    capture_output=True, text=True, env=env, cwd=ROOT, check=True,
                )  # fmt: skip
            for part, ts in json.loads(res.stdout).items():
                out[cond].setdefault(part, []).extend(ts)
    return {c: {p: np.asarray(ts) for p, ts in d.items()} for c, d in out.items()}


def print_parts(parts: dict[str, dict[str, np.ndarray]]) -> None:
    """Median (IQR) per part, its share of the median step, idle and busy; the last rows are
    the sum of the part medians and the whole step's median and mean."""

    def cell(ts: np.ndarray) -> str:
        q1, med, q3 = np.percentile(ts * 1e6, [25, 50, 75])
        return f"{med:.1f} ({q1:.1f}-{q3:.1f})"

    idle, busy = parts["idle"], parts["busy"]
    step_idle, step_busy = np.median(idle["step"]), np.median(busy["step"])
    print(
        "| part | idle: median us (IQR) | idle share | one core busy: median us (IQR) | "
        "busy share |"
    )
    print("| --- | ---: | ---: | ---: | ---: |")
    names = [p for p in idle if p != "step"]
    for name in names:
        share = np.median(idle[name]) / step_idle
        share_busy = np.median(busy[name]) / step_busy
        print(
            f"| {name} | {cell(idle[name])} | {share:.0%} | {cell(busy[name])} | {share_busy:.0%} |"
        )
    total_idle = sum(np.median(idle[n]) for n in names) * 1e6
    total_busy = sum(np.median(busy[n]) for n in names) * 1e6
    print(f"| sum of the part medians | {total_idle:.1f} | | {total_busy:.1f} | |")
    print(f"| whole step | {cell(idle['step'])} | 100% | {cell(busy['step'])} | 100% |")
    print(
        f"| whole step, mean | {np.mean(idle['step']) * 1e6:.1f} | | "
        f"{np.mean(busy['step']) * 1e6:.1f} | |"
    )


def bench_sweep(rounds: int, sizes: list[int]) -> list[dict]:
    """minnet's AMSGrad step and the same-streams no-arithmetic loop over parameter counts:
    effective GB/s."""
    rows = []
    for n in sizes:
        per_call = n * impls.AMSGRAD_BYTES_PER_PARAM / 2e10  # rough, at 20 GB/s
        k = int(min(2000, max(5, 0.04 / per_call)))
        workers = {
            "minnet": Worker("opt", "minnet", str(n)),
            "stream": Worker("stream", "3", str(n)),
        }
        try:
            res = alternate(workers, rounds, k)
        finally:
            for w in workers.values():
                w.close()
        t_adam = statistics.median(res["minnet"]["all"])
        t_stream = statistics.median(res["stream"]["all"])
        rows.append(
            {
                "n": n,
                "adam_us": t_adam * 1e6,
                "stream_us": t_stream * 1e6,
                "adam_gbs": n * impls.AMSGRAD_BYTES_PER_PARAM / t_adam / 1e9,
                "stream_gbs": n * impls.STREAM_BYTES_PER_PARAM / t_stream / 1e9,
            }
        )
    return rows


#: The family table's targets: PyTorch's time / minnet's at least this, by parameter count ...
FAMILY_SPEEDUP_TARGETS = {10**5: 1.5, 10**6: 1.0, 10**7: 1.0}
#: ... and minnet's effective bandwidth at least this fraction of the same-streams loop at 10^7.
FAMILY_STREAM_TARGET = 0.8


def _block_size(seconds_per_call: float, block: float) -> int:
    """Calls per block so that a block takes about ``block`` seconds (3 to 2000)."""
    return int(min(2000, max(3, block / max(seconds_per_call, 1e-7))))


def bench_family(
    rounds: int, sizes: list[int], block: float, names: list[str] | None = None
) -> tuple[list[dict], list[str]]:
    """Every optimizer of :data:`impls.FAMILY` alone, minnet against its counterpart and the
    no-arithmetic loop with the same number of streams, at every size.

    For each optimizer one minnet worker and one counterpart worker hold an instance per size;
    the stream-loop workers (one per number of state arrays) live through the whole section.
    At every size the three are alternated for ``rounds`` rounds of blocks of about ``block``
    seconds. Returns one row per (optimizer, size) and notes on what was skipped.
    """
    rows: list[dict] = []
    notes: list[str] = []
    sizes_arg = ",".join(str(n) for n in sizes)
    streams: dict[int, Worker] = {}
    entries = [e for e in impls.FAMILY if not names or e.name in names]
    try:
        for entry in tqdm(entries, desc="optimizers", unit="opt", leave=False):
            try:
                n_state = impls.family_state_arrays(entry.name)
            except impls.Unavailable as exc:
                notes.append(
                    f"{entry.name}: skipped ({exc}; the row appears once minnet.optim has it)"
                )
                continue
            workers = {"minnet": Worker("family", entry.name, "minnet", sizes_arg)}
            if workers["minnet"].skip:
                notes.append(f"{entry.name}: skipped ({workers['minnet'].skip})")
                continue
            peer = Worker("family", entry.name, "peer", sizes_arg)
            if peer.skip:
                notes.append(f"{entry.name}: {entry.peer_label} skipped ({peer.skip})")
            else:
                workers["peer"] = peer
            if n_state not in streams:
                streams[n_state] = Worker("stream", str(n_state), sizes_arg)
            workers["stream"] = streams[n_state]
            add_baseline(workers, ["minnet"], "family", entry.name, "minnet", sizes_arg)
            bytes_per_param = impls.stream_bytes_per_param(n_state)
            try:
                for n in sizes:
                    key = str(n)
                    k = {name: _block_size(w.per_call[key], block) for name, w in workers.items()}
                    res = alternate(workers, rounds, k, key)
                    record_baseline(f"family {entry.name}", res, key)
                    by_name = {r["name"]: r for r in summarize(res, "minnet")}
                    rows.append(_family_row(entry, n, n_state, bytes_per_param * n, by_name, res))
            finally:
                for name in ("minnet", "peer", "minnet" + AT_BASELINE):
                    if name in workers:
                        workers[name].close()
    finally:
        for w in streams.values():
            w.close()
    return rows, notes


def _family_row(
    entry: impls.FamilyEntry, n: int, n_state: int, nbytes: int, by_name: dict, res: dict
) -> dict:
    """One row of the family table from the summaries of one size."""
    m, st = by_name["minnet"], by_name["stream"]
    row = {
        "optimizer": entry.name,
        "peer_label": entry.peer_label,
        "n": n,
        "streams": 3 + 2 * n_state,
        "minnet": m,
        "stream": st,
        "peer": by_name.get("peer"),
        "minnet_gbs": nbytes / m["median"] / 1e9,
        "stream_gbs": nbytes / st["median"] / 1e9,
    }
    # The stream loop's bandwidth per round against minnet's, medianed like the time ratios.
    row["of_stream"] = statistics.median(
        s / t for s, t in zip(res["stream"]["rounds"], res["minnet"]["rounds"])
    )
    if row["peer"] is not None:
        row["peer_gbs"] = nbytes / row["peer"]["median"] / 1e9
    return row


def family_targets(row: dict) -> list[tuple[str, bool]]:
    """The targets that apply to a family row: ``[(description, met)]``."""
    out = []
    target = FAMILY_SPEEDUP_TARGETS.get(row["n"])
    if target is not None and row["peer"] is not None:
        what = "as fast" if target == 1 else f"{target:g}x faster"
        out.append((what, row["peer"]["ratio"] >= target))
    if row["n"] >= 10**7:
        out.append(
            (f">= {FAMILY_STREAM_TARGET:.0%} of loop", row["of_stream"] >= FAMILY_STREAM_TARGET)
        )
    return out


def print_family(rows: list[dict]) -> None:
    """Markdown table of :func:`bench_family`'s rows, with the targets and how many are met."""
    print(
        "| optimizer | counterpart | params | minnet us (IQR) | counterpart us (IQR) | "
        "counterpart / minnet time (per-round median, min-max) | minnet GB/s | "
        "counterpart GB/s | same-streams loop GB/s | minnet / loop | targets |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    met = total = 0
    missed = []
    for r in rows:
        m, p = r["minnet"], r["peer"]

        def us(x: dict) -> str:
            return f"{x['median'] * 1e6:.0f} ({x['q1'] * 1e6:.0f}-{x['q3'] * 1e6:.0f})"

        targets = family_targets(r)
        met += sum(ok for _, ok in targets)
        total += len(targets)
        missed += [f"{r['optimizer']} at {r['n']:,} ({d})" for d, ok in targets if not ok]
        cells = [
            f"{r['optimizer']} ({r['streams']} streams)",
            r["peer_label"] if p is not None else "(not run)",
            f"10^{round(math.log10(r['n']))}" if _is_power_of_ten(r["n"]) else f"{r['n']:,}",
            us(m),
            us(p) if p is not None else "",
            f"{p['ratio']:.2f} ({p['ratio_min']:.2f}-{p['ratio_max']:.2f})" if p else "",
            f"{r['minnet_gbs']:.1f}",
            f"{r['peer_gbs']:.1f}" if p is not None else "",
            f"{r['stream_gbs']:.1f}",
            f"{r['of_stream']:.0%}",
            "; ".join(f"{d}: {'met' if ok else 'MISSED'}" for d, ok in targets),
        ]
        print("| " + " | ".join(cells) + " |")
    print(f"- targets met: {met} of {total}" + (f"; missed: {', '.join(missed)}" if missed else ""))


def print_family_compact(rows: list[dict]) -> None:
    """One line per optimizer: minnet's and the counterpart's median us and their per-round
    ratio at every size, and the bandwidths at the largest size (the README's table)."""
    sizes = sorted({r["n"] for r in rows})
    big = sizes[-1]

    def size_name(n: int) -> str:
        return f"10^{round(math.log10(n))}" if _is_power_of_ten(n) else f"{n:,}"

    print(
        "| optimizer | counterpart | "
        + " | ".join(f"{size_name(n)}: minnet / counterpart us (ratio)" for n in sizes)
        + f" | {size_name(big)}: GB/s minnet / counterpart / loop |"
    )
    print("| --- | --- | " + " | ".join("---:" for _ in sizes) + " | ---: |")
    for name in dict.fromkeys(r["optimizer"] for r in rows):
        at = {r["n"]: r for r in rows if r["optimizer"] == name}
        cells = [name, next(iter(at.values()))["peer_label"]]
        for n in sizes:
            r = at.get(n)
            if r is None:
                cells.append("")
            elif r["peer"] is None:
                cells.append(f"{r['minnet']['median'] * 1e6:.0f} / -")
            else:
                cells.append(
                    f"{r['minnet']['median'] * 1e6:.0f} / {r['peer']['median'] * 1e6:.0f} "
                    f"({r['peer']['ratio']:.2f}x)"
                )
        r = at.get(big)
        if r is None:
            cells.append("")
        else:
            peer = f"{r['peer_gbs']:.0f}" if r["peer"] is not None else "-"
            cells.append(f"{r['minnet_gbs']:.0f} / {peer} / {r['stream_gbs']:.0f}")
        print("| " + " | ".join(cells) + " |")


def _is_power_of_ten(n: int) -> bool:
    return n > 0 and 10 ** round(math.log10(n)) == n


def _wall(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def bench_startup(rounds: int) -> tuple[dict[str, float], list[str]]:
    """Whole-process wall time of the seed program: minnet warm/cold Numba cache, PyTorch."""
    # minnet from this checkout, also when the benchmark's Python has it not installed.
    base = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    )
    cache = tempfile.mkdtemp(prefix="minnet-bench-cache-")
    warm_env = dict(base, NUMBA_CACHE_DIR=cache)
    minnet_cmd = [sys.executable, str(ROOT / "examples" / "seed_example.py"), "--quiet"]
    torch_cmd = [sys.executable, str(ROOT / "benchmarks" / "seed_torch.py"), "--quiet"]
    have_torch = importlib.util.find_spec("torch") is not None
    notes = [] if have_torch else ["PyTorch script: skipped (torch not installed)"]
    times: dict[str, list[float]] = {"minnet, warm cache": [], "minnet, cold cache": []}
    if have_torch:
        times["PyTorch"] = []
    _wall(minnet_cmd, warm_env)  # fills the warm cache
    try:
        for _ in range(rounds):
            times["minnet, warm cache"].append(_wall(minnet_cmd, warm_env))
            cold = tempfile.mkdtemp(prefix="minnet-bench-cold-")
            times["minnet, cold cache"].append(_wall(minnet_cmd, dict(base, NUMBA_CACHE_DIR=cold)))
            shutil.rmtree(cold, ignore_errors=True)
            if have_torch:
                times["PyTorch"].append(_wall(torch_cmd, base))
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    return {k: statistics.median(v) for k, v in times.items()}, notes


# -- plots -------------------------------------------------------------------------------------


def plot_step(rows: list[dict], path: Path, title: str, base: str = "minnet") -> None:
    """Horizontal bars: median step time with its interquartile range; each other row is
    labelled with ``base``'s time as a multiple of its own (per-round median), as the README
    quotes them ("minnet 0.85x this": minnet takes 0.85 of this row's time)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(rows, key=lambda r: r["median"], reverse=True)
    fig, ax = plt.subplots(figsize=(8, 0.55 * len(rows) + 1.4))
    med = [r["median"] * 1e6 for r in rows]
    err = [
        [m - r["q1"] * 1e6 for m, r in zip(med, rows)],
        [r["q3"] * 1e6 - m for m, r in zip(med, rows)],
    ]
    colors = ["tab:blue" if r["name"].startswith("minnet") else "tab:gray" for r in rows]
    ax.barh([r["name"] for r in rows], med, xerr=err, color=colors, capsize=3)
    for i, (m, r) in enumerate(zip(med, rows)):
        text = f"{m:.0f} us" if r["name"] == base else (
            f"{m:.0f} us; {base} {r['base_ratio']:.2f}x this"
        )
        ax.text(
            m * 1.02 + 5, i + 0.28, text, fontsize=8,
            va="center", bbox={"facecolor": "white", "edgecolor": "none", "pad": 1},
        )  # fmt: skip
    ax.set_xlabel(
        "time per training step, microseconds (median; bars: interquartile range)\n"
        f"'{base} 0.85x this': {base}'s time over the row's, median of per-round ratios"
    )
    ax.set_xlim(0, max(med) * 1.6)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_optimizer(sweep: list[dict], opt_rows: list[dict], path: Path, title: str) -> None:
    """Effective GB/s of the AMSGrad step against parameter count, with the no-arithmetic
    loop of the same access pattern beside it (a reference, not a ceiling)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.6))
    n = [r["n"] for r in sweep]
    ax.plot(
        n,
        [r["stream_gbs"] for r in sweep],
        "k--",
        marker=".",
        label="no-arithmetic streaming loop: AMSGrad's 5 reads + 4 writes (one thread)",
    )
    ax.plot(
        n,
        [r["adam_gbs"] for r in sweep],
        "tab:blue",
        marker="o",
        label="minnet Adam(amsgrad=True).step()",
    )
    for r in opt_rows:
        if r["name"].startswith("PyTorch"):
            gbs = impls.SEED_PARAMS * impls.AMSGRAD_BYTES_PER_PARAM / r["median"] / 1e9
            ax.plot(
                [impls.SEED_PARAMS],
                [gbs],
                marker="s" if "fused" in r["name"] else "^",
                color="tab:orange" if "fused" in r["name"] else "tab:red",
                linestyle="none",
                label=f"{r['name']} (seed model, 101,110 params)",
            )
    ax.set_xscale("log")
    ax.set_xlabel("float32 parameters")
    ax.set_ylabel("effective GB/s (bytes read + written / time)")
    ax.set_ylim(0, None)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_family(rows: list[dict], path: Path, title: str) -> None:
    """One panel per size: effective GB/s of minnet and its counterpart for every optimizer,
    with the same-streams no-arithmetic loop as a black tick."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.patches
    import matplotlib.pyplot as plt

    sizes = sorted({r["n"] for r in rows})
    names = list(dict.fromkeys(r["optimizer"] for r in rows))
    fig, axes = plt.subplots(
        1, len(sizes), figsize=(4.2 * len(sizes), 0.42 * len(names) + 1.8), sharey=True
    )
    axes = np.atleast_1d(axes)
    y = np.arange(len(names))
    for ax, n in zip(axes, sizes):
        at = {r["optimizer"]: r for r in rows if r["n"] == n}
        mine = [at[k]["minnet_gbs"] if k in at else np.nan for k in names]
        peer = [at[k].get("peer_gbs", np.nan) if k in at else np.nan for k in names]
        loop = [at[k]["stream_gbs"] if k in at else np.nan for k in names]
        peer_colors = {"optax": "tab:green", "Keras": "tab:purple"}
        colors = [
            peer_colors.get(at[k]["peer_label"].split(".")[0].split()[0], "tab:orange")
            if k in at else "tab:orange"
            for k in names
        ]
        ax.barh(y - 0.2, mine, height=0.4, color="tab:blue", label="minnet")
        ax.barh(y + 0.2, peer, height=0.4, color=colors, label="PyTorch fused / foreach")
        ax.plot(loop, y, "k|", markersize=14, mew=2, label="same-streams loop, no math")
        for yi, k in zip(y, names):
            if k in at and at[k]["peer"] is not None:
                ratio = at[k]["peer"]["ratio"]
                ax.text(
                    0.99, yi, f"{ratio:.2f}x", transform=ax.get_yaxis_transform(),
                    ha="right", va="center", fontsize=7,
                )  # fmt: skip
        top = np.nanmax([*mine, *peer, *loop])
        ax.set_xlim(0, top * 1.3 if np.isfinite(top) else 1)
        ax.set_title(f"{n:,} float32 parameters", fontsize=9)
        ax.set_xlabel("effective GB/s (bytes read + written / median time)", fontsize=8)
        ax.grid(True, axis="x", alpha=0.3)
    axes[0].set_yticks(y)
    axes[0].set_yticklabels(names)
    axes[0].invert_yaxis()
    handles, labels = axes[0].get_legend_handles_labels()
    if any(r["peer_label"].startswith("optax") for r in rows):
        handles.append(matplotlib.patches.Patch(color="tab:green"))
        labels.append(
            f"optax, jit ({', '.join(e.name for e in impls.FAMILY if e.peer == 'optax')})"
        )
    if any(r["peer_label"].startswith("Keras") for r in rows):
        handles.append(matplotlib.patches.Patch(color="tab:purple"))
        labels.append("Keras 3 on JAX, jit (Ftrl)")
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8)
    fig.suptitle(
        title + "\nright-hand numbers: counterpart's time / minnet's (per-round median)",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)


# -- main --------------------------------------------------------------------------------------


def _torch_threads(requested: int | None) -> str:
    """PyTorch's intra-op thread count in the family table's workers, as text."""
    if requested is not None:
        return str(requested)
    if importlib.util.find_spec("torch"):
        import torch

        return str(torch.get_num_threads())
    return "?"


#: The all-bfloat16 Adam step (fused) must be at least this many times faster than the float32
#: one at 10^7 parameters (float32's time / bfloat16's, per-round median).
LOWP_SPEEDUP_TARGET = 1.6
LOWP_BASE = impls.LOWP[0].name
LOWP_BF16 = impls.LOWP[1].name
#: The same two rows on the default thread policy (minnet's pool on an idle machine).
LOWP_PAIRS = {
    "one thread": (LOWP_BASE, LOWP_BF16),
    "default threads (pool)": (impls.LOWP[5].name, impls.LOWP[6].name),
}


def bench_lowp(
    rounds: int, sizes: list[int], block: float
) -> tuple[dict[int, list[dict]], dict[int, list[float]], list[str]]:
    """Adam alone on every row of :data:`impls.LOWP`, each row in its own worker (one instance
    per size), alternated for ``rounds`` rounds of blocks of about ``block`` seconds per size.

    Returns ``{n: summary rows}`` (ratios against minnet float32), ``{n: per-round float32 /
    bfloat16 time ratios}`` and notes on what was skipped.
    """
    sizes_arg = ",".join(str(n) for n in sizes)
    workers: dict[str, Worker] = {}
    notes: list[str] = []
    rows: dict[int, list[dict]] = {}
    speedups: dict[tuple[str, int], list[float]] = {}
    try:
        for entry in tqdm(impls.LOWP, desc="workers", unit="row", leave=False):
            w = Worker("lowp", entry.name, sizes_arg)
            if w.skip:
                notes.append(f"{entry.name}: skipped ({w.skip})")
            else:
                workers[entry.name] = w
                if entry.name.startswith("minnet"):
                    add_baseline(workers, [entry.name], "lowp", entry.name, sizes_arg)
        for n in tqdm(sizes, desc="sizes", unit="size", leave=False):
            key = str(n)
            k = {name: _block_size(w.per_call[key], block) for name, w in workers.items()}
            res = alternate(workers, rounds, k, key)
            record_baseline("lowp", res, key)
            res = {name: r for name, r in res.items() if not name.endswith(AT_BASELINE)}
            rows[n] = summarize(res, LOWP_BASE)
            for label, (base, bf16) in LOWP_PAIRS.items():
                if base in res and bf16 in res:
                    speedups[label, n] = [
                        a / b for a, b in zip(res[base]["rounds"], res[bf16]["rounds"])
                    ]
    finally:
        for w in workers.values():
            w.close()
    return rows, speedups, notes


def print_lowp(rows: dict[int, list[dict]], speedups: dict[tuple[str, int], list[float]]) -> None:
    """One table per size (:func:`print_table` in microseconds), then the bfloat16 speedup."""
    for n, table in rows.items():
        print(f"### {n:,} parameters")
        print()
        print_table(table, LOWP_BASE)
        print()
    print(
        "float32 time / all-bfloat16 time (minnet, per-round ratios: median, min-max; "
        f"target >= {LOWP_SPEEDUP_TARGET:g} at 10,000,000):"
    )
    print()
    for (label, n), ratios in speedups.items():
        med = statistics.median(ratios)
        verdict = ""
        if n == 10**7:
            verdict = " - target met" if med >= LOWP_SPEEDUP_TARGET else " - target MISSED"
        print(f"- {label}, {n:,}: {med:.2f}x ({min(ratios):.2f}-{max(ratios):.2f}){verdict}")


#: The sections, in the order they run.
SECTIONS = ("step", "parts", "mlp", "optimizer", "sweep", "optimizers", "lowp", "startup")


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the sections, print, plot."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--rounds", type=int, default=7, help="rounds per section (default 7)")
    parser.add_argument(
        "--steps", type=int, default=200, help="timed steps per block (default 200)"
    )
    parser.add_argument("--quick", action="store_true", help="3 rounds, small blocks, fewer sizes")
    parser.add_argument(
        "--skip",
        nargs="*",
        default=[],
        choices=SECTIONS,
        help="sections to leave out",
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=SECTIONS,
        help="run only these sections: step (seed training step, idle and one core busy), "
        "mlp (784-1024-1024-10 MLP, batch 256, Adam), optimizer (AMSGrad alone, "
        "seed model), parts (minnet's seed step part by part, idle and one core busy), sweep "
        "(AMSGrad over sizes), optimizers (every optimizer alone, the family table: a few "
        "minutes), lowp (Adam alone in float32, bfloat16 and float16, minnet and PyTorch, at "
        "the --sizes), startup",
    )
    parser.add_argument(
        "--optimizers",
        nargs="+",
        metavar="NAME",
        help="family table: only these optimizers (default: every one in the table, "
        f"{', '.join(e.name for e in impls.FAMILY)})",
    )
    parser.add_argument(
        "--sizes",
        nargs="+",
        type=int,
        default=[10**5, 10**6, 10**7],
        help="family and lowp tables: parameter counts (default 100000 1000000 10000000)",
    )
    parser.add_argument(
        "--torch-threads",
        type=int,
        help="family table: PyTorch's intra-op threads (default: PyTorch's own, one per core)",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        help="another checkout of minnet (e.g. a git worktree of an earlier commit): the step, "
        "mlp, optimizer, optimizers and lowp sections also time its minnet rows, alternated "
        "with this checkout's, and a last table gives the per-round time ratios",
    )
    parser.add_argument(
        "--family-threads",
        choices=("default", "1"),
        default="default",
        help="family table: every library on its default threads (minnet's policy and pool, "
        "PyTorch's intra-op threads, XLA's) or every library on one thread (default: default)",
    )
    parser.add_argument("--plots", type=Path, default=ROOT / "plots", help="where the PNGs go")
    parser.add_argument("--no-plots", action="store_true", help="do not write the PNGs")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.optimizers or ()) - set(impls.FAMILY_BY_NAME))
    if unknown:
        parser.error(f"unknown optimizers {unknown}; the table has {list(impls.FAMILY_BY_NAME)}")
    run = [s for s in (args.only or SECTIONS) if s not in args.skip]
    global BASELINE
    BASELINE = None if args.baseline is None else args.baseline.resolve()
    if args.torch_threads is not None:
        if args.torch_threads < 1:
            parser.error(f"--torch-threads must be >= 1, got {args.torch_threads}")
        os.environ[impls.TORCH_THREADS_ENV] = str(args.torch_threads)  # read by the workers
    os.environ[impls.FAMILY_THREADS_ENV] = args.family_threads  # read by the workers
    rounds, k = (3, 50) if args.quick else (args.rounds, args.steps)
    sizes = (
        [10**4, 10**5, 10**6, 10**7]
        if args.quick
        else [10**4, 3 * 10**4, 101_110, 3 * 10**5, 10**6, 3 * 10**6, 10**7]
    )

    print("## Machine")
    for line in machine():
        print("- " + line)
    global FLOOR
    if {"step", "mlp", "optimizer"} & set(run):
        from benchmarks import floor as floor_mod

        FLOOR = floor_mod.measure()
        print("- " + FLOOR.describe())
    print(f"- method: {rounds} rounds, implementations alternated, each in its own process")
    if os.getloadavg()[0] > 0.5:
        print("- WARNING: the machine is busy (load above 0.5); timings will be noisy")
    print()
    step_rows = opt_rows = sweep = family = None
    if "step" in run:
        print(
            f"## Seed training step (blocks of at least {k} steps and {POLICY_BLOCK} s; "
            "ratio = implementation / minnet)"
        )
        busy_rows: list[dict] = []
        step_rows, notes = bench_step(rounds, k, busy_rows)
        seed_floor = print_floor("the seed step", SEED_FLOP, SEED_BYTES, FLOOR.threads)
        print()
        print_table(step_rows, "minnet", floor=seed_floor)
        for note in notes:
            print(f"- {note}")
        print()
        print(
            "## Seed training step, one core busy (a `while True: pass` process started before "
            "and killed after these rounds; the same workers)"
        )
        busy_floor = print_floor("the seed step", SEED_FLOP, SEED_BYTES, 1)
        print()
        print_busy_table(busy_rows, step_rows, "minnet", floor=busy_floor)
        print()
    if "parts" in run:
        print(
            f"## minnet's seed step part by part ({rounds} processes x {k * 5} steps, idle, then "
            "the same with one core busy; us per step)"
        )
        print_parts(bench_parts(rounds, 5 * k))
        print()
    if "mlp" in run:
        mk = max(3, k // 20)
        print(
            "## Larger MLP: 784 -> 1024 -> ReLU -> 1024 -> ReLU -> 10, batch 256, "
            f"CrossEntropyLoss, Adam (blocks of at least {mk} steps and {POLICY_BLOCK} s)"
        )
        mlp_rows, notes = bench_mlp(rounds, mk)
        mlp_floor = print_floor("the MLP step", MLP_FLOP, MLP_BYTES, FLOOR.threads)
        print()
        print_table(mlp_rows, "minnet", 1e3, "ms", floor=mlp_floor)
        for note in notes:
            print(f"- {note}")
        print()
    if "optimizer" in run:
        print("## AMSGrad step alone, seed model's 101,110 float32 parameters")
        opt_rows, notes = bench_optimizer(rounds, 5 * k)
        opt_floor = print_floor("the AMSGrad pass", 0, SEED_BYTES, FLOOR.threads)
        print()
        print_table(opt_rows, "minnet", floor=opt_floor)
        for note in notes:
            print(f"- {note}")
        print()
    if "sweep" in run:
        print(
            "## AMSGrad step vs a no-arithmetic loop with the same streams "
            "(effective GB/s = bytes read + written / time)"
        )
        sweep = bench_sweep(rounds, sizes)
        print("| params | minnet us | minnet GB/s | no-arithmetic loop GB/s | minnet / loop |")
        print("| ---: | ---: | ---: | ---: | ---: |")
        for r in sweep:
            print(
                f"| {r['n']:,} | {r['adam_us']:.1f} | {r['adam_gbs']:.1f} | "
                f"{r['stream_gbs']:.1f} | {r['adam_gbs'] / r['stream_gbs']:.0%} |"
            )
        print()
    if "optimizers" in run:
        block = 0.03 if args.quick else 0.1
        print(
            "## The optimizer family, each step alone (float32, one parameter of n values; "
            f"{rounds} rounds of ~{block * 1e3:.0f} ms blocks; "
            + (
                "every library on one thread)"
                if args.family_threads == "1"
                else "every library on its default threads: minnet's policy and pool, "
                f"PyTorch's {_torch_threads(args.torch_threads)} intra-op threads, XLA's own)"
            )
        )
        print(
            "Counterpart: PyTorch's fastest CPU implementation (fused=True for SGD, Adam, AdamW, "
            "Adagrad; foreach=True otherwise); optax's jitted update for "
            f"{', '.join(e.name for e in impls.FAMILY if e.peer == 'optax')}; Keras 3's jitted "
            "stateless_apply (JAX "
            "backend) for Ftrl. "
            "GB/s: the bytes each step must move (param, grad and every state array read; "
            "param and state written) / median time; the same-streams loop makes those reads "
            "and writes on one thread with no arithmetic. Targets: counterpart / minnet time "
            + ", ".join(f">= {v:g} at {n:,}" for n, v in FAMILY_SPEEDUP_TARGETS.items())
            + f"; minnet >= {FAMILY_STREAM_TARGET:.0%} of the loop at 10,000,000."
        )
        print()
        family, notes = bench_family(rounds, args.sizes, block, args.optimizers)
        print_family(family)
        print()
        print("Summary (ratio: counterpart's time / minnet's, per-round median):")
        print()
        print_family_compact(family)
        for note in notes:
            print(f"- {note}")
        print()
    if "lowp" in run:
        block = 0.03 if args.quick else 0.1
        print(
            "## Adam alone in low precision (lr 1e-3, PyTorch's other defaults; one parameter of "
            f"n values; {rounds} rounds of ~{block * 1e3:.0f} ms blocks, every row in its own "
            "process, alternated)"
        )
        print(
            "Rows: minnet with parameters, gradients and state in float32; all bfloat16; all "
            "float16; float16 parameters with float32 state (`state_dtype`); all bfloat16 with "
            '`rounding="per_op"`; PyTorch\'s Adam `fused=True` and default (foreach) on the '
            "same dtypes (PyTorch intra-op threads: "
            f"{_torch_threads(args.torch_threads)}; minnet: one thread, except the two "
            "'default threads' rows: minnet's thread policy and pool). Ratio: the row's "
            "time / minnet float32's (one thread)."
        )
        print()
        lowp_rows, lowp_speedups, notes = bench_lowp(rounds, args.sizes, block)
        print_lowp(lowp_rows, lowp_speedups)
        for note in notes:
            print(f"- {note}")
        print()
    if "startup" in run:
        print("## Whole process: seed program, 500 steps, --quiet (wall seconds, median)")
        walls, notes = bench_startup(max(3, rounds // 2))
        for name, t in walls.items():
            extra = (
                f"  ({walls['PyTorch'] / t:.2f}x faster than PyTorch)"
                if "PyTorch" in walls and name != "PyTorch"
                else ""
            )
            print(f"- {name}: {t:.2f} s{extra}")
        print(
            f"- Numba compile time (cold - warm): "
            f"{walls['minnet, cold cache'] - walls['minnet, warm cache']:.2f} s"
        )
        for note in notes:
            print(f"- {note}")
        print()
    if BASELINE_RATIOS:
        print_baseline()
    print(f"load average after the run: {', '.join(f'{v:.2f}' for v in os.getloadavg())}")
    if not args.no_plots:
        args.plots.mkdir(parents=True, exist_ok=True)
        cpu = machine()[0].removeprefix("CPU: ")
        if step_rows:
            plot_step(
                step_rows,
                args.plots / "bench_step.png",
                f"Seed training step (64x1000 -> 100 -> ReLU -> 10, AMSGrad)\n{cpu}",
            )
        if sweep and opt_rows:
            plot_optimizer(
                sweep,
                opt_rows,
                args.plots / "bench_optimizer.png",
                f"AMSGrad step, float32: effective bandwidth\n{cpu}",
            )
        if family:
            plot_family(
                family,
                args.plots / "bench_family.png",
                "Optimizer step alone, float32, "
                + (
                    "every library on one thread"
                    if args.family_threads == "1"
                    else f"default threads (PyTorch: {_torch_threads(args.torch_threads)})"
                )
                + f": minnet vs PyTorch / optax\n{cpu}",
            )
        print(f"plots written to {args.plots}")
    return 0
