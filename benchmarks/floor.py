"""The machine's floor: peak float32 FMA throughput and memory bandwidth, measured here.

    python -m benchmarks.floor

Every speed figure of ``python -m benchmarks`` is also given as a share of what this machine can
do at best, measured in the same run:

* **Peak FMA** (GFLOP/s, per core and on every core): a loop of fused multiply-adds on the
  widest float32 vectors the CPU has (``<16 x float>`` with AVX-512, else ``<8 x float>``), on
  12 independent accumulators so that every FMA unit stays busy. It is LLVM IR compiled for
  the host CPU by llvmlite (Numba's own code generator), so that no compiler can fold it or
  leave it unvectorized; one FMA counts as 2 FLOP.
* **Bandwidth** (GB/s): the STREAM *triad* ``a = b + s * c`` over three 32 MB float32 arrays
  (far larger than the caches), on one thread and on every core (Numba ``prange``); bytes
  counted as 3 arrays x 4 bytes per element (reads of ``b`` and ``c``, the write of ``a``; the
  write-allocate read of ``a`` is not counted, as STREAM does not).

The floor of a step that does ``F`` FLOP of products and moves ``B`` bytes is then
``F / peak + B / bandwidth`` (a lower bound: the two overlap at best), and a result's *share of
the floor* is ``floor / measured time``.
"""

from __future__ import annotations

import ctypes
import functools
import os
import time
from typing import NamedTuple

import numpy as np

#: Independent accumulators of the FMA loop (more than the FMA latency x units needs).
_CHAINS = 12
#: Iterations of the FMA loop per call (each does ``_CHAINS`` vector FMAs).
_ITERS = 2_000_000


class Floor(NamedTuple):
    """The machine's peak float32 FMA throughput and triad bandwidth (one core, every core)."""

    gflops_1: float
    gflops_all: float
    gbs_1: float
    gbs_all: float
    lanes: int  # float32 lanes of the vectors used
    threads: int  # the "every core" thread count

    def seconds(self, flop: float, nbytes: float, threads: int) -> float:
        """The floor of a computation with ``flop`` FLOP and ``nbytes`` of memory traffic on
        ``threads`` threads (1: one core's figures; else every core's)."""
        one = threads <= 1
        return flop / ((self.gflops_1 if one else self.gflops_all) * 1e9) + nbytes / (
            (self.gbs_1 if one else self.gbs_all) * 1e9
        )

    def describe(self) -> str:
        """One line for a benchmark header."""
        return (
            f"floor (benchmarks.floor): peak float32 FMA {self.gflops_1:.0f} GFLOP/s per core, "
            f"{self.gflops_all:.0f} on {self.threads} threads ({self.lanes}-lane vectors); "
            f"triad bandwidth {self.gbs_1:.1f} GB/s on one thread, {self.gbs_all:.1f} on "
            f"{self.threads}"
        )


def _lanes() -> int:
    """float32 lanes of the host's widest vector registers that LLVM will use."""
    import llvmlite.binding as llvm

    features = llvm.get_host_cpu_features()
    return 16 if features.get("avx512f", False) else 8


@functools.cache
def _fma_function() -> tuple[object, int]:
    """A compiled ``float fma_loop(i64 iters)`` (and the lanes it uses); the engine is kept
    alive with it."""
    import llvmlite.binding as llvm

    try:  # llvmlite < 0.45 needs these; newer ones initialise themselves
        llvm.initialize()
    except RuntimeError:
        pass
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    lanes = _lanes()
    vt = f"<{lanes} x float>"
    one = ", ".join(["float 1.0"] * lanes)
    mul = ", ".join(["float 0x3FEFFFFFC0000000"] * lanes)  # 0.99999988, exact in float32
    add = ", ".join(["float 0x3EB0C6F7A0000000"] * lanes)  # 1e-6
    phis = "\n".join(
        f"  %a{k} = phi {vt} [<{one}>, %entry], [%b{k}, %loop]" for k in range(_CHAINS)
    )
    fmas = "\n".join(
        f"  %b{k} = call {vt} @llvm.fma.v{lanes}f32({vt} %a{k}, {vt} <{mul}>, {vt} <{add}>)"
        for k in range(_CHAINS)
    )
    total = "\n".join(
        f"  %s{k} = fadd {vt} %s{k - 1}, %b{k}" if k else f"  %s0 = fadd {vt} %b0, %b0"
        for k in range(_CHAINS)
    )
    ir = f"""
declare {vt} @llvm.fma.v{lanes}f32({vt}, {vt}, {vt})
define float @fma_loop(i64 %n) {{
entry:
  br label %loop
loop:
  %i = phi i64 [0, %entry], [%i2, %loop]
{phis}
{fmas}
  %i2 = add i64 %i, 1
  %done = icmp sge i64 %i2, %n
  br i1 %done, label %exit, label %loop
exit:
{total}
  %r = extractelement {vt} %s{_CHAINS - 1}, i32 0
  ret float %r
}}
"""
    target = llvm.Target.from_default_triple()
    machine = target.create_target_machine(
        cpu=llvm.get_host_cpu_name(), features=llvm.get_host_cpu_features().flatten(), opt=3
    )
    module = llvm.parse_assembly(ir)
    module.verify()
    engine = llvm.create_mcjit_compiler(module, machine)
    engine.finalize_object()
    address = engine.get_function_address("fma_loop")
    fn = ctypes.CFUNCTYPE(ctypes.c_float, ctypes.c_int64)(address)
    fn._engine = engine  # type: ignore[attr-defined]  # keep the code alive with the function
    return fn, lanes


def peak_gflops(threads: int = 1, seconds: float = 0.3) -> float:
    """Peak float32 FMA GFLOP/s on ``threads`` threads (each runs the FMA loop; the calls
    release the GIL, so Python threads run them in parallel), best of a few repeats."""
    from concurrent.futures import ThreadPoolExecutor

    fn, lanes = _fma_function()
    fn(1000)
    flop_per_call = 2.0 * lanes * _CHAINS * _ITERS
    best = 0.0
    deadline = time.perf_counter() + seconds
    with ThreadPoolExecutor(threads) as pool:
        while True:
            t0 = time.perf_counter()
            list(pool.map(fn, [_ITERS] * threads))
            dt = time.perf_counter() - t0
            best = max(best, threads * flop_per_call / dt / 1e9)
            if time.perf_counter() > deadline:
                return best


@functools.cache
def _triad_kernels() -> tuple[object, object]:
    import numba

    def triad(a: np.ndarray, b: np.ndarray, c: np.ndarray, s: np.float32) -> None:
        for i in numba.prange(a.size):
            a[i] = b[i] + s * c[i]

    serial = numba.njit(cache=True)(triad)
    parallel = numba.njit(cache=True, parallel=True)(triad)
    return serial, parallel


def triad_gbs(threads: int = 1, n: int = 8 * 2**20, repeats: int = 12) -> float:
    """STREAM triad bandwidth in GB/s (3 x 4 bytes per element), best of ``repeats``."""
    import numba

    serial, parallel = _triad_kernels()
    a = np.zeros(n, np.float32)
    b = np.ones(n, np.float32)
    c = np.full(n, 2.0, np.float32)
    s = np.float32(0.5)
    kernel = serial if threads <= 1 else parallel
    old = numba.get_num_threads()
    numba.set_num_threads(min(max(threads, 1), numba.config.NUMBA_NUM_THREADS))
    try:
        kernel(a, b, c, s)
        best = 0.0
        for _ in range(repeats):
            t0 = time.perf_counter()
            kernel(a, b, c, s)
            best = max(best, 12.0 * n / (time.perf_counter() - t0) / 1e9)
    finally:
        numba.set_num_threads(old)
    return best


def measure(threads: int | None = None) -> Floor:
    """Every figure of :class:`Floor`, ``threads`` defaulting to the machine's core count."""
    threads = threads or os.cpu_count() or 1
    _, lanes = _fma_function()
    return Floor(peak_gflops(1), peak_gflops(threads), triad_gbs(1), triad_gbs(threads),
                 lanes, threads)  # fmt: skip


if __name__ == "__main__":
    print(measure().describe())
