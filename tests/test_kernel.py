"""The Numba kernel against the plain-NumPy reference, and its IEEE behaviour."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minnet.optim._kernel import kernel
from minnet.optim.adam import (
    AMSGRAD_MAX_MODES,
    EPS_MODES,
    MAX_RAW,
    NO_MAX,
    RULE,
    AdamScalars,
    adam_scalars,
    adam_step_reference,
    ams_kind,
)


def adam_step_numba(
    param, grad, m, v, vmax, scratch, s, mode, ams, track, write, decoupled=False
):  # type: ignore[no-untyped-def]
    """Adam's compiled pass for one variant (the AMSGrad max only when ``ams`` keeps one)."""
    state = (m, v) if ams == NO_MAX else (m, v, vmax)
    return kernel(RULE, (mode, ams, decoupled), track, write)(param, grad, *state, scratch, s)


def run_both(
    dtype: type,
    n: int,
    steps: int,
    hp: dict,
    amsgrad: bool,
    zero_frac: float,
    seed: int,
    eps_mode: str = "outside",
    amsgrad_max: str = "raw",
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Run ``steps`` updates with both implementations on identical random inputs."""
    rng = np.random.default_rng(seed)
    param = rng.standard_normal(n).astype(dtype)
    states = []
    for _ in range(2):
        vmax = np.zeros(n if amsgrad else 0, dtype)
        states.append([param.copy(), np.zeros(n, dtype), np.zeros(n, dtype), vmax])
    mode = EPS_MODES.index(eps_mode)
    ams = ams_kind(amsgrad, amsgrad_max)
    scratch = np.empty(n, dtype)
    for t in range(1, steps + 1):
        grad = rng.standard_normal(n).astype(dtype) * (rng.random(n) >= zero_frac)
        s = adam_scalars(
            np.dtype(dtype), step=t, eps_mode=eps_mode, amsgrad=amsgrad, amsgrad_max=amsgrad_max,
            **hp,
        )  # fmt: skip
        p, m, v, vmax = states[0]
        # Odd steps take the plain path, even steps the tracked one: both must match.
        adam_step_numba(p, grad, m, v, vmax, scratch, s, mode, ams, t % 2 == 0, True)
        p, m, v, vmax = states[1]
        adam_step_reference(p, grad, m, v, vmax, s, mode, ams)
    return states[0], states[1]


hyperparameters = st.fixed_dictionaries(
    {
        "lr": st.sampled_from([0.0, 1e-4, 1e-3, 0.1]),
        "beta1": st.sampled_from([0.0, 0.3, 0.5, 0.9, 0.99]),
        "beta2": st.sampled_from([0.0, 0.9, 0.999, 0.9999]),
        "eps": st.sampled_from([0.0, 1e-16, 1e-8, 1e-3, 1.0]),
        "weight_decay": st.sampled_from([0.0, 1e-2]),
    }
)


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(1, 300),
    steps=st.integers(1, 6),
    hp=hyperparameters,
    variant=st.sampled_from(
        [(m, False, "raw") for m in EPS_MODES]
        + [(m, True, a) for m in EPS_MODES for a in AMSGRAD_MAX_MODES]
    ),
    zero_frac=st.sampled_from([0.0, 0.5, 1.0]),
    seed=st.integers(0, 2**32 - 1),
)
def test_kernel_matches_reference_float64(n, steps, hp, variant, zero_frac, seed) -> None:
    eps_mode, amsgrad, amsgrad_max = variant
    ours, ref = run_both(np.float64, n, steps, hp, amsgrad, zero_frac, seed, eps_mode, amsgrad_max)
    for a, b in zip(ours, ref):
        # NaN where the reference has NaN (eps=0 with a zero second moment), else 1e-12 relative
        # to the buffer's scale: a parameter that p + delta brings near 0 keeps the absolute
        # error of p (atan2 may differ by an ulp between Numba's libm and NumPy's).
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
        finite = np.abs(b[np.isfinite(b)])
        scale = float(finite.max()) if finite.size else 0.0
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12 * scale, equal_nan=True)


@pytest.mark.parametrize("eps_mode", EPS_MODES)
def test_kernel_matches_reference_float32(eps_mode: str) -> None:
    hp = dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=1e-2)
    ours, ref = run_both(np.float32, 10_001, 5, hp, True, 0.3, 7, eps_mode)
    for a, b in zip(ours, ref):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)  # float32 atan2 differs in ulps


def scalars64(**kw: object) -> AdamScalars:
    hp = dict(lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, step=1)
    hp.update(kw)
    return adam_scalars(np.dtype(np.float64), **hp)


def test_eps_zero_with_zero_gradient_gives_nan_not_exception() -> None:
    # Coordinate 0 has never seen a gradient: V_dw = S_dw = 0 and the update is 0/0.
    for amsgrad in (False, True):
        param = np.array([1.0, 2.0])
        m, v = np.zeros(2), np.zeros(2)
        vmax = np.zeros(2 if amsgrad else 0)
        s = scalars64(eps=0.0, amsgrad=amsgrad)
        grad = np.array([0.0, 1.0])
        adam_step_numba(param, grad, m, v, vmax, np.empty(0), s, 0, int(amsgrad), False, True)
        assert np.isnan(param[0])
        assert param[1] == pytest.approx(2.0 - 0.1)


def test_nan_gradient_propagates_through_amsgrad_max() -> None:
    param, m, v, vmax = np.ones(3), np.zeros(3), np.zeros(3), np.zeros(3)
    s = scalars64(amsgrad=True)
    grad = np.array([np.nan, 1.0, 0.0])
    adam_step_numba(param, grad, m, v, vmax, np.empty(0), s, 0, MAX_RAW, False, True)
    assert np.isnan(vmax[0]) and np.isnan(param[0])
    assert np.isfinite(param[1:]).all()


def test_kernel_is_cached_on_disk(tmp_path) -> None:
    """A second process loads the compiled kernel from Numba's cache instead of compiling."""
    script = textwrap.dedent(
        """
        import numpy as np
        from minnet.optim._kernel import kernel
        from minnet.optim.adam import RULE, adam_scalars
        a = np.ones(4, np.float32)
        s = adam_scalars(np.dtype(np.float32), lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8,
                         weight_decay=0.0, step=1, amsgrad=True)
        z = lambda: np.zeros(4, np.float32)
        kernel = kernel(RULE, (0, 1, False), False, True)
        kernel(a, a.copy(), z(), z(), z(), z(), s)
        print(sum(kernel.stats.cache_hits.values()), sum(kernel.stats.cache_misses.values()))
        """
    )
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    runs = [
        subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
        ).stdout.split()
        for _ in range(2)
    ]
    assert runs[0] == ["0", "1"], runs[0]  # first process compiles (a miss) ...
    assert runs[1] == ["1", "0"], runs[1]  # ... the second one only loads


def test_tracked_counts_match_a_numpy_recount() -> None:
    rng = np.random.default_rng(3)
    n = 5000
    finite = rng.standard_normal(n)
    grad = rng.standard_normal(n) * (rng.random(n) < 0.5)  # half the coordinates get g = 0
    s = scalars64(eps=1e-3)
    # The reference on finite parameters gives the expected update of every coordinate.
    ref = finite.copy()
    adam_step_reference(ref, grad, np.zeros(n), v_ref := np.zeros(n), np.empty(0), s, 0, 0)
    param = finite.copy()
    param[:3] = np.nan  # three parameters are already NaN: the update leaves them NaN
    n_dom, n_bad, sum_sq = adam_step_numba(
        param, grad, np.zeros(n), np.zeros(n), np.empty(0), np.empty(n), s, 0, 0, True, True
    )
    assert n_dom == int(np.sum(s.eps >= np.sqrt(v_ref) / s.root_div))
    assert 0 < n_dom < n
    assert n_bad == 3
    assert sum_sq == pytest.approx(np.sum((ref - finite) ** 2), rel=1e-9)


def test_dry_run_writes_nothing() -> None:
    rng = np.random.default_rng(4)
    arrays = [rng.standard_normal(50) for _ in range(2)] + [np.ones(50), np.ones(50), np.ones(50)]
    copies = [a.copy() for a in arrays]
    p, g, m, v, vmax = arrays
    adam_step_numba(p, g, m, v, vmax, np.empty(50), scalars64(amsgrad=True), 0, 1, True, False)
    for a, b in zip(arrays, copies):
        np.testing.assert_array_equal(a, b)


def test_a_rule_from_an_unimportable_module_does_not_break_other_kernels(tmp_path) -> None:
    """Every kernel is built from the skeleton's one closure, so their disk-cache entries share a
    file name; a key naming a type from a module that another process cannot import (a user's
    script, a test's temporary module) must not make that process's kernels fail to load."""
    mod = tmp_path / "mod"
    mod.mkdir()
    (mod / "my_rule.py").write_text(
        textwrap.dedent(
            """
            from typing import NamedTuple
            import numpy as np
            from minnet.optim._kernel import Rule, element, kernel

            class MyScalars(NamedTuple):
                neg_lr: np.floating

            @element
            def update(p, g, state, s, o, rp, rs):
                return p, p + s.neg_lr * g, (), s.neg_lr * g, s.neg_lr * g, False, g

            a = np.ones(8)
            kernel(Rule(update), (), False, True)(a, a.copy(), a[:0], MyScalars(-0.1))
            """
        )
    )
    adam = textwrap.dedent(
        """
        import numpy as np
        from minnet.optim._kernel import kernel
        from minnet.optim.adam import RULE, adam_scalars
        a = np.ones(4)
        s = adam_scalars(np.dtype(np.float64), lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8,
                         weight_decay=0.0, step=1)
        kernel(RULE, (0, 0, False), False, True)(a, a.copy(), a * 0, a * 0, a[:0], s)
        print(a[0])
        """
    )
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    run = [sys.executable, "-c"]
    subprocess.run([*run, adam], env=env, check=True, capture_output=True)
    subprocess.run([*run, "import my_rule"], env=dict(env, PYTHONPATH=str(mod)), check=True,
                   capture_output=True)  # fmt: skip
    out = subprocess.run([*run, adam], env=env, check=True, capture_output=True, text=True)
    assert float(out.stdout) == pytest.approx(1.0 - 1e-3)
