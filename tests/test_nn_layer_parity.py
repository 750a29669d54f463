"""PyTorch parity of the normalization layers, Embedding, N-D Linear and the losses NLLLoss,
BCELoss, L1Loss, SmoothL1Loss, HuberLoss and KLDivLoss, replayed from
tests/fixtures/layers_torch.npz (recorded by scripts/make_layer_fixtures.py, torch 2.13.0; no
torch needed here).

Outputs, input gradients, parameter gradients and BatchNorm's running statistics after several
training steps must match PyTorch's to 1e-12 (float64) or 1e-5 (float32), relative to the
largest magnitude of PyTorch's array.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from minnet import nn

FIXTURE = Path(__file__).parent / "fixtures" / "layers_torch.npz"
DATA = np.load(FIXTURE)
CASES = json.loads(str(DATA["cases"]))
TOL = {"float64": 1e-12, "float32": 1e-5}
LAYERS = [c for c in CASES if c[1] == "layer"]
LOSSES = [c for c in CASES if c[1] == "loss"]


def close(got: np.ndarray, ref: np.ndarray, tol: float, what: str) -> None:
    got, ref = np.asarray(got), np.asarray(ref)
    assert got.shape == ref.shape, f"{what}: shape {got.shape} != {ref.shape}"
    assert got.dtype == ref.dtype, f"{what}: dtype {got.dtype} != {ref.dtype}"
    scale = max(float(np.max(np.abs(ref))), np.finfo(np.float32).tiny) if ref.size else 1.0
    err = float(np.max(np.abs(got.astype(np.float64) - ref.astype(np.float64)))) / scale
    assert err <= tol, f"{what}: relative error {err:.3g} > {tol:g}"


def build_layer(cls: str, kwargs: dict, dtype: str) -> nn.Module:
    kw = {k: tuple(v) if isinstance(v, list) else v for k, v in kwargs.items()}
    return getattr(nn, cls)(**kw, dtype=np.dtype(dtype))


def replay_layer(case: list, dtype: str, mod: nn.Module | None = None) -> None:
    """Run the recorded calls on a minnet layer and compare every recorded array."""
    name, _, cls, kwargs, spec = case
    tol = TOL[dtype]
    mod = build_layer(cls, kwargs, dtype) if mod is None else mod
    for n, p in mod.named_parameters():
        p.data[...] = DATA[f"{name}/{dtype}/p/{n}"]
    calls = spec.get("steps", 1) + (1 if spec.get("eval") else 0)
    for k in range(calls):
        key = f"{name}/{dtype}/{k}"
        mod.train(k < spec.get("steps", 1))
        mod.zero_grad()
        x = DATA[f"{key}/x"]
        y = mod(x)
        dx = mod.backward(DATA[f"{key}/grad"])
        close(y, DATA[f"{key}/out"], tol, f"{name} {dtype} call {k} output")
        if f"{key}/dx" in DATA:
            close(dx, DATA[f"{key}/dx"], tol, f"{name} {dtype} call {k} input gradient")
        else:
            assert dx is None
        for n, p in mod.named_parameters():
            close(p.grad, DATA[f"{key}/g/{n}"], tol, f"{name} {dtype} call {k} grad of {n}")
        buffers = dict(mod.named_buffers())
        recorded = [f[len(f"{key}/b/") :] for f in DATA.files if f.startswith(f"{key}/b/")]
        assert sorted(buffers) == sorted(recorded), f"{name}: buffers {sorted(buffers)}"
        for n in recorded:
            ref = DATA[f"{key}/b/{n}"]
            if n == "num_batches_tracked":
                assert int(buffers[n]) == int(ref) and buffers[n].dtype == ref.dtype
            else:
                close(buffers[n], ref, tol, f"{name} {dtype} call {k} buffer {n}")
        if f"{key}/rows" in DATA:
            np.testing.assert_array_equal(mod.weight.grad_rows, DATA[f"{key}/rows"])


def test_fixture_covers_every_new_piece() -> None:
    classes = {c[2] for c in CASES}
    assert classes >= {"LayerNorm", "RMSNorm", "GroupNorm", "BatchNorm1d", "BatchNorm2d",
                       "Embedding", "Linear", "NLLLoss", "BCELoss", "L1Loss", "SmoothL1Loss",
                       "HuberLoss", "KLDivLoss"}  # fmt: skip
    reductions = {(c[2], c[3].get("reduction", "mean")) for c in LOSSES}
    for cls in ("NLLLoss", "BCELoss", "L1Loss", "SmoothL1Loss", "HuberLoss", "KLDivLoss"):
        assert {(cls, r) for r in ("mean", "sum", "none")} <= reductions, cls
    assert ("KLDivLoss", "batchmean") in reductions
    assert str(DATA["torch_version"]).startswith("2.13.0")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", LAYERS, ids=[c[0] for c in LAYERS])
def test_layer_matches_pytorch(case: list, dtype: str) -> None:
    replay_layer(case, dtype)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", LOSSES, ids=[c[0] for c in LOSSES])
def test_loss_matches_pytorch(case: list, dtype: str) -> None:
    name, _, cls, kwargs, _ = case
    key = f"{name}/{dtype}"
    kw = {k: np.array(v, dtype) if isinstance(v, list) else v for k, v in kwargs.items()}
    mod = getattr(nn, cls)(**kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # KLDivLoss's 'mean' warning, tested elsewhere
        out = mod(DATA[f"{key}/x"], DATA[f"{key}/target"])
    dx = mod.backward(DATA[f"{key}/grad"] if mod.reduction == "none" else None)
    close(out, DATA[f"{key}/out"], TOL[dtype], f"{name} {dtype} value")
    close(dx, DATA[f"{key}/dx"], TOL[dtype], f"{name} {dtype} input gradient")


class _WrongEpsLayerNorm(nn.LayerNorm):
    """eps outside the square root: ``(x - mean) / (sqrt(var) + eps)``."""

    def _compute(self, x: np.ndarray, xc: np.ndarray) -> tuple:
        x2 = xc.reshape(-1, int(np.prod(self.normalized_shape)))
        d = x2 - x2.mean(axis=1, keepdims=True)
        rstd = 1.0 / (np.sqrt(np.mean(d * d, axis=1, keepdims=True)) + self.eps)
        xhat = d * rstd
        y = xhat * self.weight.data.reshape(1, -1) + self.bias.data.reshape(1, -1)
        return y.reshape(x.shape), (x.shape, xhat, rstd)


class _BiasedRunningVar(nn.BatchNorm1d):
    """Keras's and flax's running variance (biased) instead of PyTorch's unbiased one."""

    def _update_stats(self, mean: np.ndarray, var: np.ndarray, count: int) -> None:
        super()._update_stats(mean, var * var.dtype.type((count - 1) / count), count)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_parity_catches_wrong_eps_placement_and_running_variance(dtype: str) -> None:
    # The replay is not vacuous: a LayerNorm with eps outside the square root and a
    # BatchNorm with the biased running variance both fail it.
    case = next(c for c in LAYERS if c[0] == "layernorm_small")
    with pytest.raises(AssertionError, match="relative error"):
        replay_layer(case, dtype, _WrongEpsLayerNorm(5, dtype=np.dtype(dtype)))
    case = next(c for c in LAYERS if c[0] == "batchnorm1d")
    with pytest.raises(AssertionError, match="buffer running_var"):
        replay_layer(case, dtype, _BiasedRunningVar(3, dtype=np.dtype(dtype)))
    case = next(c for c in LAYERS if c[0] == "rmsnorm_tiny")  # eps=None matters at this scale
    with pytest.raises(AssertionError, match="relative error"):
        replay_layer(case, dtype, nn.RMSNorm(5, eps=1e-6, dtype=np.dtype(dtype)))
