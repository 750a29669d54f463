"""Every optimizer in ``minnet.optim`` updates float32 parameters in one vectorized pass.

For each optimizer class exported by ``minnet.optim`` (found generically, so an optimizer added
later is checked without touching this file), its default kernel (default hyperparameters,
``track_stats=False``) is compiled again without the disk cache and its machine code must use
wide vector registers (``ymm``/``zmm``) in packed-single arithmetic; ``REQUIRED`` names, per
optimizer and eps placement, the packed operations its update needs (the eps-bearing division
or square root). Adam's 16-bit kernels
(float16 and bfloat16 storage) must also convert in 32-bit integer lanes: no widening of the
16-bit values to 64 bits and no packed 64-bit integer arithmetic, which would halve the number of
lanes per register. Where the CPU has F16C the float16 kernel converts with the packed
``vcvtph2ps`` / ``vcvtps2ph`` instead (``minnet._lowp.F16_HARDWARE``), and the integer code of
the fallback (``MINNET_F16C=0``) is checked as well, compiled in a second process. Nothing here
is timed.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numba
import numpy as np
import pytest

import minnet
import minnet.optim as optim
from minnet import _lowp
from minnet.optim import Optimizer

OPTIMIZERS = sorted(
    name
    for name in optim.__all__
    if isinstance(getattr(optim, name), type)
    and issubclass(getattr(optim, name), Optimizer)
    and getattr(optim, name) is not Optimizer
    and getattr(optim, name).rule is not None  # LBFGS: dot products, no element kernel
    and getattr(optim, name).shaped is None  # a shaped update (Adafactor): NumPy and BLAS
)

#: Packed-single arithmetic on a 256- or 512-bit register (AT&T syntax: the register follows).
PACKED_WIDE = re.compile(
    r"\bv(?:add|sub|mul|div|sqrt|max|min|fn?m(?:add|sub)\d*|and|andn|or|xor|blendv|cmp\w*)ps\b"
    r"[^\n]*%[yz]mm\d+"
)


#: Packed 64-bit integer lanes on a 256- or 512-bit register: 16->64 / 32->64 bit widening,
#: 64->32/16 bit narrowing, int64 -> float conversion and 64-bit integer arithmetic.
PACKED_INT64 = re.compile(
    r"\bv(?:pmov[sz]x(?:wq|dq)|pmovq[dw]|cvtu?qq2ps|(?:padd|psub|psll|psrl|psra|pmaxu|pminu"
    r"|pcmp\w*)q)\b[^\n]*%[yz]mm\d+"
)
#: 16-bit values in 32-bit lanes: widened to or narrowed from them, or shifted within them (the
#: bfloat16 kernel reads two values per 32-bit word and takes the halves apart with shifts).
PACKED_16_32 = re.compile(r"\bv(?:pmov[sz]xwd|pmovdw|pslld|psrld)\b[^\n]*%[yz]mm\d+")
#: F16C's packed float16 -> float32 and float32 -> float16 conversions on a 256- or 512-bit
#: register (``vcvtps2ph`` narrows a zmm into a ymm: either register counts).
PACKED_PH2PS = re.compile(r"\bvcvtph2ps\b[^\n]*%[yz]mm\d+")
PACKED_PS2PH = re.compile(r"\bvcvtps2ph\b[^\n]*%[yz]mm\d+")


def _has_avx2() -> bool:
    try:
        flags = re.search(r"^flags\s*:(.*)$", Path("/proc/cpuinfo").read_text(), re.M)
    except OSError:
        return False
    return flags is not None and "avx2" in flags.group(1).split()


def default_kernel_asm(name: str, **options: Any) -> str:
    """Machine code of ``name``'s float32 kernel for its default hyperparameters (and
    ``options``)."""
    p = minnet.nn.Parameter(np.ones(64, np.float32))
    optimizer = getattr(optim, name)([p], **options)
    group = optimizer.param_groups[0]
    (flat,) = optimizer._flats[0]
    kernel = optimizer._kernel(group, False, True)
    s = optimizer._scalars(group, flat.dtype, 1)
    # A rule with a per-tensor stage: a thin wrapper around its one compiled call.
    compiled = getattr(kernel, "compiled", kernel)
    # The disk-cached kernel cannot show its assembly: compile the same function again.
    fresh = numba.njit(error_model="numpy", nogil=True)(compiled.py_func)
    if compiled is kernel:
        fresh(*flat.args, flat.scratch, s)
    elif hasattr(kernel, "call_args"):  # SparseAdam: its row pass over the touched elements
        flat.grad[...] = 1.0
        fresh(*kernel.call_args(*flat.args, flat.scratch, s))
    else:
        data, grad, *state = flat.args
        bounds = np.array([0, flat.size], np.int64)
        fresh(data, grad, tuple(state), flat.ensure_scratch(), s, bounds, np.empty((1, 2)),
              flat.tensor_state.copy())
    return "\n".join(fresh.inspect_asm().values())


def lowp_adam_asm(dtype: str) -> str:
    """Machine code of Adam's plain (untracked, writing, ``rounding="fused"``) kernel with
    parameters, gradients and state all in ``dtype``."""
    p = minnet.nn.Parameter(np.ones(64, minnet.dtypes.as_dtype(dtype)))
    optimizer = optim.Adam([p], eps=1e-4, rounding="fused")
    group = optimizer.param_groups[0]
    (flat,) = optimizer._flats[0]
    kernel = optimizer._kernel(group, False, True, flat.formats)
    fresh = numba.njit(error_model="numpy", nogil=True)(kernel.py_func)
    fresh(*flat.args, flat.scratch, optimizer._scalars(group, np.dtype(np.float32), 1))
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


_SOME_PACKED = r"\bv(?:sqrt|div|fmadd\w*|mul|add|sub|and|or|blendv)ps\b"
#: (optimizer, options, packed single-precision operations its float32 kernel must hold, how
#: many of them at least, ymm/zmm register uses at least): the expensive part of each update.
REQUIRED: list[tuple[str, dict[str, Any], str, int, int]] = [
    ("RMSprop", {}, r"\bv(?:sqrt|div)ps\b", 1, 1),
    ("Adagrad", {}, r"\bv(?:sqrt|div)ps\b", 1, 1),
    ("Adamax", {"eps_mode": "max"}, r"\bvdivps\b", 1, 1),
    ("Adamax", {"eps_mode": "outside"}, r"\bvdivps\b", 1, 1),
    ("Adamax", {"weight_decay": 0.1, "decoupled_weight_decay": True}, r"\bvdivps\b", 1, 1),
    ("Adadelta", {}, r"\bvdivps\b", 1, 1),
    ("NAdam", {}, r"\bvsqrtps\b", 1, 21),
    ("NAdam", {"variant": "optax"}, r"\bvsqrtps\b", 1, 21),
    ("RAdam", {}, r"\bvsqrtps\b", 1, 21),
    ("RAdam", {"variant": "optax"}, r"\bvsqrtps\b", 1, 21),
    ("AdaBelief", {}, _SOME_PACKED, 6, 21),
    ("Lion", {}, _SOME_PACKED, 6, 21),
    ("Rprop", {}, r"\bv(?:cmp\w*|blendm|mul)ps\b", 6, 21),  # compares, selects, clamp
    ("Rprop", {"variant": "optax"}, r"\bv(?:cmp\w*|blendm|mul)ps\b", 6, 21),
    ("ASGD", {}, _SOME_PACKED, 4, 21),
    ("Yogi", {}, r"\bvsqrtps\b", 1, 21),
    ("ADOPT", {}, r"\bvsqrtps\b", 1, 21),
    ("Adan", {}, r"\bvsqrtps\b", 1, 21),
    ("AdEMAMix", {}, r"\bvsqrtps\b", 1, 21),
    ("Ftrl", {}, r"\bv(?:sqrt|div)ps\b", 2, 21),
    ("SignSGD", {}, _SOME_PACKED, 2, 21),
    ("Signum", {}, _SOME_PACKED, 4, 21),
    ("Lamb", {}, r"\bvsqrtps\b", 1, 21),  # pass 1 (pass 2 is one multiply-add)
    ("Lamb", {"variant": "optax"}, r"\bvsqrtps\b", 1, 21),
    ("Lars", {}, _SOME_PACKED, 4, 21),
    ("Lars", {"nesterov": True}, _SOME_PACKED, 4, 21),
    ("SparseAdam", {}, r"\bv(?:sqrt|div)ps\b", 2, 21),  # each touched row in packed lanes
    ("OptimisticAdam", {}, r"\bvsqrtps\b", 1, 21),
    ("NoisySGD", {}, _SOME_PACKED, 2, 21),
    ("ScheduleFreeAdamW", {}, r"\bv(?:sqrt|div)ps\b", 2, 21),
    ("ScheduleFreeAdamW", {"variant": "keras"}, r"\bv(?:sqrt|div)ps\b", 2, 21),
    ("Prodigy", {}, r"\bv(?:sqrt|div)ps\b", 2, 21),  # the update pass (the reduction is serial)
    ("Novograd", {}, r"\bvdivps\b", 1, 21),  # pass 2: g / denominator, the moment, the step
    ("Fromage", {}, _SOME_PACKED, 4, 21),  # pass 2: (g * ratio) * -lr*mult + (mult - 1) * w
]


@pytest.mark.skipif(not _has_avx2(), reason="needs an AVX2 CPU (ymm registers)")
@pytest.mark.parametrize(
    ("name", "options", "ops", "min_ops", "min_wide"),
    REQUIRED,
    ids=[f"{r[0]}-{r[1]}" if r[1] else r[0] for r in REQUIRED],
)
def test_the_update_is_packed(
    name: str, options: dict[str, Any], ops: str, min_ops: int, min_wide: int
) -> None:
    asm = default_kernel_asm(name, **options)
    wide = len(re.findall(r"%[yz]mm\d+", asm))
    packed = len(re.findall(ops, asm))
    assert wide >= min_wide and packed >= min_ops, f"{wide} ymm/zmm uses, {packed} of {ops}"


def float16_adam_asm(hardware: bool) -> str:
    """:func:`lowp_adam_asm` of float16 with F16C's instructions or the integer code: in this
    process if that is its choice (``minnet._lowp.F16_HARDWARE``, fixed at import), else in a
    second one started with ``MINNET_F16C`` set."""
    if _lowp.F16_HARDWARE == hardware:
        return lowp_adam_asm("float16")
    code = (
        "import sys, warnings; warnings.simplefilter('ignore'); sys.path.insert(0, sys.argv[1]); "
        "import test_kernels_vectorized as t; assert t._lowp.F16_HARDWARE == (sys.argv[2] == '1');"
        " print(t.lowp_adam_asm('float16'))"
    )
    env = dict(os.environ, MINNET_F16C="1" if hardware else "0")
    here = str(Path(__file__).parent)
    args = [sys.executable, "-c", code, here, "1" if hardware else "0"]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.skipif(not _has_avx2(), reason="needs an AVX2 CPU (ymm registers)")
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
@pytest.mark.filterwarnings("ignore::minnet.optim.EpsWarning")  # float16 state on purpose
def test_16bit_adam_converts_in_32bit_lanes(dtype: str) -> None:
    """The integer conversions (bfloat16's, and float16's fallback without F16C)."""
    asm = lowp_adam_asm(dtype) if dtype == "bfloat16" else float16_adam_asm(hardware=False)
    assert not re.findall(r"\bvcvt(?:ph2ps|ps2ph)\b", asm), f"{dtype} Adam: F16C conversions"
    packed = PACKED_WIDE.findall(asm)
    lanes32 = PACKED_16_32.findall(asm)
    lanes64 = PACKED_INT64.findall(asm)
    assert len(packed) >= 4, f"{dtype} Adam: {len(packed)} packed ymm/zmm arithmetic instructions"
    assert len(lanes32) >= 4, f"{dtype} Adam: {len(lanes32)} packed 32-bit conversions or shifts"
    assert not lanes64, (
        f"{dtype} Adam: {len(lanes64)} packed 64-bit integer instructions (the conversions "
        f"run in 64-bit lanes), e.g. {sorted(set(lanes64))[:3]}"
    )


@pytest.mark.skipif(not _lowp.cpu_has_f16c(), reason="the CPU has no F16C")
@pytest.mark.filterwarnings("ignore::minnet.optim.EpsWarning")  # float16 state on purpose
def test_float16_adam_converts_with_f16c() -> None:
    """Where the CPU has F16C, the float16 kernel loads with packed ``vcvtph2ps`` and stores
    with packed ``vcvtps2ph`` (4 arrays read, 3 written), with none of the integer code's
    32-bit shifts and shuffles left and no 64-bit integer lanes."""
    asm = float16_adam_asm(hardware=True)
    loads, stores = PACKED_PH2PS.findall(asm), PACKED_PS2PH.findall(asm)
    lanes32 = PACKED_16_32.findall(asm)
    lanes64 = PACKED_INT64.findall(asm)
    assert len(PACKED_WIDE.findall(asm)) >= 4, "float16 Adam: the update is not packed"
    assert len(loads) >= 4 and len(stores) >= 3, (
        f"float16 Adam: {len(loads)} packed vcvtph2ps, {len(stores)} packed vcvtps2ph"
    )
    assert not lanes32, f"float16 Adam: integer conversion code left: {sorted(set(lanes32))[:3]}"
    assert not lanes64, f"float16 Adam: 64-bit integer lanes: {sorted(set(lanes64))[:3]}"


@pytest.mark.skipif(not _has_avx2(), reason="needs an AVX2 CPU (ymm registers)")
def test_the_lane_check_can_fail() -> None:
    """Integer arithmetic on a 16-bit value widened to int64 (Numba's type for integer
    literals) vectorizes in 64-bit lanes, and the pattern finds it."""

    @numba.njit(error_model="numpy")
    def widen(h, out):  # pragma: no cover - compiled
        for i in range(h.shape[0]):
            v = np.int64(h[i])
            out[i] = np.float32(((v & 0x7FFF) << 13) + (112 << 23))

    widen(np.ones(64, np.uint16), np.ones(64, np.float32))
    asm = "\n".join(widen.inspect_asm().values())
    assert PACKED_INT64.findall(asm)


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
