"""ScaledDotProductAttention, scaled_dot_product_attention and MultiheadAttention: gradients,
PyTorch parity, masks, dropout, the graph with several inputs, errors."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from _layer_parity import cases_of, replay

import minnet
from minnet import nn
from minnet.nn import attention
from minnet.nn.functional import scaled_dot_product_attention
from minnet.testing import gradcheck

RNG = np.random.default_rng(0)


def fd_inputs(layer: nn.Module, arrays: tuple[np.ndarray, ...], kwargs: dict, eps: float = 1e-6
              ) -> list[np.ndarray]:  # fmt: skip
    """Central differences of ``sum(layer(*arrays)[0] * w)`` for each array (float64)."""
    w = None
    grads = []

    def loss(*a: np.ndarray) -> float:
        with minnet.no_grad():
            out = layer(*a, **kwargs)
        out = out[0] if isinstance(out, tuple) else out
        return float(np.sum(out * w))

    with minnet.no_grad():
        out = layer(*arrays, **kwargs)
    out = out[0] if isinstance(out, tuple) else out
    w = np.random.default_rng(1).standard_normal(out.shape)
    for a in arrays:
        g = np.empty(a.size)
        flat = a.reshape(-1)
        for i in range(a.size):
            old = flat[i]
            flat[i] = old + eps
            up = loss(*arrays)
            flat[i] = old - eps
            down = loss(*arrays)
            flat[i] = old
            g[i] = (up - down) / (2 * eps)
        grads.append(g.reshape(a.shape))
    return [w, *grads]


# --------------------------------------------------------------- finite differences: self


class SelfAttention(nn.Module):
    """``mha(x, x, x, **call)[0]``: gradcheck's one input plays query, key and value."""

    def __init__(self, ctor: dict, call: dict) -> None:
        super().__init__()
        self.mha = nn.MultiheadAttention(**ctor, rng=3)
        self.call = call

    def forward(self, x: np.ndarray) -> Any:
        return self.mha(x, x, x, **self.call)[0]


L, N, E = 4, 2, 6
CAUSAL = ~np.tri(L, L, dtype=bool)  # MultiheadAttention's bool mask: True = not allowed
KPM = np.array([[False, False, True, True], [False, True, False, False]])
MHA_OPTIONS = [
    ({}, {}),
    ({"num_heads": 3}, {"need_weights": False}),
    ({"batch_first": True}, {"key_padding_mask": KPM}),
    ({}, {"key_padding_mask": RNG.standard_normal((N, L))}),
    ({}, {"attn_mask": CAUSAL, "is_causal": True}),
    ({}, {"attn_mask": CAUSAL, "is_causal": True, "need_weights": False}),
    ({}, {"attn_mask": CAUSAL, "is_causal": True, "key_padding_mask": KPM}),
    ({}, {"attn_mask": RNG.standard_normal((L, L))}),
    ({}, {"attn_mask": RNG.standard_normal((N * 2, L, L)), "average_attn_weights": False}),
    ({"bias": False}, {}),
]


@pytest.mark.parametrize(("ctor", "call"), MHA_OPTIONS, ids=lambda v: str(sorted(v)))
def test_mha_self_attention_gradcheck(ctor: dict, call: dict) -> None:
    x = RNG.standard_normal((N, L, E) if ctor.get("batch_first") else (L, N, E))
    assert gradcheck(SelfAttention({"embed_dim": E, "num_heads": 2, **ctor}, call), x)


def test_mha_self_attention_gradcheck_unbatched() -> None:
    x = RNG.standard_normal((L, E))
    assert gradcheck(SelfAttention({"embed_dim": E, "num_heads": 2}, {"attn_mask": CAUSAL}), x)


class CrossAttention(nn.Module):
    """Query from ``x``, key and value from a fixed memory of another length, each through its
    own ``Linear``: gradcheck then checks dquery, dkey and dvalue through those layers'
    parameters."""

    def __init__(self, layer: nn.Module, call: dict) -> None:
        super().__init__()
        self.lq, self.lk, self.lv = (nn.Linear(E, E, rng=s) for s in (4, 5, 6))
        self.attn = layer
        self.memory = np.random.default_rng(7).standard_normal((7, E))
        self.call = call

    def forward(self, x: np.ndarray) -> Any:
        out = self.attn(self.lq(x), self.lk(self.memory), self.lv(self.memory), **self.call)
        return out[0] if isinstance(out, tuple) else out


KPM7 = np.array([False, True, False, False, False, True, False])
MASK_LS = RNG.random((L, 7)) < 0.3


@pytest.mark.parametrize(
    "call",
    [{}, {"key_padding_mask": KPM7}, {"attn_mask": MASK_LS, "need_weights": False},
     {"attn_mask": RNG.standard_normal((L, 7))}],
    ids=lambda v: str(sorted(v)),
)  # fmt: skip
def test_mha_cross_attention_gradcheck(call: dict) -> None:
    layer = nn.MultiheadAttention(E, 3, rng=8)
    assert gradcheck(CrossAttention(layer, call), RNG.standard_normal((L, E)))


@pytest.mark.parametrize(
    "call",
    [{}, {"is_causal": True}, {"attn_mask": ~MASK_LS}, {"attn_mask": RNG.standard_normal((L, 7))}],
    ids=lambda v: str(sorted(v)),
)
def test_sdpa_cross_gradcheck(call: dict) -> None:
    layer = nn.ScaledDotProductAttention()
    assert gradcheck(CrossAttention(layer, call), RNG.standard_normal((L, E)))


@pytest.mark.parametrize(
    ("layer", "kwargs"),
    [
        (nn.MultiheadAttention(E, 2, batch_first=True, rng=9), {"key_padding_mask": KPM}),
        (nn.MultiheadAttention(E, 2, rng=9), {"attn_mask": CAUSAL, "need_weights": False}),
        (nn.ScaledDotProductAttention(scale=0.7), {"attn_mask": ~CAUSAL}),
    ],
    ids=["mha_batch_first_kpm", "mha_mask", "sdpa"],
)
def test_input_gradients_of_three_different_arrays(layer: nn.Module, kwargs: dict) -> None:
    layer.double()
    if isinstance(layer, nn.ScaledDotProductAttention):
        shapes = [(2, 3, L, E), (2, 3, L, E), (2, 3, L, 5)]
    else:
        shapes = [(N, L, E)] * 3 if layer.batch_first else [(L, N, E)] * 3
    arrays = tuple(RNG.standard_normal(s) for s in shapes)
    w, *numeric = fd_inputs(layer, arrays, kwargs)
    out = layer(*arrays, **kwargs)
    (out[0] if isinstance(out, tuple) else out).backward(w)  # fills the parameters' .grad
    layer.zero_grad()
    out = layer(*arrays, **kwargs)
    analytic = layer.backward(w)
    assert isinstance(analytic, tuple) and len(analytic) == 3
    for a, n in zip(analytic, numeric):
        np.testing.assert_allclose(a, n, rtol=1e-6, atol=1e-8)


class SelfSDPA(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.ScaledDotProductAttention()

    def forward(self, x: np.ndarray) -> Any:
        return self.attn(x, x, x, is_causal=True)


def test_sdpa_self_attention_gradcheck_and_broadcast_batch() -> None:
    assert gradcheck(SelfSDPA(), RNG.standard_normal((2, L, E)))
    layer = nn.ScaledDotProductAttention().double()
    arrays = (RNG.standard_normal((2, 3, L, E)), RNG.standard_normal((1, 3, 5, E)),
              RNG.standard_normal((3, 5, 2)))  # fmt: skip
    w, *numeric = fd_inputs(layer, arrays, {})
    layer(*arrays)
    for a, n in zip(layer.backward(w), numeric):
        assert a.shape == n.shape
        np.testing.assert_allclose(a, n, rtol=1e-6, atol=1e-8)


def test_fully_masked_row_gives_zero_in_sdpa_and_nan_in_mha_weights() -> None:
    q, k = RNG.standard_normal((3, 4)), RNG.standard_normal((5, 4))
    mask = np.ones((3, 5), bool)
    mask[1] = False
    layer = nn.ScaledDotProductAttention()
    out = layer(q, k, k, attn_mask=mask)
    assert (out[1] == 0).all() and np.isfinite(out).all()
    dq, dk, dv = layer.backward(np.ones((3, 4)))
    assert (dq[1] == 0).all() and np.isfinite(dk).all()
    mha = nn.MultiheadAttention(4, 2, rng=0)
    kpm = np.ones(5, bool)
    assert np.isnan(mha(q, k, k, key_padding_mask=kpm)[0]).all()
    out = mha(q, k, k, key_padding_mask=kpm, need_weights=False)[0]
    assert (out == mha.out_proj.bias.data).all()


# ------------------------------------------------------------------------------- dropout


def test_dropout_on_weights_gradcheck_with_a_fixed_mask(monkeypatch: pytest.MonkeyPatch) -> None:
    keep = (np.random.default_rng(2).random((N, 2, L, L)) >= 0.3) / 0.7
    monkeypatch.setattr(attention, "_dropout_keep", lambda p, shape, dtype, rng: keep.astype(dtype))
    model = SelfAttention({"embed_dim": E, "num_heads": 2, "dropout": 0.3}, {})
    x = RNG.standard_normal((L, N, E))
    assert gradcheck(model, x)
    # the weights returned are the dropped-out ones, as PyTorch's
    with minnet.no_grad():
        out, weights = model.mha.double()(x, x, x, average_attn_weights=False)
        _, plain = model.mha.eval()(x, x, x, average_attn_weights=False)
    assert np.allclose(weights, plain * keep)


def test_dropout_draws_from_minnets_generator_in_training_mode_only() -> None:
    x = RNG.standard_normal((L, N, E)).astype(np.float32)
    minnet.manual_seed(0)
    mha = nn.MultiheadAttention(E, 2, dropout=0.5)  # no rng: the default generator
    minnet.manual_seed(5)
    a = mha(x, x, x)[0]
    minnet.manual_seed(5)
    b = mha(x, x, x)[0]
    c = mha(x, x, x)[0]
    assert np.array_equal(a, b) and not np.array_equal(b, c)
    mha.eval()
    assert np.array_equal(mha(x, x, x)[0], mha(x, x, x)[0])
    minnet.manual_seed(5)
    d1 = scaled_dot_product_attention(x, x, x, dropout_p=0.5)
    minnet.manual_seed(5)
    d2 = scaled_dot_product_attention(x, x, x, dropout_p=0.5)
    assert np.array_equal(d1, d2)
    assert not np.array_equal(d1, scaled_dot_product_attention(x, x, x))


# ------------------------------------------------------------------------- PyTorch parity


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize(
    "case", cases_of("ScaledDotProductAttention", "MultiheadAttention"), ids=lambda c: c[0]
)
def test_matches_pytorch(case: list, dtype: str) -> None:
    replay(case, dtype)


def test_parity_fails_on_a_wrong_softmax_backward(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dropping softmax's row-sum term from ``ds`` (``ds = p * dp``) must fail the replay."""

    def wrong(g, q, k, v, p, keep, scale):  # type: ignore[no-untyped-def]
        dv = np.matmul(np.swapaxes(p, -1, -2), g)
        ds = p * np.matmul(g, np.swapaxes(v, -1, -2)) * scale
        return np.matmul(ds, k), np.matmul(np.swapaxes(ds, -1, -2), q), dv

    monkeypatch.setattr(attention, "_attend_backward", wrong)
    for name in ("sdpa", "mha_cross"):
        (case,) = [c for c in cases_of("ScaledDotProductAttention", "MultiheadAttention")
                   if c[0] == name]  # fmt: skip
        with pytest.raises(AssertionError, match="relative error"):
            replay(case, "float64")


def test_functional_form_matches_the_module_and_records_its_call() -> None:
    q, k, v = (RNG.standard_normal((2, L, E)) for _ in range(3))
    mask = RNG.random((L, L)) < 0.7
    mask[:, 0] = True
    layer = nn.ScaledDotProductAttention(scale=0.5)
    want = layer(q, k, v, attn_mask=mask)
    got = scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=0.5)
    assert np.array_equal(got, want)
    assert got.grad_fn is not None
    s = q @ np.swapaxes(k, -1, -2) * 0.5 + np.where(mask, 0, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    np.testing.assert_allclose(got, (p / p.sum(-1, keepdims=True)) @ v, rtol=1e-12)


# --------------------------------------------------------------------------------- the graph


class Block(nn.Module):
    """Pre-projection, cross-attention with key = value, and a head: query, key and value come
    from three module calls (two of them the same call)."""

    def __init__(self) -> None:
        super().__init__()
        self.q = nn.Linear(E, E, rng=1)
        self.kv = nn.Linear(E, E, rng=2)
        self.mha = nn.MultiheadAttention(E, 2, rng=3)
        self.head = nn.Linear(E, 3, rng=4)

    def forward(self, x: np.ndarray, memory: np.ndarray) -> Any:
        m = self.kv(memory)
        out, _ = self.mha(self.q(x), m, m, need_weights=False)
        return self.head(out)

    def backward(self, grad: np.ndarray) -> None:
        dq, dk, dv = self.mha.backward(self.head.backward(grad))
        self.kv.backward(dk + dv)
        self.q.backward(dq)


def test_loss_backward_through_several_inputs_equals_the_hand_written_chain() -> None:
    x, memory = RNG.standard_normal((L, E)), RNG.standard_normal((7, E))
    y = np.array([0, 2, 1, 1])
    a, b = Block().double(), Block().double()
    nn.CrossEntropyLoss()(a(x, memory), y).backward()
    loss_fn = nn.CrossEntropyLoss()
    loss_fn(b(x, memory), y)
    b.backward(loss_fn.backward())
    for (name, p), q in zip(a.named_parameters(), b.parameters()):
        assert np.abs(p.grad).sum() > 0, name
        np.testing.assert_allclose(p.grad, q.grad, rtol=1e-12, atol=1e-15, err_msg=name)
    # the call records three inputs, two from the same call
    out = a.mha(a.q(x), a.kv(memory), a.kv(memory))[0]
    assert len(out.grad_fn.parents()) == 3


def test_self_attention_backward_is_one_array_and_weights_are_not_differentiable() -> None:
    mha = nn.MultiheadAttention(E, 2, rng=0)
    x = RNG.standard_normal((L, N, E)).astype(np.float32)
    out, weights = mha(x, x, x)
    assert out.grad_fn is not None and len(out.grad_fn.parents()) == 1
    dx = mha.backward(np.ones_like(out))
    assert isinstance(dx, np.ndarray) and dx.shape == x.shape and dx.dtype == np.float32
    loss = nn.MSELoss()(nn.Flatten(0)(weights), np.zeros(weights.size, np.float32))
    with pytest.raises(RuntimeError, match="does not record"):
        loss.backward()
    with minnet.no_grad():
        out, weights = mha(x, x, x)
    assert type(out) is np.ndarray and type(weights) is np.ndarray


# ------------------------------------------------------------------------- init and errors


def test_mha_parameters_names_and_pytorch_init() -> None:
    mha = nn.MultiheadAttention(64, 8, rng=0)
    names = [n for n, _ in mha.named_parameters()]
    assert names == ["in_proj_weight", "in_proj_bias", "out_proj.weight", "out_proj.bias"]
    assert mha.in_proj_weight.shape == (192, 64)
    bound = math.sqrt(6 / (64 + 192))  # xavier_uniform_ on (3E, E)
    w = mha.in_proj_weight.data
    assert np.abs(w).max() <= bound and np.abs(w).max() > 0.95 * bound
    assert (mha.in_proj_bias.data == 0).all() and (mha.out_proj.bias.data == 0).all()
    assert np.abs(mha.out_proj.weight.data).max() <= 1 / 8
    assert [n for n, _ in nn.MultiheadAttention(8, 2, bias=False).named_parameters()] == [
        "in_proj_weight", "out_proj.weight"
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("run", "error", "message"),
    [
        (lambda: nn.MultiheadAttention(10, 3), ValueError, "embed_dim must be divisible by"),
        (lambda: nn.MultiheadAttention(6, 2, add_bias_kv=True), NotImplementedError,
         "add_bias_kv"),
        (lambda: nn.MultiheadAttention(6, 2, kdim=0), ValueError, "kdim must be a positive"),
        (lambda: nn.MultiheadAttention(8, 2, kdim=6)(np.ones((5, 2, 8)), np.ones((7, 2, 8)),
                                                     np.ones((7, 2, 8))),
         ValueError, r"must be \(S, N, kdim\) and \(S, N, vdim\) .* kdim=6, vdim=8"),
        (lambda: nn.MultiheadAttention(6, 2)(*[np.ones((4, 2, 5))] * 3), ValueError,
         "expecting embedding dimension of 6"),
        (lambda: nn.MultiheadAttention(6, 2)(np.ones((4, 2, 6)), np.ones((5, 2, 6)),
                                             np.ones((4, 2, 6))), ValueError, "key shape"),
        (lambda: nn.MultiheadAttention(6, 2)(*[np.ones((4, 2, 6))] * 3, is_causal=True),
         RuntimeError, "Need attn_mask if specifying the is_causal hint"),
        (lambda: nn.MultiheadAttention(6, 2)(*[np.ones((4, 2, 6))] * 3,
                                             attn_mask=np.zeros((4, 5))), ValueError,
         r"2D attn_mask is \(4, 5\), but should be \(4, 4\)"),
        (lambda: nn.MultiheadAttention(6, 2)(*[np.ones((4, 2, 6))] * 3,
                                             key_padding_mask=np.zeros((4, 2), bool)), ValueError,
         r"key_padding_mask of shape \(2, 4\)"),
        (lambda: scaled_dot_product_attention(*[np.ones((3, 4))] * 3, is_causal=True,
                                              attn_mask=np.ones((3, 3), bool)), ValueError,
         "attn_mask should not be set when is_causal=True"),
        (lambda: scaled_dot_product_attention(np.ones((3, 4)), np.ones((5, 3)), np.ones((5, 2))),
         ValueError, r"query \(\.\.\., L, E\), key \(\.\.\., S, E\)"),
        (lambda: scaled_dot_product_attention(*[np.ones((3, 4))] * 3, attn_mask=np.ones((3, 3),
                                              np.int64)), TypeError, "only bool and floating"),
        (lambda: nn.ScaledDotProductAttention(dropout_p=1.5), ValueError, "between 0 and 1"),
    ],
)  # fmt: skip
def test_errors(run: Any, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        run()


def test_a_second_input_computed_by_numpy_is_refused_and_backward_runs_once() -> None:
    lin, mha = nn.Linear(E, E, rng=1), nn.MultiheadAttention(E, 2, rng=2)
    x = RNG.standard_normal((L, E))
    h = lin(x)
    out = mha(h, np.tanh(h), h)[0]  # the key: NumPy on a module's output, not recorded
    with pytest.raises(RuntimeError, match="does not record"):
        out.sum().backward()
    h = lin(x)
    out = mha(h, lin(x), h)[0]
    out.sum().backward(retain_graph=True)
    first = lin.weight.grad.copy()
    out.sum().backward()
    np.testing.assert_allclose(lin.weight.grad, 2 * first, rtol=1e-6)
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        out.sum().backward()


def test_kdim_vdim_keeps_pytorch_parameter_names_and_passes_gradcheck() -> None:
    """Other key/value widths: q_proj_weight, k_proj_weight and v_proj_weight (PyTorch's names
    and order), no in_proj_weight; the three input gradients pass a finite-difference check."""
    m = nn.MultiheadAttention(4, 2, kdim=3, vdim=5, dtype=np.float64, rng=0)
    assert [n for n, _ in m.named_parameters()] == [
        "q_proj_weight", "k_proj_weight", "v_proj_weight", "in_proj_bias",
        "out_proj.weight", "out_proj.bias",
    ]  # fmt: skip
    assert m.in_proj_weight is None and m.k_proj_weight.shape == (4, 3)
    rng = np.random.default_rng(1)
    q, k, v = rng.standard_normal((3, 2, 4)), rng.standard_normal((5, 2, 3)), rng.standard_normal(
        (5, 2, 5)
    )
    g = rng.standard_normal((3, 2, 4))
    out, _ = m(q, k, v)
    dq, dk, dv = m.backward(g)
    eps = 1e-6
    for x, dx in ((q, dq), (k, dk), (v, dv)):
        for idx in [(0, 0, 0), (2, 1, x.shape[2] - 1)]:
            x[idx] += eps
            up = float((m.forward(q, k, v)[0] * g).sum())
            x[idx] -= 2 * eps
            down = float((m.forward(q, k, v)[0] * g).sum())
            x[idx] += eps
            assert abs((up - down) / (2 * eps) - dx[idx]) < 1e-7
