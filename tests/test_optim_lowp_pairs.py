"""Adam's plain all-bfloat16 kernel (``rounding="fused"``, no stats) reads and writes two
neighbouring elements as one 32-bit word. It must store exactly the bits of the element-by-element
loop (the tracked kernel) and of the NumPy reference: for odd counts (the last element alone),
for runs that start at an odd element (a frozen parameter before them), for NaN and inf in the
parameters and gradients, with and without weight decay (Adam's defaults take their own copy of
the loop) and in every variant of the update."""

from __future__ import annotations

import numpy as np
import pytest

from minnet.dtypes import bfloat16
from minnet.nn import Parameter
from minnet.optim import Adam, AdamW

U16 = np.uint16
F32 = np.float32


def _bf16(values: np.ndarray) -> np.ndarray:
    return np.asarray(values, np.float32).astype(bfloat16)


def _params(sizes: list[int], seed: int) -> list[Parameter]:
    """bfloat16 parameters with NaNs (both signs, quiet and signalling payloads), infs, zeros of
    both signs, subnormals and ordinary values."""
    rng = np.random.default_rng(seed)
    out = []
    for n in sizes:
        p = Parameter(np.zeros(n, np.float32))
        p.data = _bf16(rng.standard_normal(n))
        bits = p.data.view(U16)
        special = np.array([0x7FC0, 0xFFC1, 0x7F81, 0xFF80, 0x7F80, 0x8000, 0x0001, 0x807F], U16)
        idx = rng.choice(n, size=min(n, 3), replace=False)
        bits[idx] = rng.choice(special, size=idx.size)
        p.grad = np.zeros_like(p.data)
        out.append(p)
    return out


def _grads(sizes: list[int], seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for n in sizes:
        g = rng.standard_normal(n) * 10.0 ** rng.integers(-25, 2, size=n)
        g[rng.random(n) < 0.2] = 0.0
        g = _bf16(g)
        special = np.array([0x7FC0, 0xFFA0, 0x7F80, 0xFF80, 0x8000, 0x0003], U16)
        k = rng.random(n) < 0.03
        g.view(U16)[k] = rng.choice(special, size=int(k.sum()))
        out.append(g)
    return out


def _run(cls: type, sizes: list[int], frozen: set[int], track: bool, steps: int, **options):
    params = _params(sizes, 0)
    for j in frozen:
        params[j].requires_grad = False
    opt = cls(params, lr=1e-2, track_stats=track, rounding="fused", **options)
    history = []
    for t in range(steps):
        for p, g in zip(params, _grads(sizes, t + 1)):
            p.grad[...] = g
        opt.step()
        flat = opt._flats[0][0]
        history.append([a.view(U16).copy() for a in (flat.data, *flat.arrays)])
    return opt, history


LAYOUTS = {
    "odd": ([257], set()),
    "even": ([64], set()),
    "odd-offset-run": ([3, 1, 130, 5], {1}),
    "one": ([1], set()),
}
# Each variant compiles two kernels (plain and tracked): the defaults run on every layout, the
# other variants on the layout that has an odd count and a run starting at an odd element.
SLOW = pytest.mark.slow
CASES = [(Adam, {}, layout) for layout in LAYOUTS] + [
    pytest.param(Adam, {"weight_decay": 0.1}, "odd-offset-run", marks=SLOW),
    # lerp weight 1 - 0.4 = 0.6: PyTorch's other lerp formula
    pytest.param(Adam, {"betas": (0.4, 0.999), "amsgrad": True}, "odd-offset-run", marks=SLOW),
    pytest.param(
        Adam, {"amsgrad": True, "amsgrad_max": "corrected", "eps_mode": "hat"}, "odd-offset-run",
        marks=SLOW,
    ),  # fmt: skip
    pytest.param(
        AdamW, {"weight_decay": 0.1, "eps_mode": "inside", "eps": 0.0}, "odd-offset-run",
        marks=SLOW,
    ),  # fmt: skip
]


@pytest.mark.parametrize(
    ("cls", "options", "layout"), CASES, ids=lambda x: getattr(x, "__name__", str(x))
)
@pytest.mark.filterwarnings("ignore::minnet.optim.EpsWarning")  # eps=0 rows
def test_pair_kernel_stores_the_bits_of_the_element_loop(cls, options, layout) -> None:
    sizes, frozen = LAYOUTS[layout]
    _, fast = _run(cls, sizes, frozen, track=False, steps=4, **options)
    _, slow = _run(cls, sizes, frozen, track=True, steps=4, **options)
    for t, (a, b) in enumerate(zip(fast, slow), start=1):
        for k, (x, y) in enumerate(zip(a, b)):
            diff = np.flatnonzero(x != y)
            assert diff.size == 0, (
                f"step {t}, array {k}: {diff.size} elements differ, first at {diff[0]}: "
                f"{x[diff[0]]:#06x} != {y[diff[0]]:#06x}"
            )


def test_pair_kernel_matches_the_reference() -> None:
    """The plain kernel against the NumPy reference (any NaN equals any NaN there)."""
    n = 301
    p = Parameter(np.zeros(n, np.float32))
    p.data = _bf16(np.random.default_rng(3).standard_normal(n))
    p.grad = np.zeros_like(p.data)
    opt = Adam([p], lr=1e-2, rounding="fused")
    group = opt.param_groups[0]
    flat = opt._flats[0][0]
    ref = opt._reference(group, flat.formats)
    param = p.data.copy()
    state = [a.copy() for a in flat.arrays]
    for t in range(1, 6):
        (g,) = _grads([n], t)
        p.grad[...] = g
        opt.step()
        ref(param, g, *state, opt._scalars(group, np.dtype(F32), t))
        for x, y in zip((p.data, *flat.arrays), (param, *state)):
            nan = np.isnan(x.astype(F32)) & np.isnan(y.astype(F32))
            assert np.all((x.view(U16) == y.view(U16)) | nan), f"step {t}"
        assert np.isnan(p.data.astype(F32)).any()  # the NaN inputs went through
