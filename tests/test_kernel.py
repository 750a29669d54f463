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

from minnet._kernels import adam_scalars, adam_step_numba, adam_step_reference


def run_both(
    dtype: np.dtype, n: int, steps: int, hp: dict, amsgrad: bool, zero_frac: float, seed: int
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Run ``steps`` updates with both implementations on identical random inputs."""
    rng = np.random.default_rng(seed)
    param = rng.standard_normal(n).astype(dtype)
    states = []
    for _ in range(2):
        states.append(
            [
                param.copy(),
                np.zeros(n, dtype),
                np.zeros(n, dtype),
                np.zeros(n if amsgrad else 0, dtype),
            ]
        )
    for t in range(1, steps + 1):
        grad = rng.standard_normal(n).astype(dtype) * (rng.random(n) >= zero_frac)
        s = adam_scalars(np.dtype(dtype), step=t, **hp)
        p, m, v, vmax = states[0]
        adam_step_numba(p, grad, m, v, vmax, *s, amsgrad)
        p, m, v, vmax = states[1]
        adam_step_reference(p, grad, m, v, vmax, s, amsgrad)
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


@settings(max_examples=150, deadline=None)
@given(
    n=st.integers(1, 300),
    steps=st.integers(1, 6),
    hp=hyperparameters,
    amsgrad=st.booleans(),
    zero_frac=st.sampled_from([0.0, 0.5, 1.0]),
    seed=st.integers(0, 2**32 - 1),
)
def test_kernel_matches_reference_float64(n, steps, hp, amsgrad, zero_frac, seed) -> None:
    ours, ref = run_both(np.float64, n, steps, hp, amsgrad, zero_frac, seed)
    for a, b in zip(ours, ref):
        # NaN where the reference has NaN (eps=0 with a zero second moment), else 1e-12 relative.
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=0, equal_nan=True)


def test_kernel_matches_reference_float32() -> None:
    hp = dict(lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=1e-2)
    ours, ref = run_both(np.float32, 10_001, 5, hp, True, 0.3, 7)
    for a, b in zip(ours, ref):
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=0)


def test_eps_zero_with_zero_gradient_gives_nan_not_exception() -> None:
    # Coordinate 0 has never seen a gradient: V_dw = S_dw = 0 and the update is 0/0.
    for amsgrad in (False, True):
        param = np.array([1.0, 2.0])
        m, v = np.zeros(2), np.zeros(2)
        vmax = np.zeros(2 if amsgrad else 0)
        s = adam_scalars(
            np.dtype(np.float64), lr=0.1, beta1=0.9, beta2=0.999, eps=0.0, weight_decay=0.0, step=1
        )
        adam_step_numba(param, np.array([0.0, 1.0]), m, v, vmax, *s, amsgrad)
        assert np.isnan(param[0])
        assert param[1] == pytest.approx(2.0 - 0.1)


def test_nan_gradient_propagates_through_amsgrad_max() -> None:
    param, m, v, vmax = np.ones(3), np.zeros(3), np.zeros(3), np.zeros(3)
    s = adam_scalars(
        np.dtype(np.float64), lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, step=1
    )
    adam_step_numba(param, np.array([np.nan, 1.0, 0.0]), m, v, vmax, *s, True)
    assert np.isnan(vmax[0]) and np.isnan(param[0])
    assert np.isfinite(param[1:]).all()


def test_kernel_is_cached_on_disk(tmp_path) -> None:
    """A second process loads the compiled kernel from Numba's cache instead of compiling."""
    script = textwrap.dedent(
        """
        import numpy as np
        from minnet._kernels import adam_scalars, adam_step_numba
        a = np.ones(4, np.float32)
        s = adam_scalars(np.dtype(np.float32), lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8,
                         weight_decay=0.0, step=1)
        adam_step_numba(a, a.copy(), np.zeros(4, np.float32), np.zeros(4, np.float32),
                        np.zeros(4, np.float32), *s, True)
        print(sum(adam_step_numba.stats.cache_hits.values()),
              sum(adam_step_numba.stats.cache_misses.values()))
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
