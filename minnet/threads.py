"""How many threads minnet uses, and a default that reads the machine.

Where minnet's thread pool is available (:mod:`minnet._pool`: NumPy's OpenBLAS exports its ILP64
``cblas_?gemm64_`` symbols and Numba's OpenMP threading layer loads), the count below is the
number of threads of that one pool: large float32/float64 ``Linear`` layers and optimizer steps
run on it, with row ownership, and NumPy's BLAS is set to one thread (process-wide, for as long
as minnet drives the count) so that its own pool never runs beside it. Otherwise the count is
NumPy's BLAS's, as described next.

The products run in the BLAS library NumPy is linked to (OpenBLAS in NumPy's wheels), which
splits each one over one thread per core. That is fastest on an idle machine and much slower when
another process keeps a core busy: each product then waits for a time slice on the busy core
(several ms for a ~0.1 ms product), and the idle BLAS threads spin on the free one. So by default
minnet samples the machine from the training loop (:func:`tick`, called by every
``optimizer.step()``) and drops BLAS to one thread while other processes use a core, going back
when the core is free again:

- at most every :data:`SAMPLE_INTERVAL` seconds, it reads the system-wide busy CPU time
  (``/proc/stat``, all cores) and this process's own CPU time (``os.times()``, all threads);
- ``others = (system busy - own) / wall time`` is the number of cores other processes kept busy
  over the interval; the free cores are ``cpu_count - others``;
- it drops to ``max(1, round(free))`` threads when ``free < threads - DROP_MARGIN``, and climbs
  back (to at most the BLAS count found at the first sample) when
  ``free >= threads + RISE_MARGIN``; the gap between the two margins keeps it from flapping;
- an interval longer than :data:`STALE_AFTER` (the process stopped stepping, e.g. evaluating or
  waiting) decides nothing and starts a new one: other processes' use of the cores while this
  one was not training is no reason to change its thread count.

Override it with ``minnet.set_num_threads(n)`` (a fixed count; ``None`` returns to the machine-
reading default) or the environment variable ``MINNET_NUM_THREADS`` (an integer >= 1, or
``auto``), read at import. Without ``/proc/stat`` (not Linux) the default leaves BLAS as it is.
The policy also stands aside while BLAS's thread count is not the one it last set (the caller
changed it, e.g. with ``threadpoolctl`` or ``OPENBLAS_NUM_THREADS``) and while
:func:`hold` is active (``minnet.lab`` holds it: every lab run trains with one BLAS thread).
A different thread count changes the products' summation order, so losses can differ in their
last bits from run to run under the default; fix the count for bit-for-bit repeatable runs.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

#: Seconds between two samples of the machine's CPU accounting (at most one per interval).
SAMPLE_INTERVAL = 0.1
#: Drop threads when the free cores fall this far below the current thread count.
DROP_MARGIN = 0.5
#: Add threads back when the free cores exceed the current count by this much.
RISE_MARGIN = 0.75
#: A sample this long after the previous one only starts a new interval: the process was not
#: stepping meanwhile, so what other processes did then says nothing about its own steps.
STALE_AFTER = 2 * SAMPLE_INTERVAL

_ENV = "MINNET_NUM_THREADS"


class CpuSample(NamedTuple):
    """One reading of the machine: all three in seconds."""

    wall: float  #: a monotonic clock
    system_busy: float  #: busy CPU time summed over every core, every process
    own: float  #: this process's CPU time, every thread (user + system)


def proc_stat_sampler() -> CpuSample | None:
    """Read ``/proc/stat``'s ``cpu`` line and ``os.times()``; ``None`` where there is no /proc.

    Busy time is ``user + nice + system + irq + softirq + steal`` (guest time is already inside
    user); idle and iowait are not busy.
    """
    try:
        with open("/proc/stat", "rb") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if len(fields) < 8 or fields[0] != b"cpu":
        return None
    user, nice, system, _idle, _iowait, irq, softirq = (int(v) for v in fields[1:8])
    steal = int(fields[8]) if len(fields) > 8 else 0
    t = os.times()
    return CpuSample(
        time.monotonic(),
        (user + nice + system + irq + softirq + steal) / _TICKS,
        t.user + t.system,
    )


try:
    _TICKS = float(os.sysconf("SC_CLK_TCK"))
except (AttributeError, ValueError, OSError):  # pragma: no cover - not POSIX
    _TICKS = 100.0


class _Blas:
    """The BLAS libraries NumPy loaded, through ``threadpoolctl`` (found on first use)."""

    def __init__(self) -> None:
        self._libs: list[Any] | None = None

    def _controllers(self) -> list[Any]:
        if self._libs is None:
            import numpy  # noqa: F401  (threadpoolctl sees only libraries already loaded)
            from threadpoolctl import ThreadpoolController

            self._libs = list(ThreadpoolController().select(user_api="blas").lib_controllers)
        return self._libs

    def get(self) -> int:
        """The BLAS thread count (the largest over the loaded libraries; 1 if there is none)."""
        return max((lib.get_num_threads() for lib in self._controllers()), default=1)

    def set(self, n: int) -> None:
        """Set every loaded BLAS library to ``n`` threads (looked up again: a library loaded
        since the last call, e.g. SciPy's, is included)."""
        self._libs = None
        for lib in self._controllers():
            lib.set_num_threads(n)


class _PoolOrBlas:
    """The count the policy drives: minnet's pool's where it is available, else BLAS's.

    On the pool path the count starts at ``min(BLAS's count, NUMBA_NUM_THREADS)`` (so
    ``OPENBLAS_NUM_THREADS=1`` still means one thread), is passed to ``numba.set_num_threads``
    (clamped to ``NUMBA_NUM_THREADS``) and BLAS is set to one thread. Decided at first use.
    """

    def __init__(self, blas: Any = None) -> None:
        self.blas = blas if blas is not None else _Blas()
        self.pool: bool | None = None  # None: not decided yet
        self.n = 1

    def use_pool(self) -> bool:
        """Whether the pool path is on (decided on the first call)."""
        if self.pool is None:
            from minnet import _pool

            if _pool.available():
                import numba

                self.n = max(1, min(self.blas.get(), numba.config.NUMBA_NUM_THREADS))
                numba.set_num_threads(self.n)
                self.blas.set(1)
                self.pool = True
                # GNU OpenMP is not fork-safe: a forked child runs the serial path.
                os.register_at_fork(after_in_child=self._forked)
            else:
                self.pool = False
        return self.pool

    def _forked(self) -> None:
        self.pool = False
        self.n = 1

    def get(self) -> int:
        """The thread count in use."""
        return self.n if self.use_pool() else self.blas.get()

    def set(self, n: int) -> None:
        """Use ``n`` threads (the pool's, BLAS held at one; or BLAS's)."""
        if self.use_pool():
            import numba

            self.n = max(1, min(n, numba.config.NUMBA_NUM_THREADS))
            numba.set_num_threads(self.n)
            self.blas.set(1)
        else:
            self.blas.set(n)


class ThreadPolicy:
    """The thread count for BLAS: fixed, or read from the machine (module docstring).

    Args:
        sampler: returns a :class:`CpuSample`, or ``None`` when the machine cannot be read.
        blas: an object with ``get() -> int`` and ``set(n)`` for the BLAS thread count.
        cpu_count: cores on the machine (``os.cpu_count()`` by default).
        clock: the monotonic clock that spaces the samples.
    """

    def __init__(
        self,
        sampler: Callable[[], CpuSample | None] = proc_stat_sampler,
        blas: Any = None,
        cpu_count: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._sampler = sampler
        self._clock = clock
        self._blas = blas if blas is not None else _Blas()
        self._cpus = cpu_count if cpu_count is not None else (os.cpu_count() or 1)
        self._lock = threading.Lock()
        self.fixed: int | None = None  #: the count set by the user, or None (read the machine)
        self._holds = 0
        self._next = 0.0  # wall time of the next sample
        self._last: CpuSample | None = None
        self._max: int | None = None  # BLAS's count at the first sample: the most we go back to
        self._set: int | None = None  # the count this policy last gave BLAS
        self._off = False  # no /proc: leave BLAS as it is

    def set_fixed(self, n: int | None) -> None:
        """A fixed count ``n`` (applied now), or ``None`` for the machine-reading default."""
        with self._lock:
            self.fixed = n
            self._last = None
            self._next = 0.0
            if n is not None:
                self._blas.set(n)
                self._set = n
            elif self._max is not None:
                self._blas.set(self._max)
                self._set = self._max

    def threads(self) -> int:
        """The BLAS thread count in use now."""
        return self._blas.get()

    @contextmanager
    def hold(self) -> Iterator[None]:
        """Leave BLAS's thread count alone inside this block (nesting and threads allowed)."""
        with self._lock:
            self._holds += 1
        try:
            yield
        finally:
            with self._lock:
                self._holds -= 1
                self._last = None  # the next interval starts after the block

    def tick(self) -> None:
        """Sample the machine if :data:`SAMPLE_INTERVAL` has passed; adjust BLAS if needed.

        Cheap when it is not time yet (one clock read). Called by ``optimizer.step()``.
        """
        if self.fixed is not None or self._off or self._holds:
            return
        now = self._clock()
        if now < self._next:
            return
        if not self._lock.acquire(blocking=False):
            return
        try:
            self._sample(now)
        finally:
            self._lock.release()

    def _sample(self, now: float) -> None:
        self._next = now + SAMPLE_INTERVAL
        sample = self._sampler()
        if sample is None:
            self._off = True
            return
        current = self._blas.get()
        if self._max is None:
            self._max = current
            self._set = current
        last, self._last = self._last, sample
        if current != self._set:  # someone else set BLAS's threads: stand aside
            return
        if last is None or sample.wall <= last.wall or sample.wall - last.wall > STALE_AFTER:
            return
        wall = sample.wall - last.wall
        others = (sample.system_busy - last.system_busy - (sample.own - last.own)) / wall
        free = self._cpus - max(others, 0.0)
        target = current
        if free < current - DROP_MARGIN:
            target = max(1, round(free))
        elif free >= current + RISE_MARGIN:
            target = min(self._max, int(free - RISE_MARGIN) + 1)
        target = max(1, min(target, self._max))
        if target != current:
            self._blas.set(target)
            self._set = target


def _from_env() -> int | None:
    value = os.environ.get(_ENV, "").strip().lower()
    if value in ("", "auto"):
        return None
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"{_ENV} must be an integer >= 1 or 'auto', got {value!r}")
    return n


_backend = _PoolOrBlas()
_policy = ThreadPolicy(blas=_backend)
_env_threads = _from_env()


def _apply_env() -> None:
    """Apply ``MINNET_NUM_THREADS`` once, at the first use (NumPy's BLAS is loaded by then)."""
    global _env_threads
    if _env_threads is not None:
        n, _env_threads = _env_threads, None
        _policy.set_fixed(n)


def set_num_threads(n: int | None) -> None:
    """Use ``n`` threads from now on (minnet's pool's, else BLAS's); ``None``: read the machine.

    ``n`` must be an int >= 1. The default (``None``, or ``MINNET_NUM_THREADS=auto``) uses
    BLAS's own count while the machine is idle and one thread less per core that other
    processes keep busy (see :mod:`minnet.threads`). As ``torch.set_num_threads``, this is
    process-wide.
    """
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"set_num_threads: n must be an int >= 1 or None, got {n!r}")
    global _env_threads
    _env_threads = None
    _policy.set_fixed(n)


def get_num_threads() -> int:
    """The number of threads minnet uses now (its pool's, else BLAS's; 1 while held)."""
    _apply_env()
    if _backend.use_pool():
        return pool_threads()
    return _policy.threads()


def pool_threads() -> int:
    """The number of threads for minnet's pool path now; 1 means the serial path (no pool, the
    policy held by :func:`hold`, or one thread)."""
    if _env_threads is not None:
        _apply_env()
    if _policy._holds or not _backend.use_pool():
        return 1
    return _backend.n


def _pool_max() -> int:
    """The most threads minnet's pool can use here (``NUMBA_NUM_THREADS``); 1 without it."""
    if not _backend.use_pool():
        return 1
    import numba

    return int(numba.config.NUMBA_NUM_THREADS)


def tick() -> None:
    """Let the default policy sample the machine (at most every :data:`SAMPLE_INTERVAL` s)."""
    if _env_threads is not None:
        _apply_env()
    _policy.tick()


def hold() -> Any:
    """A context manager inside which the policy leaves BLAS's thread count alone."""
    return _policy.hold()
