"""NLLLoss, BCELoss, L1Loss, SmoothL1Loss, HuberLoss, KLDivLoss: finite-difference gradients in
float64 for every reduction and option, PyTorch's constants and checks, 16-bit inputs, the
functional forms, and use through loss.backward()."""

from __future__ import annotations

import warnings

import ml_dtypes
import numpy as np
import pytest

import minnet
from minnet import nn

BF16 = np.dtype(ml_dtypes.bfloat16)
W4 = np.array([0.5, 2.0, 1.0, 3.0])


def _log_softmax(z: np.ndarray, axis: int = 1) -> np.ndarray:
    s = z - z.max(axis=axis, keepdims=True)
    return s - np.log(np.exp(s).sum(axis=axis, keepdims=True))


def _inputs(kind: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(input, target) of shape (5, 4) (or (3, 4, 2)), away from every kink."""
    if kind in ("nll", "nll_ignore"):
        x = _log_softmax(rng.standard_normal((5, 4)))
        t = rng.integers(0, 4, 5)
        if kind == "nll_ignore":
            t[[1, 3]] = -100
        return x, t
    if kind == "nll_nd":
        return _log_softmax(rng.standard_normal((3, 4, 2))), rng.integers(0, 4, (3, 2))
    if kind == "bce":
        return rng.uniform(0.05, 0.95, (5, 4)), rng.random((5, 4))
    if kind == "kl":
        p = rng.random((5, 4)) + 0.1
        p[0, 1] = 0.0
        return _log_softmax(rng.standard_normal((5, 4))), p / p.sum(1, keepdims=True)
    if kind == "kl_log":
        return _log_softmax(rng.standard_normal((5, 4))), _log_softmax(rng.standard_normal((5, 4)))
    x = rng.standard_normal((5, 4)) * 2
    t = rng.standard_normal((5, 4)) * 2
    d = x - t  # keep |d| away from 0 and from the thresholds 0.3, 0.5, 1, 2 (finite differences)
    for k in (0.0, 0.3, 0.5, 1.0, 2.0):
        near = np.abs(np.abs(d) - k) < 0.02
        t[near] -= 0.05
        d = x - t
    return x, t


LOSS_CASES = [
    ("nll", lambda r: nn.NLLLoss(reduction=r), "nll"),
    ("nll_weight", lambda r: nn.NLLLoss(W4, reduction=r), "nll"),
    ("nll_ignore_weight", lambda r: nn.NLLLoss(W4, reduction=r), "nll_ignore"),
    ("nll_ignore_index_2", lambda r: nn.NLLLoss(ignore_index=2, reduction=r), "nll"),
    ("nll_nd", lambda r: nn.NLLLoss(W4, reduction=r), "nll_nd"),
    ("bce", lambda r: nn.BCELoss(reduction=r), "bce"),
    ("bce_weight", lambda r: nn.BCELoss(W4, reduction=r), "bce"),
    ("l1", lambda r: nn.L1Loss(r), "real"),
    ("smooth_l1", lambda r: nn.SmoothL1Loss(r), "real"),
    ("smooth_l1_beta05", lambda r: nn.SmoothL1Loss(r, beta=0.5), "real"),
    ("smooth_l1_beta0", lambda r: nn.SmoothL1Loss(r, beta=0.0), "real"),
    ("huber", lambda r: nn.HuberLoss(r), "real"),
    ("huber_delta03", lambda r: nn.HuberLoss(r, delta=0.3), "real"),
    ("huber_delta2", lambda r: nn.HuberLoss(r, delta=2.0), "real"),
    ("kl", lambda r: nn.KLDivLoss(r), "kl"),
    ("kl_log_target", lambda r: nn.KLDivLoss(r, log_target=True), "kl_log"),
]
REDUCTIONS = ["mean", "sum", "none"]


GRAD_CASES = [
    (name, make, kind, r)
    for name, make, kind in LOSS_CASES
    for r in REDUCTIONS + (["batchmean"] if kind.startswith("kl") else [])
]


@pytest.mark.parametrize(
    "make, kind, reduction", [c[1:] for c in GRAD_CASES], ids=[f"{c[0]}-{c[3]}" for c in GRAD_CASES]
)
def test_finite_differences(make, kind, reduction) -> None:
    rng = np.random.default_rng(len(kind))
    x, t = _inputs(kind, rng)
    loss_fn = make(reduction)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # KLDivLoss's 'mean' warning
        out = loss_fn(x, t)
        w = rng.standard_normal(np.shape(out)) if reduction == "none" else None
        dx = loss_fn.backward(w)

        def f(v: np.ndarray) -> float:
            with minnet.no_grad():
                value = np.asarray(loss_fn(v, t))
            return float(np.sum(value * w)) if w is not None else float(value)

        num = np.zeros_like(x)
        for i in np.ndindex(*x.shape):
            old = x[i]
            x[i] = old + 1e-6
            up = f(x)
            x[i] = old - 1e-6
            down = f(x)
            x[i] = old
            num[i] = (up - down) / 2e-6
    assert dx.shape == x.shape and dx.dtype == np.float64
    np.testing.assert_allclose(dx, num, rtol=1e-6, atol=1e-8)


def test_reductions_relate_as_pytorch() -> None:
    rng = np.random.default_rng(0)
    for make, kind in [c[1:] for c in LOSS_CASES]:
        x, t = _inputs(kind, rng)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            none = np.asarray(make("none")(x, t))
            total = float(make("sum")(x, t))
            mean = float(make("mean")(x, t))
        np.testing.assert_allclose(total, none.sum(), rtol=1e-13)
        loss_fn = make("mean")
        if isinstance(loss_fn, nn.NLLLoss):  # weighted mean over non-ignored targets
            wy = (loss_fn.weight if loss_fn.weight is not None else np.ones(4))[np.where(
                t == loss_fn.ignore_index, 0, t)] * (t != loss_fn.ignore_index)  # fmt: skip
            np.testing.assert_allclose(mean, total / wy.sum(), rtol=1e-13)
        else:
            np.testing.assert_allclose(mean, total / x.size, rtol=1e-13)
    x, t = _inputs("kl", rng)
    np.testing.assert_allclose(float(nn.KLDivLoss("batchmean")(x, t)),
                               float(nn.KLDivLoss("sum")(x, t)) / 5, rtol=1e-13)  # fmt: skip


def test_nll_of_log_softmax_is_cross_entropy() -> None:
    rng = np.random.default_rng(1)
    z = rng.standard_normal((6, 4))
    t = rng.integers(0, 4, 6)
    t[2] = -100
    ce = nn.CrossEntropyLoss(W4)
    nll = nn.NLLLoss(W4)
    np.testing.assert_allclose(float(nll(_log_softmax(z), t)), float(ce(z, t)), rtol=1e-14)
    model = nn.Sequential(nn.Linear(3, 4, dtype=np.float64, rng=0), nn.LogSoftmax(dim=1))
    ref = nn.Linear(3, 4, dtype=np.float64, rng=0)
    x = rng.standard_normal((6, 3))
    nll(model(x), t).backward()
    ce(ref(x), t).backward()
    np.testing.assert_allclose(model[0].weight.grad, ref.weight.grad, rtol=1e-12)


def test_bce_constants_clamp_and_gradient_floor() -> None:
    x = np.array([0.0, 1.0, 0.0, 1.0, 0.5])
    t = np.array([1.0, 0.0, 0.0, 1.0, 0.5])
    loss_fn = nn.BCELoss(reduction="none")
    loss = np.asarray(loss_fn(x, t))
    np.testing.assert_array_equal(loss[:4], [100.0, 100.0, 0.0, 0.0])  # log clamped at -100
    np.testing.assert_allclose(loss[4], np.log(2), rtol=1e-15)
    dx = loss_fn.backward()
    floor = float(np.float32(1e-12))  # PyTorch's EPSILON is a C++ float
    assert nn.loss.BCE_GRAD_EPS == floor and nn.loss.BCE_LOG_FLOOR == -100.0
    np.testing.assert_array_equal(dx[:4], [-1 / floor, 1 / floor, 0.0, 0.0])
    with pytest.raises(ValueError, match="between 0 and 1"):
        nn.BCELoss()(np.array([1.5]), np.array([1.0]))


def test_kl_div_mean_warns_and_batchmean_does_not() -> None:
    x, t = _inputs("kl", np.random.default_rng(2))
    with pytest.warns(UserWarning, match="'batchmean' divides only by the batch size"):
        nn.KLDivLoss()(x, t)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nn.KLDivLoss("batchmean")(x, t)
    # zero target probabilities contribute 0 (xlogy), not NaN
    assert np.isfinite(float(nn.KLDivLoss("sum")(x, t)))


def test_losses_through_loss_backward_match_the_hand_written_chain() -> None:
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 3))
    for loss_fn, target, head in [
        (nn.SmoothL1Loss(beta=0.5), rng.standard_normal((5, 4)), None),
        (nn.HuberLoss(delta=0.7), rng.standard_normal((5, 4)), None),
        (nn.L1Loss(reduction="sum"), rng.standard_normal((5, 4)), None),
        (nn.BCELoss(W4), rng.random((5, 4)), nn.Sigmoid()),
        (nn.KLDivLoss("batchmean"), _inputs("kl", rng)[1], nn.LogSoftmax(1)),
        (nn.NLLLoss(), rng.integers(0, 4, 5), nn.LogSoftmax(1)),
    ]:
        grads = []
        for way in ("graph", "chain"):
            layers = [nn.Linear(3, 4, dtype=np.float64, rng=7)] + ([head] if head else [])
            model = nn.Sequential(*layers)
            loss = loss_fn(model(x), target)
            if way == "graph":
                loss.backward()
            else:
                model.backward(loss_fn.backward())
            grads.append(model[0].weight.grad.copy())
        np.testing.assert_allclose(grads[0], grads[1], rtol=1e-13, err_msg=type(loss_fn).__name__)
        assert np.abs(grads[0]).sum() > 0


@pytest.mark.parametrize("dt", [np.dtype(np.float16), BF16], ids=["float16", "bfloat16"])
def test_16bit_input_computes_in_float32(dt) -> None:
    rng = np.random.default_rng(4)
    for loss_fn, kind in [(nn.L1Loss(), "real"), (nn.HuberLoss(), "real"),
                          (nn.SmoothL1Loss(), "real"), (nn.BCELoss(), "bce"),
                          (nn.KLDivLoss("batchmean"), "kl"), (nn.NLLLoss(), "nll")]:  # fmt: skip
        x, t = _inputs(kind, rng)
        x16 = x.astype(dt)
        t32 = t if t.dtype.kind == "i" else t.astype(np.float32)
        value = loss_fn(x16, t32)
        assert np.asarray(value).dtype == np.float32
        dx = loss_fn.backward()
        assert dx.dtype == dt
        ref = type(loss_fn).__new__(type(loss_fn))
        ref.__dict__.update(loss_fn.__dict__)
        expected = ref(x16.astype(np.float32), t32)
        np.testing.assert_array_equal(np.asarray(value), np.asarray(expected))
        np.testing.assert_array_equal(dx, ref.backward().astype(dt))


def test_argument_checks() -> None:
    with pytest.raises(ValueError, match="not a valid value for reduction"):
        nn.L1Loss("avg")
    with pytest.raises(ValueError, match="not a valid value for reduction"):
        nn.HuberLoss("batchmean")
    with pytest.raises(ValueError, match="negative values for beta"):
        nn.SmoothL1Loss(beta=-1.0)
    with pytest.raises(ValueError, match="non-positive values for delta"):
        nn.HuberLoss(delta=0.0)
    with pytest.raises(ValueError, match="target shape"):
        nn.L1Loss()(np.ones((2, 3)), np.ones((3, 2)))
    with pytest.raises(IndexError, match="Target 4 is out of bounds"):
        nn.NLLLoss()(np.zeros((2, 4)), np.array([0, 4]))
    with pytest.raises(TypeError, match="integer class indices"):
        nn.NLLLoss()(np.zeros((2, 4)), np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="cannot be broadcast"):
        nn.BCELoss(np.ones(3))(np.full((2, 4), 0.5), np.ones((2, 4)))
    assert np.isnan(float(nn.NLLLoss()(np.zeros((2, 4)), np.array([-100, -100]))))


def test_functional_forms_match_the_modules() -> None:
    F = nn.functional
    rng = np.random.default_rng(5)
    x, t = _inputs("real", rng)
    assert float(F.l1_loss(x, t)) == float(nn.L1Loss()(x, t))
    assert float(F.smooth_l1_loss(x, t, beta=0.5)) == float(nn.SmoothL1Loss(beta=0.5)(x, t))
    assert float(F.huber_loss(x, t, "sum", 2.0)) == float(nn.HuberLoss("sum", 2.0)(x, t))
    x, t = _inputs("bce", rng)
    assert float(F.binary_cross_entropy(x, t, W4)) == float(nn.BCELoss(W4)(x, t))
    x, t = _inputs("kl_log", rng)
    assert float(F.kl_div(x, t, "batchmean", True)) == float(nn.KLDivLoss("batchmean", True)(x, t))
    x, t = _inputs("nll_ignore", rng)
    assert float(F.nll_loss(x, t, W4)) == float(nn.NLLLoss(W4)(x, t))
