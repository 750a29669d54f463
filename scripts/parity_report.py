"""Print how closely minnet follows each recorded PyTorch trajectory (no torch needed).

python scripts/parity_report.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent.parent / "tests"))
from test_torch_parity import FIXTURES, replay  # noqa: E402


def main() -> None:
    """One line per fixture: worst relative loss gap and worst relative parameter gap."""
    print(f"{'fixture':<24} {'steps':>5} {'loss gap':>10} {'param gap':>10}  bit-identical params")
    for path in FIXTURES:
        cfg, ours, theirs, params, final = replay(path)
        loss_gap = (np.abs(ours - theirs) / np.abs(theirs)).max()
        param_gap = max(np.abs(params[k] - v).max() / np.abs(v).max() for k, v in final.items())
        same = sum(int((params[k] == v).sum()) for k, v in final.items())
        total = sum(v.size for v in final.values())
        print(
            f"{path.stem[6:]:<24} {cfg['steps']:>5} {loss_gap:>10.2e} {param_gap:>10.2e}  "
            f"{same}/{total}"
        )


if __name__ == "__main__":
    main()
