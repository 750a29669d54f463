"""Cold compile time of the optimizer kernels: the first ``step()`` with an empty Numba cache.

``python -m benchmarks.compile_time`` (run it with ``PYTHONPATH=<checkout>`` to time another
checkout, e.g. a git worktree of an earlier commit, and alternate the two) prints the seconds of
the first step of Adam on a 100-value parameter for each storage format, in a fresh process with a
temporary ``NUMBA_CACHE_DIR``. The steps run in this order, so later rows reuse what earlier ones
compiled (the 16-bit conversions): bfloat16, float16, float32 with AMSGrad, float32 with
``eps_mode="hat"``.
"""

from __future__ import annotations

import os
import tempfile
import time


def main() -> None:
    """Print one line per kernel: its format and the seconds of its first step."""
    os.environ["NUMBA_CACHE_DIR"] = tempfile.mkdtemp()
    import numpy as np

    import minnet

    cases = [("bfloat16", {}), ("float16", {}), ("float32", {"amsgrad": True}),
             ("float32", {"eps_mode": "hat"})]  # fmt: skip
    for dtype, kwargs in cases:
        p = minnet.nn.Parameter(np.ones(100, minnet.dtypes.as_dtype(dtype)))
        opt = minnet.optim.Adam([p], eps=1e-3, **kwargs)
        t0 = time.perf_counter()
        opt.step()
        print(f"{dtype} {kwargs or ''}: first step {time.perf_counter() - t0:.2f} s")


if __name__ == "__main__":
    main()
