"""Print how closely minnet follows each PyTorch float16 / bfloat16 fixture (no torch needed).

    python scripts/lowp_parity_report.py

One line per ``tests/fixtures/lowp_*.npz``: the worst share (over the parameter and every state
buffer) of finite elements within 2 ulp of PyTorch's and of bit-identical ones, whether the
NaN/inf coordinates match, or why the fixture cannot be replayed yet. A second table holds the
test file's NumPy transcription of per-op Adam to the Adam fixtures (it must pass the per-op ones
and fail the fused ones: the harness can tell them apart).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
from test_lowp_parity import (  # noqa: E402
    ADAM,
    FIXTURES,
    ULP,
    check,
    inputs,
    load,
    per_op_adam,
    replayed,
)


def main() -> None:
    """Print both tables."""
    print(f"{'fixture':<44} {f'<= {ULP} ulp':>9} {'identical':>9}  NaN/inf pattern")
    for path in FIXTURES:
        try:
            _, problems, within, ident = replayed(path)
        except pytest.skip.Exception as e:
            print(f"{path.stem:<44} {'-':>9} {'-':>9}  {str(e.msg)[:70]}")
            continue
        nonfinite = [p for p in problems if "non-finite" in p]
        print(
            f"{path.stem:<44} {within:>9.4f} {ident:>9.4f}  "
            f"{'differs: ' + nonfinite[0] if nonfinite else 'same'}"
        )
    print(f"\nper-op Adam transcription (tests/test_lowp_parity.py)\n{'fixture':<44} "
          f"{f'<= {ULP} ulp':>9} {'identical':>9}  verdict")  # fmt: skip
    for path in ADAM:
        cfg, data = load(path)
        w0, grads = inputs(cfg, data)
        problems, within, ident = check(cfg, data, per_op_adam(cfg, w0, grads))
        verdict = "pass" if not problems else "fail: " + problems[0][:60]
        print(f"{path.stem:<44} {within:>9.4f} {ident:>9.4f}  {verdict}")


if __name__ == "__main__":
    main()
