"""Every optimizer in ``minnet.optim`` updates float32 parameters in one vectorized pass.

For each optimizer class exported by ``minnet.optim`` (found generically, so an optimizer added
later is checked without touching this file), its default kernel (default hyperparameters,
``track_stats=False``) is compiled again without the disk cache and its machine code must use
wide vector registers (``ymm``/``zmm``) in packed-single arithmetic. Nothing here is timed.
"""

from __future__ import annotations

import re
from pathlib import Path

import numba
import numpy as np
import pytest

import minnet
import minnet.optim as optim
from minnet.optim import Optimizer

OPTIMIZERS = sorted(
    name
    for name in optim.__all__
    if isinstance(getattr(optim, name), type)
    and issubclass(getattr(optim, name), Optimizer)
    and getattr(optim, name) is not Optimizer
)

#: Packed-single arithmetic on a 256- or 512-bit register (AT&T syntax: the register follows).
PACKED_WIDE = re.compile(
    r"\bv(?:add|sub|mul|div|sqrt|max|min|fn?m(?:add|sub)\d*|and|andn|or|xor|blendv|cmp\w*)ps\b"
    r"[^\n]*%[yz]mm\d+"
)


def _has_avx2() -> bool:
    try:
        flags = re.search(r"^flags\s*:(.*)$", Path("/proc/cpuinfo").read_text(), re.M)
    except OSError:
        return False
    return flags is not None and "avx2" in flags.group(1).split()


def default_kernel_asm(name: str) -> str:
    """Machine code of ``name``'s float32 kernel for its default hyperparameters."""
    p = minnet.nn.Parameter(np.ones(64, np.float32))
    optimizer = getattr(optim, name)([p])
    group = optimizer.param_groups[0]
    (flat,) = optimizer._flats[0]
    kernel = optimizer._kernel(group, False, True)
    # The disk-cached kernel cannot show its assembly: compile the same function again.
    fresh = numba.njit(error_model="numpy", nogil=True)(kernel.py_func)
    fresh(*flat.args, flat.scratch, optimizer._scalars(group, flat.dtype, 1))
    return "\n".join(fresh.inspect_asm().values())


def test_every_optimizer_is_found() -> None:
    assert {"SGD", "Adam", "AdamW"} <= set(OPTIMIZERS)


@pytest.mark.skipif(not _has_avx2(), reason="needs an AVX2 CPU (ymm registers)")
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_default_kernel_is_vectorized(name: str) -> None:
    asm = default_kernel_asm(name)
    packed = PACKED_WIDE.findall(asm)
    scalar = re.findall(r"\bv(?:add|sub|mul|div|sqrt)ss\b", asm)
    assert len(packed) >= 4, (
        f"{name}: the default float32 kernel has {len(packed)} packed ymm/zmm arithmetic "
        f"instructions ({len(scalar)} scalar ones): the loop did not vectorize"
    )


def test_the_check_can_fail() -> None:
    """A loop that cannot vectorize (each element needs the previous one) finds no packed
    instruction, so the pattern does not match everything."""

    @numba.njit(error_model="numpy")
    def recurrence(x):  # pragma: no cover - compiled
        for i in range(1, x.shape[0]):
            x[i] = x[i - 1] * np.float32(0.5) + x[i]

    recurrence(np.ones(64, np.float32))
    asm = "\n".join(recurrence.inspect_asm().values())
    assert not PACKED_WIDE.findall(asm)
