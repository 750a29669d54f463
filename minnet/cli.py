"""The ``minnet`` command: ``minnet sweep`` trains an eps sweep and plots it, ``minnet plot DIR``
redraws the plots of a finished sweep from its CSV.

Examples::

    minnet sweep                                   # 78 runs: 13 eps x AMSGrad off/on x 3 seeds
    minnet sweep --eps 0 1e-8 1 --eps-modes outside hat inside atan2 --amsgrad both \\
                 --seeds 3 --steps 500 --zero-features 0 100 --workers 2 --out runs/modes
    minnet sweep --scheduler tcp://10.0.0.5:8786   # the same runs on a Dask cluster
    minnet sweep --optimizer adam rmsprop adagrad --eps-modes all --seeds 1 --out runs/family
    minnet sweep --scenarios digits --eps 0 1e-8 --amsgrad off --seeds 2   # the classifier
    minnet sweep --eps 1e-8 1e-7 1e-4 --amsgrad off --seeds 1 --dtype float32 float16 bfloat16 \
                 --state-dtype same float32 --rounding fused per_op --out runs/lowp
    minnet plot runs/modes
"""

from __future__ import annotations

import argparse
import math
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from minnet.lab.family import available, lookup, resolve_name
from minnet.optim import AMSGRAD_MAX_MODES

if TYPE_CHECKING:
    from minnet.lab.runner import SweepResult

__all__ = ["build_parser", "main"]

_DEFAULT_EPS = (
    "0",
    "1e-16",
    "1e-12",
    "1e-10",
    "1e-8",
    "1e-6",
    "1e-4",
    "1e-3",
    "1e-2",
    "1e-1",
    "1",
    "10",
    "100",
)


def _eps_value(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"eps must be finite and >= 0, got {text!r}")
    return value


def _int_at_least(low: int, high: int | None = None) -> Callable[[str], int]:
    """An argparse ``type=`` that parses an int in ``[low, high]`` (no upper bound if None)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < low or (high is not None and value > high):
            bound = f">= {low}" if high is None else f"in [{low}, {high}]"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {value}")
        return value

    parse.__name__ = "integer"
    return parse


def _optimizer_name(text: str) -> str:
    """An argparse ``type=`` for ``--optimizer``: a name in minnet.optim, any case, or ``all``."""
    if text.lower() == "all":
        return "all"
    try:
        return resolve_name(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _optimizer_kwarg(text: str) -> tuple[str, str, object]:
    """An argparse ``type=`` for ``--optimizer-kwargs``: ``NAME:KEY=VALUE`` (VALUE a Python
    literal: ``rmsprop:momentum=0.9``, ``adam:betas=(0.8,0.99)``)."""
    import ast

    name, sep, rest = text.partition(":")
    key, eq, value = rest.partition("=")
    if not (sep and eq and key.strip()):
        raise argparse.ArgumentTypeError(f"expected NAME:KEY=VALUE, got {text!r}")
    try:
        parsed = ast.literal_eval(value.strip())
    except (ValueError, SyntaxError):
        raise argparse.ArgumentTypeError(f"VALUE must be a Python literal, got {value!r}") from None
    try:
        resolved = resolve_name(name.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return resolved, key.strip(), parsed


def _placement_help() -> str:
    return "; ".join(f"{m.name}: {', '.join(m.placements)}" for m in available())


def _lr_help() -> str:
    return ", ".join(f"{m.name} {m.lr:g}" for m in available())


def _scenario_name(text: str) -> str:
    """An argparse ``type=`` for ``--scenarios``: a built-in problem's name (``digits``) or a
    scenario of the seed problem (``seed``, ``zero_features=K``, ``dead_units=K``, both)."""
    from minnet.lab.digits import PROBLEMS
    from minnet.lab.scenarios import Scenario

    if text in PROBLEMS:
        return text
    try:
        return Scenario.parse(text).name
    except ValueError:
        known = ", ".join(sorted(PROBLEMS))
        raise argparse.ArgumentTypeError(
            f"unknown scenario {text!r}: expected {known}, seed, zero_features=K, dead_units=K "
            "or zero_features=K,dead_units=K"
        ) from None


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be finite and > 0, got {text!r}")
    return value


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line (``minnet sweep: error: ...``) and exit
    with status 2; the full usage stays on ``--help``."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: ...)`` only where there is a value worth showing (not None or False)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``minnet`` command (``sweep`` and ``plot`` subcommands)."""
    parser = _Parser(
        prog="minnet",
        description="Sweep an optimizer's eps on the seed problem and plot what it does.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Run 'minnet sweep --help' or 'minnet plot --help' for each command's options.",
    )
    sub = parser.add_subparsers(
        dest="command", metavar="{sweep,plot}", required=True, parser_class=_Parser
    )

    sw = sub.add_parser(
        "sweep",
        help="train one run per eps x variant x seed x scenario; write runs.csv and the plots",
        description=(
            "Train the seed problem (64x1000 -> 100 -> ReLU -> 10, MSE sum; Adam lr 1e-4) once "
            "per combination of the options below, write DIR/runs.csv (one row per run and "
            "step), DIR/multipliers.csv and the plots (PNG) into DIR. Runs that diverge "
            "(NaN/inf) are kept in the CSV. DIR is locked while the sweep writes into it, and "
            "each run is saved there as it finishes: a killed or interrupted sweep continues "
            "with the same command plus --resume. The defaults give 78 runs of 500 steps. "
            "--scenarios digits trains the digits classifier instead (scikit-learn's "
            "load_digits, 64 -> 128 -> Tanh -> Dropout -> 10, CrossEntropyLoss, Adam lr 1e-3, "
            "10 epochs; its test accuracy goes into the metric column)."
        ),
        formatter_class=_HelpFormatter,
    )
    sw.add_argument(
        "--eps",
        nargs="+",
        type=_eps_value,
        default=[float(e) for e in _DEFAULT_EPS],
        metavar="EPS",
        help="eps values (finite, >= 0; 0 is allowed and shows the 0/0 NaN)",
    )
    sw.add_argument(
        "--optimizer",
        nargs="+",
        type=_optimizer_name,
        default=["Adam"],
        metavar="NAME",
        help="optimizers to train, by minnet.optim name in any case (adam, RMSprop), or 'all'; "
        f"available: {', '.join(m.name for m in available())}. An optimizer without eps "
        "(SGD, Lion) trains once per seed and scenario (eps recorded as NaN)",
    )
    modes = sorted({p for m in available() for p in m.eps_modes})
    sw.add_argument(
        "--eps-modes",
        nargs="+",
        choices=[*modes, "all"],
        default=None,
        metavar="MODE",
        help="where eps goes, per optimizer: each optimizer trains the modes it has ('all': "
        "every one), an optimizer without an eps_mode keyword its one placement ('none'). "
        "Adam: outside = m/(sqrt(v)+eps) as PyTorch; hat = added before bias correction as "
        "TensorFlow/Keras; inside = m/sqrt(v+eps) as optax eps_root; atan2 = Adam-atan2, no "
        f"eps. Placements: {_placement_help()}. Default: each optimizer's first",
    )
    sw.add_argument(
        "--optimizer-kwargs",
        nargs="+",
        type=_optimizer_kwarg,
        default=[],
        metavar="NAME:KEY=VALUE",
        help="further hyperparameters of one optimizer, e.g. rmsprop:momentum=0.9 "
        "sgd:weight_decay=1e-4",
    )
    sw.add_argument(
        "--amsgrad",
        choices=("off", "on", "both"),
        default="both",
        help="train plain Adam (off), AMSGrad (on) or both (Adam and AdamW; the other "
        "optimizers have no AMSGrad and train once)",
    )
    sw.add_argument(
        "--amsgrad-max",
        nargs="+",
        choices=AMSGRAD_MAX_MODES,
        default=None,
        metavar="MAX",
        help="AMSGrad's running max, for the AMSGrad runs (so not with --amsgrad off): raw = "
        "max of v as PyTorch/Keras (the default); corrected = max of bias-corrected v as "
        "optax; paper = no bias correction (Reddi et al.). "
        f"Choose from {', '.join(AMSGRAD_MAX_MODES)}",
    )
    sw.add_argument(
        "--seeds",
        type=_int_at_least(1),
        default=3,
        metavar="N",
        help="number of seeds (data and initial weights): seeds 0..N-1",
    )
    sw.add_argument(
        "--steps",
        type=_int_at_least(1),
        default=None,
        metavar="N",
        help="optimizer steps per run (default: 500 for the seed problem and its "
        "scenarios; a built-in problem's own epochs, e.g. 10 epochs = 230 steps for digits)",
    )
    sw.add_argument(
        "--lr",
        type=_positive_float,
        default=None,
        help="learning rate for every optimizer (default: each optimizer's for the seed "
        f"problem: {_lr_help()}; a built-in problem's own, 1e-3 for digits)",
    )
    sw.add_argument(
        "--zero-features",
        nargs="+",
        type=_int_at_least(0, 1000),
        default=None,
        metavar="K",
        help="scenarios with K of the 1000 input features zero in every sample "
        "(their weights get exactly zero gradient); 0 = the seed problem (default: 0, unless "
        "--scenarios is given)",
    )
    sw.add_argument(
        "--dead-units",
        nargs="+",
        type=_int_at_least(0, 100),
        default=None,
        metavar="K",
        help="scenarios with K of the 100 hidden units dead from the start (bias "
        "-1000, ReLU output 0 for every sample); combined with each --zero-features "
        "(default: 0)",
    )
    sw.add_argument(
        "--scenarios",
        nargs="+",
        type=_scenario_name,
        default=None,
        metavar="NAME",
        help="scenarios by name: digits (the digits classifier; needs scikit-learn: pip "
        "install 'minnet[data]'), digits_cnn (a small CNN on the same digits), "
        "char_transformer (a small character-level transformer on the standard library's "
        "docstrings), seed, "
        "zero_features=K, dead_units=K. Alone, only these are "
        "trained; with --zero-features or --dead-units, they are added to those",
    )
    sw.add_argument(
        "--dtype",
        nargs="+",
        choices=("float32", "float64", "float16", "bfloat16"),
        default=["float32"],
        metavar="DTYPE",
        help="floating-point types of the seed problem's data, model and parameters (and of "
        "the optimizer state unless --state-dtype says otherwise); float16/bfloat16 models "
        "compute in float32 and store 16 bits. The digits model is float32. Choose from "
        "float32, float64, float16, bfloat16",
    )
    sw.add_argument(
        "--state-dtype",
        nargs="+",
        choices=("same", "float32", "float64", "float16", "bfloat16"),
        default=["same"],
        metavar="DTYPE",
        help="the optimizer state's dtype for each --dtype: same = the parameters' (all "
        "float16, all bfloat16); float32 = float32 master state for 16-bit parameters. "
        "Choose from same, float32, float64, float16, bfloat16",
    )
    sw.add_argument(
        "--rounding",
        nargs="+",
        choices=("fused", "per_op"),
        default=["fused"],
        metavar="MODEL",
        help="how the optimizer rounds in 16-bit runs: fused = compute in float32, round once "
        "when storing (PyTorch fused=True); per_op = round every op's result to 16 bits in "
        "PyTorch's order (its default for-loop Adam, where eps=1e-8 is 0 in float16). Runs "
        "without a 16-bit buffer train once (rounding changes nothing there)",
    )
    sw.add_argument(
        "--skip-refused",
        action="store_true",
        help="leave out the (optimizer, --dtype, --state-dtype, --rounding) combinations an "
        "optimizer refuses (e.g. per_op for an optimizer or placement without it), listing "
        "each one and why, instead of stopping with an error",
    )
    sw.add_argument(
        "--workers",
        type=_int_at_least(1),
        default=None,
        metavar="N",
        help="local worker processes, each single-threaded (default: one per core); "
        "1 trains in this process",
    )
    sw.add_argument(
        "--scheduler",
        default=None,
        metavar="tcp://HOST:PORT",
        help="send the runs to this Dask distributed scheduler instead of local "
        "processes (needs: pip install 'minnet[dask]'; minnet installed on the "
        "workers)",
    )
    sw.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="DIR",
        help="output directory (default: runs/sweep-YYYYmmdd-HHMMSS)",
    )
    sw.add_argument(
        "--overwrite",
        action="store_true",
        help="start over in a DIR that holds a runs.csv or the finished runs of an "
        "unfinished sweep, instead of refusing",
    )
    sw.add_argument(
        "--resume",
        action="store_true",
        help="keep the runs a killed or interrupted sweep into DIR finished (each run is "
        "saved in DIR/.runs/ as it finishes) and train only the others; the runs.csv is the "
        "same, row for row, as that of an uninterrupted sweep",
    )
    sw.add_argument("--no-plots", action="store_true", help="write the CSV files only")
    sw.add_argument("--no-progress", action="store_true",
                    help="hide the progress bar (runs done / total, elapsed time and time left; "
                    "shown on a terminal)")  # fmt: skip
    sw.set_defaults(handler=_sweep, subparser=sw)

    pl = sub.add_parser(
        "plot",
        help="redraw the plots of a sweep from DIR/runs.csv",
        description="Read DIR/runs.csv (and DIR/multipliers.csv) and draw the plots as PNG.",
        formatter_class=_HelpFormatter,
    )
    pl.add_argument("dir", type=Path, metavar="DIR", help="directory of a 'minnet sweep'")
    pl.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="OUT",
        help="where to write the PNG files (default: DIR)",
    )
    pl.set_defaults(handler=_plot, subparser=pl)
    return parser


def _sweep(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from minnet.lab.runner import (
        SweepOutputError,
        atan2_ignores_eps,
        grid,
        lock_output,
        prepare_output,
    )
    from minnet.lab.scenarios import Scenario

    if args.amsgrad == "off" and args.amsgrad_max is not None:
        parser.error(
            "--amsgrad-max applies only to AMSGrad runs, and --amsgrad off trains none; "
            "pass --amsgrad on or both, or leave --amsgrad-max out"
        )

    if args.scheduler is not None:
        if "://" not in args.scheduler:
            parser.error(f"--scheduler must look like tcp://HOST:PORT, got {args.scheduler!r}")
        try:
            import distributed  # noqa: F401
        except ImportError:
            parser.error("--scheduler needs dask.distributed: pip install 'minnet[dask]'")
    if args.resume and args.overwrite:
        parser.error("--resume keeps the finished runs and --overwrite deletes them: pass one")
    if args.resume and args.out is None:
        parser.error("--resume needs the --out DIR of the sweep to resume")
    out = args.out or Path("runs") / time.strftime("sweep-%Y%m%d-%H%M%S")
    if out.exists() and not out.is_dir():
        parser.error(f"--out {out} exists and is not a directory")
    scenarios: list = []
    if args.scenarios is None or args.zero_features is not None or args.dead_units is not None:
        scenarios = [
            Scenario(zero_features=z, dead_units=d)
            for z in dict.fromkeys(args.zero_features or [0])
            for d in dict.fromkeys(args.dead_units or [0])
        ]
    for name in args.scenarios or []:
        if name not in [str(s) for s in scenarios]:
            scenarios.append(name)
    from minnet.lab.digits import NEEDS_SKLEARN

    if wanted := [s for s in scenarios if isinstance(s, str) and s in NEEDS_SKLEARN]:
        try:
            import sklearn  # noqa: F401
        except ImportError:
            parser.error(f"--scenarios {' '.join(wanted)} needs scikit-learn: pip install "
                         "'minnet[data]'")  # fmt: skip
    amsgrad = {"off": [False], "on": [True], "both": [False, True]}[args.amsgrad]
    eps = list(dict.fromkeys(args.eps))
    optimizers = list(dict.fromkeys(args.optimizer))
    if "all" in optimizers:
        optimizers = [m.name for m in available()]
    eps_modes = None if args.eps_modes is None else list(dict.fromkeys(args.eps_modes))
    adam_modes = ["outside"] if eps_modes is None else eps_modes
    if "all" in adam_modes:
        adam_modes = list(lookup("Adam").eps_modes)
    if "Adam" in optimizers and "atan2" in adam_modes and len(eps) > 1:
        # Kept rather than collapsed: every eps_mode is then drawn against the same eps values.
        print(f"minnet sweep: warning: {atan2_ignores_eps(eps)}", file=sys.stderr)
    no_eps = [o for o in optimizers if not lookup(o).has_eps]
    if no_eps and len(eps) > 1:
        print(f"minnet sweep: note: {', '.join(no_eps)} ha{'s' if len(no_eps) == 1 else 've'} "
              "no eps: one run per seed and scenario (eps recorded as NaN)")  # fmt: skip
    rounding = list(dict.fromkeys(args.rounding))
    wide = [d for d in dict.fromkeys(args.dtype) if d in ("float32", "float64") and any(
        s in ("same", "float32", "float64") for s in args.state_dtype)]  # fmt: skip
    if len(rounding) > 1 and wide:
        print(f"minnet sweep: note: {', '.join(wide)} runs without a 16-bit buffer train once "
              f"(rounding={rounding[0]!r}): rounding changes nothing there")  # fmt: skip
    kwargs: dict[str, dict[str, object]] = {}
    for name, key, value in args.optimizer_kwargs:
        if name not in optimizers:
            parser.error(f"--optimizer-kwargs {name}:{key}: {name} is not in --optimizer")
        kwargs.setdefault(name, {})[key] = value
    amsgrad_max = None if args.amsgrad_max is None else list(dict.fromkeys(args.amsgrad_max))
    try:
        with warnings.catch_warnings(record=True) as caught:  # said above, in the command's terms
            warnings.simplefilter("always")
            warnings.filterwarnings("ignore", message="eps_mode 'atan2' has no eps")
            specs = grid(
                eps=eps,
                eps_modes=eps_modes,
                amsgrad=amsgrad,
                amsgrad_max=amsgrad_max,
                seeds=range(args.seeds),
                scenarios=scenarios,
                dtypes=args.dtype,
                state_dtypes=args.state_dtype,
                roundings=args.rounding,
                steps=args.steps,
                lr=args.lr,
                optimizers=optimizers,
                optimizer_kwargs=kwargs,
                refused="skip" if args.skip_refused else "error",
            )
        for w in caught:
            text = str(w.message)
            if text.startswith("grid: skipped"):
                print(f"minnet sweep: note: {text.removeprefix('grid: ')}")
            else:
                print(f"minnet sweep: warning: {text}", file=sys.stderr)
        if not specs:
            parser.error("every combination was refused; see the notes above")
    except (ValueError, TypeError) as exc:
        message = str(exc).removeprefix("grid: ")
        parser.error(message.replace("eps_mode ", "--eps-modes ", 1).replace(
            "the eps_modes", "the --eps-modes", 1))
    # The output directory is locked, checked and prepared before the first run, and stays
    # locked until the plots are written: a second sweep into it fails at once.
    try:
        with lock_output(out):
            finished = prepare_output(out, specs, resume=args.resume, overwrite=args.overwrite)
            return _train_and_write(args, specs, out, len(finished))
    except SweepOutputError as exc:
        parser.error(_in_flag_terms(str(exc)))


def _in_flag_terms(message: str) -> str:
    """A message of the lab's Python API in the command's terms."""
    for api, flag in (("overwrite=True", "--overwrite"), ("resume=True", "--resume"),
                      ("another output directory", "another --out")):  # fmt: skip
        message = message.replace(api, flag)
    return message


def _train_and_write(args: argparse.Namespace, specs: list, out: Path, finished: int) -> int:
    from minnet.lab.runner import SweepInterrupted, sweep

    where = args.scheduler or f"{args.workers or 'all'} local worker(s)"
    steps = sorted({spec.steps for spec in specs}, key=lambda n: (n is None, n))
    length = " or ".join("each problem's epochs" if n is None else f"{n} steps" for n in steps)
    print(f"minnet sweep: {len(specs)} runs of {length} on {where} -> {out}")
    if args.resume:
        print(f"minnet sweep: resuming: {finished} of {len(specs)} runs already finished in "
              f"{out}, training the other {len(specs) - finished}")  # fmt: skip
    start = time.perf_counter()
    try:
        result = sweep(
            specs,
            workers=args.workers,
            scheduler=args.scheduler,
            progress=False if args.no_progress else None,
            out=out,
            resume=True,  # what prepare_output kept (nothing unless --resume)
        )
    except SweepInterrupted as exc:
        left = exc.total - exc.finished
        print(f"minnet sweep: interrupted: {exc.finished} of {exc.total} runs finished and kept "
              f"in {out}; to train the other {left}, run the same command with --resume",
              file=sys.stderr)  # fmt: skip
        return 130
    except OSError as exc:  # e.g. the scheduler cannot be reached
        print(f"minnet sweep: error: {exc}", file=sys.stderr)
        return 1
    except RuntimeError as exc:
        if not str(exc).startswith("sweep: a worker process died"):
            raise
        # Killed from outside (or out of memory): what finished is kept.
        print(f"minnet sweep: error: {_in_flag_terms(str(exc).removeprefix('sweep: '))}",
              file=sys.stderr)  # fmt: skip
        return 1
    trained = time.perf_counter() - start
    print(
        f"trained {len(specs) - finished} runs in {trained:.1f} s; "
        f"wrote {out / 'runs.csv'} ({len(result.runs)} rows)"
    )
    print(f"minnet sweep: {result.diverged_summary()}")
    if not args.no_plots:
        try:
            _plot_all(result, out, "minnet sweep")
        except KeyboardInterrupt:
            print(f"minnet sweep: interrupted while drawing the plots; {out / 'runs.csv'} is "
                  f"complete, and 'minnet plot {out}' draws them", file=sys.stderr)  # fmt: skip
            return 130
    return 0


def _plot_all(result: SweepResult, out: Path, prog: str) -> None:
    """Draw every figure, print each path, and what was left out as a note."""
    from minnet.lab.plots import plot_all

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        paths = plot_all(result, out)
    for path in paths:
        print(f"wrote {path}")
    for w in caught:
        if issubclass(w.category, UserWarning) and str(w.message).startswith("plot_all: "):
            print(f"{prog}: note: {str(w.message).removeprefix('plot_all: ')}")
        else:
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def _plot(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from minnet.lab.runner import SweepResult

    if not (args.dir / "runs.csv").is_file():
        parser.error(f"{args.dir / 'runs.csv'} not found: DIR must hold a 'minnet sweep' output")
    try:
        result = SweepResult.read(args.dir)
    except ValueError as exc:
        parser.error(str(exc))
    if not len(result.runs):
        parser.error(f"{args.dir / 'runs.csv'} has no rows")
    _plot_all(result, args.out or args.dir, "minnet plot")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``minnet`` (and ``python -m minnet``); returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.handler(args, args.subparser)


if __name__ == "__main__":
    sys.exit(main())
