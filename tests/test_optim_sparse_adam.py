"""SparseAdam: what is its own. Absent rows keep their values and moments (dense Adam moves them
by their momentum), the row set of an ``Embedding(sparse=True)`` wins over the gradient's zeros,
every ``step()`` counts in the bias correction, ``check_finite`` looks at the touched rows, and
the per-step kernel visits only those rows. PyTorch parity is in
tests/test_sparse_adam_lbfgs_parity.py; the family's tables (tests/test_optim_family.py) cover
messages, groups and state dicts.
"""

from __future__ import annotations

import numpy as np
import pytest

from minnet.nn import Embedding, Parameter
from minnet.optim import Adam, SparseAdam
from minnet.optim.sparse_adam import touched_rows


def test_absent_rows_keep_their_values_and_moments_where_dense_adam_moves_them() -> None:
    w0 = np.arange(12.0).reshape(4, 3)
    a, b = Parameter(w0.copy()), Parameter(w0.copy())
    sparse, dense = SparseAdam([a], lr=0.1), Adam([b], lr=0.1)
    for p in (a, b):
        p.grad[...] = 1.0  # every row once
    sparse.step()
    dense.step()
    before_a, state_a = a.data.copy(), sparse.state_dict()["state"][0]
    before_b = b.data.copy()
    for p in (a, b):
        p.grad[...] = 0.0
        p.grad[1] = [1.0, 0.0, -1.0]  # only row 1: its zero element still steps
    sparse.step()
    dense.step()
    moved = np.abs(a.data - before_a).max(axis=1) > 0
    np.testing.assert_array_equal(moved, [False, True, False, False])
    assert a.data[1, 1] != before_a[1, 1]  # a touched row moves as a whole
    state = sparse.state_dict()["state"][0]
    for name in ("exp_avg", "exp_avg_sq"):
        np.testing.assert_array_equal(state[name][[0, 2, 3]], state_a[name][[0, 2, 3]])
    assert state["step"] == 2.0
    # dense Adam moves every row by its momentum, with g = 0
    assert (np.abs(b.data - before_b).max(axis=1) > 0).all()


def test_embedding_row_set_wins_over_the_gradients_zeros() -> None:
    """A row the layer looked up steps even when its gradient sums to 0 (PyTorch's sparse
    gradient lists it); the dense path would take it as absent."""
    emb = Embedding(5, 2, sparse=True, dtype=np.float64, rng=0)
    opt = SparseAdam(emb.parameters(), lr=0.1)
    emb.zero_grad()
    emb(np.array([0, 3]))
    emb.backward(np.ones((2, 2)))
    opt.step()
    np.testing.assert_array_equal(emb.weight.grad_rows, [0, 3])
    before = emb.weight.data.copy()
    emb.zero_grad()
    emb(np.array([3, 3]))
    emb.backward(np.array([[1.0, -1.0], [-1.0, 1.0]]))  # row 3's gradient sums to 0
    assert not emb.weight.grad.any()
    opt.step()
    changed = np.flatnonzero(np.abs(emb.weight.data - before).max(axis=1))
    np.testing.assert_array_equal(changed, [3])  # by its momentum
    emb.weight.grad_rows = np.array([7], np.int64)
    with pytest.raises(ValueError, match="grad_rows .* rows in \\[0, 5\\)"):
        opt.step()


def test_every_step_counts_in_the_bias_correction_even_with_no_row() -> None:
    p = Parameter(np.ones((3, 2)))
    opt = SparseAdam([p], lr=0.1)
    p.grad[...] = 0.0
    opt.step()
    np.testing.assert_array_equal(p.data, 1.0)
    assert opt.state_dict()["state"][0]["step"] == 1.0
    p.grad[0] = 2.0
    opt.step()
    # step 2 from zero moments: m = 0.2, v = 0.004, -lr * sqrt(1 - b2**2) / (1 - b1**2) * m / ...
    m, v = 0.1 * 2.0, 0.001 * 4.0
    step = 0.1 * np.sqrt(1 - 0.999**2) / (1 - 0.9**2)
    np.testing.assert_allclose(p.data[0], 1.0 - step * m / (np.sqrt(v) + 1e-8), rtol=1e-15)


def test_check_finite_sees_the_touched_rows_only() -> None:
    w = Parameter(np.array([[1.0, 2.0], [np.nan, 3.0]]), "w")
    opt = SparseAdam([w], check_finite=True, track_stats=True)
    w.grad[...] = [[1.0, 1.0], [0.0, 0.0]]
    opt.step()  # the NaN row is absent: not refused, not counted
    assert opt.stats is not None and opt.stats.nonfinite == 0 and opt.stats.n_params == 4
    w.grad[...] = [[np.inf, 0.0], [0.0, 0.0]]
    with pytest.raises(FloatingPointError, match=r"step 2 .*w \(1 of 4 elements\).*NaN or inf"):
        opt.step()


def test_touched_rows_reads_rows_of_the_flat_gradient() -> None:
    g = np.zeros(12)
    g[[4, 11]] = [1e-300, -0.5]
    g[0] = -0.0  # negative zero is zero
    np.testing.assert_array_equal(touched_rows(g, 3), [1, 3])
    np.testing.assert_array_equal(touched_rows(g, 1), [4, 11])
    g[7] = np.nan
    np.testing.assert_array_equal(touched_rows(g, 4), [1, 2])
