"""The character-level transformer: its hand-written backward passes (finite differences in
float64), examples/char_transformer.py at a tiny size, and the lab's char_transformer scenario."""

from __future__ import annotations

import runpy
from pathlib import Path

import numpy as np
import pytest

import minnet
from minnet import nn
from minnet.cli import main as cli_main
from minnet.lab import RunSpec, run
from minnet.lab.chars import (
    CharTransformer,
    NextCharLoss,
    TransformerBlock,
    encode,
    next_char_loss,
    sample,
    stdlib_docstrings,
    unigram_entropy,
)
from minnet.lab.runner import SweepResult
from minnet.testing import GradcheckError, gradcheck

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "char_transformer.py"
RNG = np.random.default_rng(0)


def _perturbed(module: nn.Module) -> nn.Module:
    """Move every parameter off its init (LayerNorm's ones and zeros, zero biases)."""
    gen = np.random.default_rng(1)
    for p in module.parameters():
        p.data[...] += 0.2 * gen.standard_normal(p.data.shape)
    return module


def test_block_backward_matches_finite_differences() -> None:
    minnet.manual_seed(0)
    block = _perturbed(TransformerBlock(8, 2, dtype=np.float64))
    assert gradcheck(block, RNG.standard_normal((2, 5, 8)))


def test_gradcheck_catches_a_residual_gradient_left_out() -> None:
    class Wrong(TransformerBlock):
        def backward(self, grad_out):  # the attention branch gets grad_out, not g
            g = grad_out + self.ln2.backward(self.fc1.backward(self.act.backward(
                self.fc2.backward(grad_out))))  # fmt: skip
            return g + self.ln1.backward(self.attn.backward(grad_out))

    minnet.manual_seed(0)
    with pytest.raises(GradcheckError, match="ln1.weight"):
        gradcheck(_perturbed(Wrong(8, 2, dtype=np.float64)), RNG.standard_normal((2, 5, 8)))


def test_block_is_causal() -> None:
    minnet.manual_seed(0)
    block = TransformerBlock(8, 2, dtype=np.float64)
    x = RNG.standard_normal((1, 6, 8))
    y = x.copy()
    y[0, 4:] += 1.0  # change the last two positions
    with minnet.no_grad():
        a, b = block(x), block(y)
    np.testing.assert_array_equal(a[0, :4], b[0, :4])
    assert not np.allclose(a[0, 4:], b[0, 4:])


def _model_loss(model: CharTransformer, x: np.ndarray, y: np.ndarray) -> float:
    with minnet.no_grad():
        return float(nn.CrossEntropyLoss()(model(x).reshape(-1, 7), y.reshape(-1)))


def test_model_backward_matches_finite_differences_and_the_graph() -> None:
    # indices are not differentiable, so gradcheck's input check does not apply: compare
    # every parameter's gradient with central differences of the loss, entry by entry.
    minnet.manual_seed(0)
    model = _perturbed(CharTransformer(7, 5, d_model=4, n_layers=2, n_heads=2,
                                       dtype=np.float64))  # fmt: skip
    x, y = RNG.integers(0, 6, (3, 5)), RNG.integers(0, 7, (3, 5))  # token 6 never appears
    model.zero_grad()
    nn.CrossEntropyLoss()(nn.Flatten(0, 1)(model(x)), y.reshape(-1)).backward()
    grads = {n: p.grad.copy() for n, p in model.named_parameters()}
    for name, p in model.named_parameters():
        flat, numeric = p.data.reshape(-1), np.empty(p.data.size)
        for i in range(p.data.size):
            old = flat[i]
            flat[i] = old + 1e-6
            up = _model_loss(model, x, y)
            flat[i] = old - 1e-6
            numeric[i] = (up - _model_loss(model, x, y)) / 2e-6
            flat[i] = old
        np.testing.assert_allclose(grads[name].reshape(-1), numeric, rtol=1e-5, atol=1e-8,
                                   err_msg=name)  # fmt: skip
    assert not grads["tok.weight"][6].any()  # the absent token's row: exactly zero
    # the hand-written chain (model.backward(loss_fn.backward())) gives the same gradients
    loss_fn = nn.CrossEntropyLoss()
    model.zero_grad()
    loss_fn(nn.Flatten(0, 1)(model(x)), y.reshape(-1))
    model.backward(loss_fn.backward().reshape(3, 5, 7))
    for name, p in model.named_parameters():
        np.testing.assert_allclose(p.grad, grads[name], rtol=1e-12, atol=1e-15, err_msg=name)


def test_corpus_encoding_and_entropy() -> None:
    text = stdlib_docstrings()
    assert len(text) > 100_000 and text == stdlib_docstrings()
    ids, vocab = encode("abca")
    assert vocab == ["a", "b", "c"] and ids.tolist() == [0, 1, 2, 0]
    np.testing.assert_allclose(unigram_entropy(ids), -(0.5 * np.log(0.5) + 2 * 0.25 * np.log(0.25)))


def test_sampling_is_seeded_and_greedy_is_deterministic() -> None:
    minnet.manual_seed(0)
    model = CharTransformer(5, 4, d_model=8, n_layers=1, n_heads=2)
    prompt = np.array([1, 2])
    a = sample(model, prompt, 10, 1.0, rng=np.random.default_rng(3))
    b = sample(model, prompt, 10, 1.0, rng=np.random.default_rng(3))
    assert a.tolist() == b.tolist() and len(a) == 12 and a[:2].tolist() == [1, 2]
    assert ((0 <= a) & (a < 5)).all()
    g1, g2 = sample(model, prompt, 6, 0.0), sample(model, prompt, 6, 0.0)
    assert g1.tolist() == g2.tolist()
    assert model.training
    with pytest.raises(ValueError, match="prompt must be a non-empty 1-D"):
        sample(model, np.array([], np.int64), 3)
    with pytest.raises(ValueError, match="temperature must be >= 0"):
        sample(model, prompt, 3, -1.0)
    with pytest.raises(ValueError, match=r"T <= context = 4, got shape \(1, 5\)"):
        model(np.zeros((1, 5), np.int64))


def test_example_loss_falls_at_a_tiny_size(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    text = tmp_path / "text.txt"
    text.write_text("the cat sat on the mat. " * 200, encoding="utf-8")
    main = runpy.run_path(str(EXAMPLE))["main"]
    out = main(["--text", str(text), "--steps", "60", "--warmup", "5", "--context", "16",
                "--lr", "1e-2",
                "--batch-size", "8", "--d-model", "16", "--layers", "1", "--heads", "2",
                "--print-every", "10", "--sample", "20"])  # fmt: skip
    assert all(np.isfinite(v) for v in out.values())
    # a periodic text: far below its unigram entropy (2.14 nats/char) within 60 steps
    assert out["last"] < out["first"] and out["last"] < 0.5 * out["entropy"]
    lines = capsys.readouterr().out.splitlines()
    assert "unigram entropy" in lines[0] and lines[1].startswith("step     1  loss")
    assert any(line.startswith("sample:") for line in lines)


def test_lab_loss_and_metric() -> None:
    logits = RNG.standard_normal((6, 4))
    target = RNG.integers(0, 4, (2, 3))
    loss = NextCharLoss()(logits, target)
    ref = nn.CrossEntropyLoss()(logits, target.reshape(-1))
    assert float(loss) == float(ref)
    np.testing.assert_allclose(next_char_loss(logits, target), float(ref), rtol=1e-12)


def test_char_transformer_scenario_trains() -> None:
    good = run(RunSpec(eps=1e-8, scenario="char_transformer", steps=8))
    assert np.isfinite(good.loss).all() and (good.nonfinite == 0).all()
    assert good.loss[-1] < good.loss[0]
    assert np.isfinite(good.metric[-1]) and good.metric[-1] < good.loss[0]


def test_minnet_sweep_runs_the_char_transformer_scenario(tmp_path: Path) -> None:
    out = tmp_path / "sweep"
    argv = ["sweep", "--scenarios", "char_transformer", "--eps", "0", "1e-8", "--amsgrad",
            "off", "--seeds", "1", "--steps", "3", "--workers", "1", "--no-progress",
            "--no-plots", "--out", str(out)]  # fmt: skip
    assert cli_main(argv) == 0
    table = SweepResult.read(out).run_table()
    assert set(table["scenario"]) == {"char_transformer"}
    assert sorted(table["eps"]) == [0.0, 1e-8]
