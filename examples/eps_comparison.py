"""Regenerate every epsilon plot of the README (``make plots`` runs this).

Four sweeps of the seed problem (64x1000 -> 100 -> ReLU -> 10, MSE sum, lr 1e-4, float32):

1. 13 eps values (0, 1e-16 .. 100) x Adam/AMSGrad x 3 seeds, 500 steps, on the seed problem and
   with 100 of the 1000 input features zero (156 runs): loss curves, final loss against eps,
   the eps-dominated fraction, and the step-multiplier histogram;
2. 9 eps values x every eps placement (outside, hat, inside, atan2; Adam) and every AMSGrad max
   (raw, corrected, paper; eps outside), 1 seed, 500 steps (63 runs): the variants figure;
3. the zero-features scenario (100 features zero) and
4. the dead-units scenario (10 hidden units dead) with eps = 0 and 1e-8 (outside) and atan2,
   300 steps: the NaN-at-step-1 figures;
5. the digits classifier (``minnet.lab.digits``; needs scikit-learn) with eps = 0 and 1e-8,
   Adam, 10 epochs: loss, NaN parameters and test accuracy (``scenario_digits.png``);
6. the eps atlas (``eps_atlas.png``): every optimizer of ``minnet.optim`` in the lab's family
   (:mod:`minnet.lab.family`) and every eps placement it has (AdamW: its default placement; its
   others are Adam's), at the 9 eps values of sweep 2, on the seed problem and with 100 input
   features zero, 1 seed, 500 steps, each optimizer at its own lr (``Member.lr``);
7. eps in low precision (``eps_lowp.png``, ``--only lowp``): Adam at the 10 eps values of
   :data:`LOWP_EPS` on the seed problem and with 100 input features zero, 1 seed,
   :data:`LOWP_STEPS` steps, in 7 precisions: float32; float16 and bfloat16 with the state in
   the parameters' dtype, each with ``rounding="fused"`` and ``"per_op"``; float16 parameters
   with float32 state (both roundings).

The PNG files go to ``--out`` (default ``plots/``); the sweeps' CSV files go to ``--data`` (default
``runs/eps_comparison/``), where ``minnet plot DIR`` can redraw them. Every sweep runs on
``--workers`` local processes (default: one per core). ``--only digits`` (or any of
:data:`SWEEPS`) runs only the named sweeps and redraws only their figures. Each run is saved as it
finishes; after Ctrl-C or a kill, ``--resume`` keeps the finished runs and trains the others
(without it, every sweep starts over).
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

from minnet.lab import SweepInterrupted, grid, sweep
from minnet.lab.family import available
from minnet.lab.plots import (
    PLOT_FILES,
    plot_eps_atlas,
    plot_eps_dominated,
    plot_eps_lowp,
    plot_final_loss,
    plot_loss_curves,
    plot_multipliers,
    plot_scenario,
    plot_variants,
)

VARIANT_EPS = (0.0, 1e-16, 1e-12, 1e-8, 1e-6, 1e-4, 1e-2, 1.0, 10.0)
#: eps values of the low-precision sweep: around float16's smallest subnormal (6e-8) and
#: smallest normal (6.1e-5) numbers.
LOWP_EPS = (0.0, 1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0)
LOWP_STEPS = 500
#: The sweeps in run order, by the name of their CSV sub-directory.
SWEEPS = ("eps_sweep", "variants", "zero_features100", "dead_units10", "digits", "atlas", "lowp")


def main(argv: list[str] | None = None) -> list[Path]:
    """Run the sweeps, write the CSV files and the PNG files; return the PNG paths."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("plots"), help="PNG directory")
    parser.add_argument("--data", type=Path, default=Path("runs/eps_comparison"),
                        help="CSV directory (one sub-directory per sweep)")  # fmt: skip
    parser.add_argument("--workers", type=int, default=None, help="local worker processes")
    parser.add_argument("--only", nargs="+", choices=SWEEPS, default=list(SWEEPS),
                        metavar="SWEEP", help=f"run only these sweeps, of {', '.join(SWEEPS)}")
    parser.add_argument("--resume", action="store_true",
                        help="keep the runs an interrupted invocation finished (same minnet)")
    args = parser.parse_args(argv)
    if args.workers is not None and args.workers < 1:
        parser.error(f"--workers must be >= 1, got {args.workers}")
    start = time.perf_counter()
    written: list[Path] = []

    def run_sweep(name: str, specs: list) -> object:
        t = time.perf_counter()
        try:
            result = sweep(specs, workers=args.workers, out=args.data / name,
                           resume=args.resume, overwrite=not args.resume)  # fmt: skip
        except SweepInterrupted as exc:
            raise SystemExit(f"{name}: interrupted: {exc.finished} of {exc.total} runs "
                             f"finished and kept; rerun with --resume to train the rest") from None
        print(f"{name}: {len(specs)} runs in {time.perf_counter() - t:.1f} s")
        return result

    if "eps_sweep" in args.only:
        main_sweep = run_sweep("eps_sweep", grid(scenarios=["seed", "zero_features=100"]))
        written += [
            plot_loss_curves(main_sweep, args.out / PLOT_FILES["loss_curves"]),
            plot_final_loss(main_sweep, args.out / PLOT_FILES["final_loss"]),
            plot_eps_dominated(main_sweep, args.out / PLOT_FILES["eps_dominated"]),
            plot_multipliers(main_sweep, args.out / PLOT_FILES["multipliers"]),
        ]

    if "variants" in args.only:
        written.append(plot_variants(run_sweep("variants", _variant_specs()),
                                     args.out / PLOT_FILES["variants"]))  # fmt: skip

    for scenario in ("zero_features=100", "dead_units=10"):
        if scenario.replace("=", "") not in args.only:
            continue
        specs = grid([0.0, 1e-8], amsgrad=[False], seeds=[0], steps=300, scenarios=[scenario])
        specs += grid([0.0], eps_modes=["atan2"], amsgrad=[False], seeds=[0], steps=300,
                      scenarios=[scenario])  # fmt: skip
        result = run_sweep(scenario.replace("=", ""), specs)
        png = "scenario_" + scenario.replace("=", "") + ".png"
        written.append(plot_scenario(result, args.out / png, scenario))

    if "digits" in args.only:
        specs = grid([0.0, 1e-8], amsgrad=[False], seeds=[0], scenarios=["digits"])
        result = run_sweep("digits", specs)
        written.append(plot_scenario(result, args.out / "scenario_digits.png", "digits"))

    if "atlas" in args.only:
        written.append(plot_eps_atlas(run_sweep("atlas", _atlas_specs()),
                                      args.out / PLOT_FILES["eps_atlas"]))  # fmt: skip

    if "lowp" in args.only:
        written.append(plot_eps_lowp(run_sweep("lowp", lowp_specs()),
                                     args.out / PLOT_FILES["eps_lowp"]))  # fmt: skip

    paths = [p for p in written if p is not None]
    for p in paths:
        print(f"wrote {p}")
    print(f"total {time.perf_counter() - start:.1f} s")
    return paths


def _variant_specs() -> list:
    """Every eps placement (Adam) and every AMSGrad max, over VARIANT_EPS, one seed."""
    with warnings.catch_warnings():  # atan2 drawn against every eps on purpose: one curve
        warnings.filterwarnings("ignore", message="eps_mode 'atan2' has no eps")
        variants = grid(VARIANT_EPS, eps_modes=["outside", "hat", "inside", "atan2"],
                        amsgrad=[False], seeds=[0])  # fmt: skip
    variants += grid(VARIANT_EPS, amsgrad=[True], amsgrad_max=["raw", "corrected", "paper"],
                     seeds=[0])  # fmt: skip
    return variants


def lowp_specs(steps: int = LOWP_STEPS, eps: tuple[float, ...] = LOWP_EPS) -> list:
    """Adam over ``eps`` in every recipe of the low-precision figure, one seed, on the seed
    problem and with 100 input features zero."""
    common = {"amsgrad": [False], "seeds": [0], "steps": steps,
              "scenarios": ["seed", "zero_features=100"], "roundings": ["fused", "per_op"]}
    specs = grid(eps, dtypes=["float32", "float16", "bfloat16"], **common)
    return specs + grid(eps, dtypes=["float16"], state_dtypes=["float32"], **common)


def _atlas_specs() -> list:
    """Every optimizer available and each of its placements (AdamW: its default), over
    VARIANT_EPS, on the seed problem and with 100 zero features, one seed."""
    names = [m.name for m in available()]
    common = {"amsgrad": [False], "seeds": [0], "scenarios": ["seed", "zero_features=100"]}
    with warnings.catch_warnings():  # atan2 drawn against every eps on purpose: one flat line
        warnings.filterwarnings("ignore", message="eps_mode 'atan2' has no eps")
        specs = grid(VARIANT_EPS, optimizers=[n for n in names if n != "AdamW"],
                     eps_modes=["all"], **common)  # fmt: skip
    if "AdamW" in names:
        specs += grid(VARIANT_EPS, optimizers=["AdamW"], **common)
    return specs


if __name__ == "__main__":
    main()
