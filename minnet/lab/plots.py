"""Figures of a sweep, drawn from its tidy table (so ``minnet plot DIR`` can redraw them from CSV).

Each ``plot_*`` function takes a :class:`~minnet.lab.runner.SweepResult` and an output path, draws
with Matplotlib's Agg canvas (no display needed) and returns the path, or ``None`` when the sweep
holds nothing that figure could show (e.g. no AMSGrad runs, a single eps_mode). :func:`plot_all`
draws every figure that applies.

Conventions: "the reference variant" is the first scenario (``seed`` if present), eps_mode
``outside`` (else the first present), AMSGrad off (else on) with ``amsgrad_max="raw"``; curves are
for the smallest seed present; eps=0 sits at the left of every log-eps axis, past a break.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.transforms import blended_transform_factory

from minnet.lab.family import FAMILY, NO_PLACEMENT
from minnet.lab.runner import MULTIPLIER_EDGES, SweepResult, Table

__all__ = [
    "PLOT_FILES",
    "atlas_coverage",
    "draw_eps_atlas",
    "draw_eps_lowp",
    "plot_all",
    "plot_eps_atlas",
    "plot_eps_dominated",
    "plot_eps_lowp",
    "plot_final_loss",
    "plot_loss_curves",
    "plot_multipliers",
    "plot_scenario",
    "plot_variants",
]

#: File names of the figures, in the order of the README.
PLOT_FILES = {
    "loss_curves": "loss_curves.png",
    "final_loss": "final_loss_vs_eps.png",
    "eps_dominated": "eps_dominated.png",
    "variants": "variants.png",
    "multipliers": "multipliers.png",
    "eps_atlas": "eps_atlas.png",
    "eps_lowp": "eps_lowp.png",
}
_DPI = 110


def _eps_label(e: float) -> str:
    if e == 0:
        return "0"
    exp = math.log10(e)
    if abs(exp - round(exp)) > 1e-9:
        return f"{e:g}"
    return f"{e:g}" if -1 <= round(exp) <= 3 else f"1e{int(round(exp))}"


def _eps_colors(eps_values: Sequence[float]) -> dict[float, tuple]:
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    n = max(len(eps_values) - 1, 1)
    return {e: cmap(0.92 * i / n) for i, e in enumerate(sorted(eps_values))}


def _variant_name(eps_mode: str, amsgrad: bool, amsgrad_max: str, optimizer: str = "Adam") -> str:
    if not amsgrad:
        return f"{optimizer}, eps {eps_mode}" if eps_mode != NO_PLACEMENT else optimizer
    return f"AMSGrad ({amsgrad_max}), eps {eps_mode}"


def _reference_optimizer(info: Table) -> str:
    """Adam if the sweep has it, else the first optimizer (family order) whose runs have eps."""
    names = info.unique("optimizer") if len(info) else ["Adam"]
    if "Adam" in names:
        return "Adam"
    order = {m.name: i for i, m in enumerate(FAMILY)}
    names = sorted(names, key=lambda n: (order.get(n, len(order)), n))
    with_eps = [n for n in names if np.isfinite(info.where(optimizer=n)["eps"]).any()]
    return (with_eps or names)[0]


_DTYPE_ORDER = ("float32", "float64", "float16", "bfloat16")


def _precision_order(key: tuple[str, str, str]) -> tuple:
    """Sort key of (dtype, state_dtype, rounding): float32 first, state in the parameters'
    dtype before other state dtypes, fused before per_op."""
    dtype, state, rounding = key
    rank = {d: i for i, d in enumerate(_DTYPE_ORDER)}
    return (rank.get(dtype, 9), state not in (dtype, "same"), rank.get(state, 9),
            rounding != "fused", rounding)  # fmt: skip


def _precisions(info: Table) -> list[tuple[str, str, str]]:
    """The distinct (dtype, state_dtype, rounding) of the runs, in :func:`_precision_order`."""
    keys = set(zip(info["dtype"], info["state_dtype"], info["rounding"])) if len(info) else set()
    return sorted(((str(a), str(b), str(c)) for a, b, c in keys), key=_precision_order)


def _reference_precision(info: Table) -> tuple[str, str, str]:
    """The precision the one-precision figures show: float32 (fused) if swept, else the first
    of :func:`_precisions`."""
    found = _precisions(info)
    return found[0] if found else ("float32", "float32", "fused")


def _precision_label(dtype: str, state: str, rounding: str) -> str:
    """``"float32"``; ``"float16, per_op"`` (state in the parameters' dtype); ``"float16
    params + float32 state, fused"``."""
    if not {dtype, state} & {"float16", "bfloat16"}:
        return dtype if state in (dtype, "same") else f"{dtype} params + {state} state"
    if state in (dtype, "same"):
        return f"{dtype}, {rounding}"
    return f"{dtype} params + {state} state, {rounding}"


class _Runs:
    """Per-run view of a sweep: metadata table plus each run's step columns.

    ``info`` holds the runs of one optimizer (``optimizer``, default: the reference one, Adam if
    present) in one precision (:func:`_reference_precision`): the figures other than the atlas
    and the low-precision figure each show one optimizer in one precision; ``all_info`` holds
    every run.
    """

    def __init__(self, result: SweepResult, optimizer: str | None = None) -> None:
        self.result = result
        self.all_info: Table = result.run_table()
        self.optimizer = optimizer or _reference_optimizer(self.all_info)
        mine = self.all_info.where(optimizer=self.optimizer)
        self.precision = _reference_precision(mine)
        dtype, state, rounding = self.precision
        self.info: Table = mine.where(dtype=dtype, state_dtype=state, rounding=rounding)
        #: Whether the optimizer has an eps (its runs record one); the eps figures need it.
        self.has_eps = bool(len(self.info)) and bool(np.isfinite(self.info["eps"]).all())
        t = result.runs
        ids = t["run"]
        starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]]) if len(t) else np.array([])
        ends = np.r_[starts[1:], len(t)].astype(int)
        self._slices = {int(ids[a]): slice(int(a), int(b)) for a, b in zip(starts, ends)}

    @property
    def dtype_label(self) -> str:
        """The precision of :attr:`info` for a title (``"float32"``, ``"float16, per_op"``)."""
        return _precision_label(*self.precision)

    def steps(self, run: int, column: str) -> tuple[np.ndarray, np.ndarray]:
        sl = self._slices[run]
        return self.result.runs["step"][sl], self.result.runs[column][sl]

    def reference(self, info: Table | None = None) -> dict[str, object]:
        info = self.info if info is None else info
        scenarios = info.unique("scenario")
        scenario = "seed" if "seed" in scenarios else scenarios[0]
        sub = info.where(scenario=scenario)
        modes = sub.unique("eps_mode")
        mode = "outside" if "outside" in modes else modes[0]
        sub = sub.where(eps_mode=mode)
        ams = False if False in sub.unique("amsgrad") else True
        sub = sub.where(amsgrad=ams)
        amax = "raw" if "raw" in sub.unique("amsgrad_max") else sub.unique("amsgrad_max")[0]
        return {"scenario": scenario, "eps_mode": mode, "amsgrad": ams, "amsgrad_max": amax}

    def select(self, **equal: object) -> Table:
        return self.info.where(**equal)

    def first_seed(self, sub: Table) -> Table:
        return sub.where(seed=min(sub.unique("seed"))) if len(sub) else sub


def _finish(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=_DPI)
    return path


def _describe(ref: dict[str, object], dtype: str, seed: int | None = None) -> str:
    parts = [f"scenario {ref['scenario']}", str(dtype)]
    if seed is not None:
        parts.append(f"seed {seed}")
    return ", ".join(parts)


def _loss_panel(ax: Axes, runs: _Runs, sub: Table, colors: dict[float, tuple]) -> bool:
    """Loss curves, one per eps (first seed); a NaN/inf end is marked with an X. Returns whether
    any curve has one."""
    any_bad = False
    for row in sorted(sub.rows(), key=lambda r: r["eps"]):
        steps, loss = runs.steps(row["run"], "loss")
        color = colors[row["eps"]]
        ax.plot(steps, loss, color=color, lw=1.4, label=f"eps={_eps_label(row['eps'])}")
        bad = np.flatnonzero(~np.isfinite(loss))
        if len(bad):
            any_bad = True
            k = bad[0]
            y = loss[k - 1] if k > 0 else loss[np.isfinite(loss)].max(initial=1.0)
            ax.plot(steps[k - 1 if k else 0], y, "X", color=color, ms=9, mec="black", mew=0.6)
    ax.set_yscale("log")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(_loss_label(str(sub["scenario"][0])) if len(sub) else "training loss")
    ax.grid(True, which="major", alpha=0.3)
    return any_bad


def _loss_label(scenario: str) -> str:
    """The loss axis label: the seed problem's MSE for its scenarios, plain for a Problem."""
    builtin = scenario == "seed" or scenario.startswith(("zero_features", "dead_units"))
    return "training loss (MSE, sum over batch)" if builtin else "training loss"


_NAN_HANDLE = Line2D([], [], ls="", marker="X", color="grey", mec="black", ms=9,
                     label="last finite loss before NaN")  # fmt: skip


def plot_loss_curves(
    result: SweepResult, path: str | Path, optimizer: str | None = None
) -> Path | None:
    """Figure 1: loss against step for every eps, one panel for Adam and one for AMSGrad
    (the reference optimizer: Adam if swept; ``None`` if it has no eps)."""
    runs = _Runs(result, optimizer)
    if not runs.has_eps:
        return None
    ref = runs.reference()
    base = runs.select(scenario=ref["scenario"], eps_mode=ref["eps_mode"])
    panels = [(False, "raw", runs.optimizer)]
    if True in base.unique("amsgrad"):
        amax = "raw" if "raw" in base.where(amsgrad=True).unique("amsgrad_max") else None
        amax = amax or base.where(amsgrad=True).unique("amsgrad_max")[0]
        panels.append((True, amax, f"AMSGrad ({amax} max)"))
    panels = [p for p in panels if len(base.where(amsgrad=p[0], amsgrad_max=p[1]))]
    colors = _eps_colors(base.unique("eps"))
    fig = Figure(figsize=(6.2 * len(panels) + 1.6, 4.8), layout="constrained")
    axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    seed = None
    any_bad = False
    for ax, (ams, amax, title) in zip(axes, panels):
        sub = runs.first_seed(base.where(amsgrad=ams, amsgrad_max=amax))
        seed = sub.unique("seed")[0]
        any_bad = _loss_panel(ax, runs, sub, colors) or any_bad
        ax.set_title(title)
    _eps_legend(fig, axes[0], any_bad, f"{runs.optimizer} eps")
    fig.suptitle(
        f"Training loss for each eps ({runs.optimizer}, eps {ref['eps_mode']}; "
        f"{_describe(ref, runs.dtype_label, seed)})"
    )
    return _finish(fig, Path(path))


def _eps_legend(fig: Figure, ax: Axes, any_bad: bool, title: str) -> None:
    """A legend right of the figure from ``ax``'s curves, plus the NaN marker if a run has it."""
    handles, labels = ax.get_legend_handles_labels()
    if any_bad:
        handles.append(_NAN_HANDLE)
        labels.append(_NAN_HANDLE.get_label())
    fig.legend(handles, labels, loc="outside right center", fontsize=8, title=title)


def _eps_axis(ax: Axes, eps_values: Sequence[float]) -> dict[float, float]:
    """Log-x positions for eps; 0 goes 1.5 decades left of the smallest eps > 0, past a break."""
    pos = sorted(e for e in eps_values if e > 0)
    smallest = pos[0] if pos else 1e-8
    zero_x = smallest / 10**2.5
    where = {e: (e if e > 0 else zero_x) for e in eps_values}
    ax.set_xscale("log")
    ticks = sorted(where.values())
    decade_ticks = [x for x in ticks if x > zero_x]
    if len(decade_ticks) > 8:
        decade_ticks = decade_ticks[:: math.ceil(len(decade_ticks) / 8)]
    shown = ([zero_x] if 0 in where else []) + decade_ticks
    ax.set_xticks(shown)
    ax.set_xticklabels(["0" if x == zero_x and 0 in where else _eps_label(x) for x in shown])
    ax.minorticks_off()
    if 0 in where:
        brk = zero_x * 10**1.0
        trans = blended_transform_factory(ax.transData, ax.transAxes)
        ax.plot([brk, brk], [-0.02, 0.02], color="black", lw=1.2, transform=trans, clip_on=False)
        ax.text(brk, 0.0, "//", transform=trans, ha="center", va="center", fontsize=11,
                backgroundcolor="white", clip_on=False)  # fmt: skip
        ax.axvspan(zero_x / 10**0.4, zero_x * 10**0.4, color="0.93", zorder=0)
    return where


def _final_by_variant(runs: _Runs, sub: Table) -> dict[tuple, list[dict]]:
    groups: dict[tuple, list[dict]] = {}
    for row in sub.rows():
        groups.setdefault((row["eps_mode"], row["amsgrad"], row["amsgrad_max"]), []).append(row)
    return groups


def plot_final_loss(
    result: SweepResult, path: str | Path, max_panels: int = 3, optimizer: str | None = None
) -> Path | None:
    """Figure 2: final loss against eps per variant (reference eps_mode), one panel per scenario
    (up to ``max_panels``, ``seed`` first): median over seeds as a line, min..max over seeds as a
    band, runs that ended NaN/inf as X markers at the top of the panel."""
    from matplotlib import colormaps

    runs = _Runs(result, optimizer)
    if not runs.has_eps:
        return None
    ref = runs.reference()
    scenarios = runs.info.unique("scenario")
    scenarios = sorted(scenarios, key=lambda s: (s != "seed", s))[:max_panels]
    fig = Figure(figsize=(5.6 * len(scenarios) + 3.4, 5.0), layout="constrained")
    axes = fig.subplots(1, len(scenarios), squeeze=False, sharey=True)[0]
    palette = colormaps["tab10"]
    any_diverged = many_seeds = False
    drawn: list[float] = []  # every finite value drawn (medians and band edges), for the y range
    for ax, scenario in zip(axes, scenarios):
        sub = runs.select(scenario=scenario, eps_mode=ref["eps_mode"])
        if not len(sub):
            sub = runs.select(scenario=scenario)
        eps_values = sub.unique("eps")
        where = _eps_axis(ax, eps_values)
        trans = blended_transform_factory(ax.transData, ax.transAxes)
        for k, (variant, rows) in enumerate(sorted(_final_by_variant(runs, sub).items())):
            color = palette(k % 10)
            y_mark = 0.95 - 0.04 * k
            xs, med, lo, hi = [], [], [], []
            for e in eps_values:
                finals = np.array([r["final_loss"] for r in rows if r["eps"] == e])
                good = finals[np.isfinite(finals)]
                n_bad = len(finals) - len(good)
                if n_bad:
                    any_diverged = True
                    ax.plot(where[e], y_mark, "X", ms=10, color=color, mec="black", mew=0.7,
                            transform=trans, clip_on=False)  # fmt: skip
                    ax.annotate(f"{n_bad}/{len(finals)} NaN", (where[e], y_mark),
                                xycoords=trans, xytext=(9, 0), textcoords="offset points",
                                color=color, fontsize=7, va="center")  # fmt: skip
                if len(good):
                    xs.append(where[e])
                    med.append(np.median(good))
                    lo.append(good.min())
                    hi.append(good.max())
            drawn += lo + hi
            n_seeds = len({r["seed"] for r in rows})
            many_seeds = many_seeds or n_seeds > 1
            label = _variant_name(*variant, runs.optimizer)
            if n_seeds > 1:
                label += f" (median of {n_seeds} seeds)"
            marker, ls = "os^D"[k % 4], ("-", "--", "-.", ":")[k % 4]
            ax.plot(xs, med, marker=marker, ls=ls, color=color, ms=5, lw=1.8, label=label,
                    mfc="none" if k % 2 else color)  # fmt: skip
            if n_seeds > 1 and len(xs) > 1:
                ax.fill_between(xs, lo, hi, color=color, alpha=0.2, lw=0)
            elif n_seeds > 1:  # one eps: the band is a bar
                ax.vlines(xs, lo, hi, color=color, alpha=0.35, lw=8)
        ax.set_yscale("log")
        xs_all = sorted(where.values())
        ax.set_xlim(xs_all[0] / 10**0.6, xs_all[-1] * 10**0.6)  # no point on the frame
        where_zero = "; 0 at the left, past the break" if 0 in where else ""
        ax.set_xlabel(f"eps (log scale{where_zero})")
        ax.grid(True, alpha=0.3)
        ax.set_title(f"scenario {scenario}")
    # y: from half a decade below the lowest value drawn to half a decade above the highest (more
    # when NaN/inf markers sit at the top); the axes share y.
    positive = [v for v in drawn if v > 0]  # a log axis cannot show a loss of exactly 0
    low, high = (min(positive), max(positive)) if positive else (1.0, 1.0)
    axes[0].set_ylim(low / 10**0.5, high * (10**2.5 if any_diverged else 10**0.5))
    axes[0].set_ylabel(f"loss after the last step ({int(runs.info['steps'][0])} steps)")
    handles, labels = axes[0].get_legend_handles_labels()
    if many_seeds:
        handles.append(_band_patch("0.6", "min to max over seeds"))
        labels.append("min to max over seeds")
    if any_diverged:
        handles.append(Line2D([], [], ls="", marker="X", color="grey", mec="black", ms=9))
        labels.append("runs that ended NaN/inf (at the top)")
    fig.legend(handles, labels, fontsize=8, loc="outside right center")
    fig.suptitle(
        f"Final loss against eps ({runs.optimizer}, eps {ref['eps_mode']}; "
        f"{runs.dtype_label}, "
        f"lr {runs.info['lr'][0]:g})"
    )
    return _finish(fig, Path(path))


def _band_patch(color: str, label: str) -> Patch:
    return Patch(color=color, alpha=0.4, label=label)


def plot_eps_dominated(
    result: SweepResult, path: str | Path, optimizer: str | None = None
) -> Path | None:
    """Figure 3: fraction of coordinates whose eps term dominates, against step, per eps."""
    runs = _Runs(result, optimizer)
    if not runs.has_eps:
        return None
    ref = runs.reference()
    sub = runs.first_seed(runs.select(**ref))
    compared = sub["eps_compared_with"][0] if len(sub) else ""
    eps_values = [e for e in sub.unique("eps") if e > 0] if compared else []
    if not eps_values:
        return None
    colors = _eps_colors(sub.unique("eps"))
    fig = Figure(figsize=(9.0, 4.8), layout="constrained")
    ax = fig.subplots()
    for row in sorted(sub.rows(), key=lambda r: r["eps"]):
        steps, frac = runs.steps(row["run"], "eps_dominated")
        ax.plot(steps, 100 * frac, color=colors[row["eps"]], lw=1.5,
                label=f"eps={_eps_label(row['eps'])}")  # fmt: skip
    ax.set_ylim(-3, 103)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(f"coordinates with eps >= {compared} (%)")
    ax.grid(True, alpha=0.3)
    fig.legend(fontsize=8, loc="outside right center", title=f"{runs.optimizer} eps")
    name = "AMSGrad" if ref["amsgrad"] else runs.optimizer
    ax.set_title(
        f"Where eps dominates the denominator ({name}, eps {ref['eps_mode']}; "
        f"{_describe(ref, runs.dtype_label, sub['seed'][0])})"
    )
    return _finish(fig, Path(path))


def plot_variants(
    result: SweepResult, path: str | Path, optimizer: str | None = None
) -> Path | None:
    """Figure 4: loss curves per eps for each eps placement (top row) and each AMSGrad max
    (bottom row), side by side; rows with a single variant are left out."""
    runs = _Runs(result, optimizer)
    if not runs.has_eps:
        return None
    ref = runs.reference()
    base = runs.select(scenario=ref["scenario"])
    modes = base.unique("eps_mode")
    mode_ams = False if False in base.unique("amsgrad") else True
    mode_panels = [
        (m, mode_ams, "raw" if not mode_ams else base.where(eps_mode=m).unique("amsgrad_max")[0])
        for m in (*("outside", "hat", "inside", "atan2"), *sorted(modes))
        if m in modes
    ]
    mode_panels = list(dict.fromkeys(mode_panels))
    ams_base = base.where(eps_mode=ref["eps_mode"], amsgrad=True)
    max_panels = [
        (ref["eps_mode"], True, a)
        for a in ("raw", "corrected", "paper")
        if a in (ams_base.unique("amsgrad_max") if len(ams_base) else [])
    ]
    rows = [r for r in (mode_panels, max_panels) if len(r) > 1]
    if not rows:
        return None
    ncols = max(len(r) for r in rows)
    colors = _eps_colors(base.unique("eps"))
    fig = Figure(figsize=(4.3 * ncols + 1.8, 3.9 * len(rows) + 0.4), layout="constrained")
    axes = fig.subplots(len(rows), ncols, squeeze=False, sharey=True)
    formulas = {
        "outside": "m_hat / (sqrt(v_hat) + eps)",
        "hat": "m_hat / (sqrt(v_hat) + eps/sqrt(bc2))",
        "inside": "m_hat / sqrt(v_hat + eps)",
        "atan2": "1.27 atan2(m_hat, sqrt(v_hat))",
    }
    any_bad = False
    for r, panels in enumerate(rows):
        for c in range(ncols):
            ax = axes[r][c]
            if c >= len(panels):
                ax.set_visible(False)
                continue
            mode, ams, amax = panels[c]
            sub = runs.first_seed(base.where(eps_mode=mode, amsgrad=ams, amsgrad_max=amax))
            any_bad = _loss_panel(ax, runs, sub, colors) or any_bad
            if panels is mode_panels:
                compared = sub["eps_compared_with"][0] if len(sub) else ""
                formula = formulas[mode] if runs.optimizer in ("Adam", "AdamW") and (
                    mode in formulas) else f"eps compared with {compared or 'nothing'}"
                ax.set_title(f"eps {mode}: {formula}", fontsize=9)
            else:
                ax.set_title(f"AMSGrad, max {amax} (eps {mode})", fontsize=9)
            if c:
                ax.set_ylabel("")
    _eps_legend(fig, axes[0][0], any_bad, "eps")
    fig.suptitle(
        f"Where eps goes, and which max AMSGrad keeps ({_describe(ref, runs.dtype_label)}, "
        "first seed)"
    )
    return _finish(fig, Path(path))


def plot_scenario(
    result: SweepResult, path: str | Path, scenario: str, optimizer: str | None = None
) -> Path | None:
    """Figure 5: one scenario's loss and count of NaN/inf parameters for eps = 0 and the smallest
    eps > 0 (eps placement ``outside``), plus ``atan2`` if swept; with a third panel for the
    metric when the scenario is a Problem that records one (e.g. digits' test accuracy)."""
    runs = _Runs(result, optimizer)
    sub = runs.select(scenario=scenario)
    if not len(sub) or not runs.has_eps:
        return None
    sub = runs.first_seed(sub.where(amsgrad=False) if False in sub.unique("amsgrad") else sub)
    picks = []
    outside = sub.where(eps_mode="outside") if "outside" in sub.unique("eps_mode") else sub
    eps_values = outside.unique("eps")
    chosen = ([0.0] if 0.0 in eps_values else []) + (
        [1e-8] if 1e-8 in eps_values else [e for e in eps_values if e > 0][:1]
    )
    for e in chosen:
        picks.extend(outside.where(eps=e).rows()[:1])
    atan = sub.where(eps_mode="atan2")
    if len(atan):
        picks.append(atan.rows()[0])
    if not picks:
        return None
    has_metric = any(np.isfinite(runs.steps(r["run"], "metric")[1]).any() for r in picks)
    fig = Figure(figsize=(18.0 if has_metric else 12.0, 4.8), layout="constrained")
    axes = fig.subplots(1, 3 if has_metric else 2)
    ax_loss, ax_bad = axes[0], axes[1]
    styles = ["-", "--", ":"]
    colors = ["#d62728", "#1f77b4", "#2ca02c"]
    n_params = 0
    for k, row in enumerate(picks):
        label = (
            "atan2 (no eps)"
            if row["eps_mode"] == "atan2"
            else f"eps={_eps_label(row['eps'])} ({row['eps_mode']})"
        )
        steps, loss = runs.steps(row["run"], "loss")
        _, bad = runs.steps(row["run"], "nonfinite")
        color, ls = colors[k % 3], styles[k % 3]
        first_nan = np.flatnonzero(~np.isfinite(loss))
        if len(first_nan):
            label += f": loss NaN from step {steps[first_nan[0]]}"
        ax_loss.plot(steps, loss, ls, color=color, lw=1.8, label=label)
        if len(first_nan):
            j = first_nan[0]
            ax_loss.plot(steps[max(j - 1, 0)], loss[max(j - 1, 0)], "X", color=color, ms=11,
                         mec="black")  # fmt: skip
            ax_loss.axvline(steps[j], color=color, lw=0.8, alpha=0.6)
        ax_bad.plot(steps, bad, ls, color=color, lw=1.8, label=label.split(":")[0])
        first_bad = np.flatnonzero(bad > 0)
        if len(first_bad):
            j = first_bad[0]
            ax_bad.plot(steps[j], bad[j], "o", color=color, ms=7)
            ax_bad.annotate(f"step {steps[j]}: {bad[j]:,} NaN parameters", (steps[j], bad[j]),
                            xytext=(12, -14), textcoords="offset points", fontsize=8,
                            color=color)  # fmt: skip
        n_params = max(n_params, int(bad.max()))
        if has_metric:
            _, metric = runs.steps(row["run"], "metric")
            seen = ~np.isnan(metric)
            axes[2].plot(steps[seen], metric[seen], ls, marker="o", ms=4, color=color, lw=1.8,
                         label=label.split(":")[0])  # fmt: skip
    if has_metric:
        values = np.concatenate([runs.steps(r["run"], "metric")[1] for r in picks])
        _metric_axis(axes[2], _metric_description(result, scenario), values)
    ax_loss.set_yscale("log")
    ax_loss.set_xlabel("optimizer step")
    ax_loss.set_ylabel(_loss_label(scenario))
    ax_loss.set_title("Loss (a NaN loss cannot be drawn: the curve stops, X = last value)")
    ax_loss.legend(fontsize=8)
    ax_loss.grid(True, alpha=0.3)
    ax_bad.set_xlabel("optimizer step")
    ax_bad.set_ylabel("parameters that are NaN or inf (count)")
    ax_bad.set_ylim(-0.05 * max(n_params, 1), 1.25 * max(n_params, 1))
    ax_bad.set_title("Non-finite parameters after each step")
    ax_bad.legend(fontsize=8, loc="center right")
    ax_bad.grid(True, alpha=0.3)
    fig.suptitle(
        f"Scenario {scenario}: zero-gradient coordinates get 0/(0+eps); "
        f"with eps=0 that is 0/0 = NaN ({runs.optimizer}, {runs.dtype_label}, "
        f"seed {sub['seed'][0]})"
    )
    return _finish(fig, Path(path))


def _metric_description(result: SweepResult, scenario: str) -> dict[str, Any]:
    """How to draw a scenario's metric: the sweep's record of its Problem (``metrics.json``),
    else a built-in problem's, else a plain "metric" drawn over the range of its values."""
    described = result.metrics.get(scenario)
    if described is None:
        from minnet.lab.digits import PROBLEMS

        if scenario in PROBLEMS:
            described = PROBLEMS[scenario]().metric_description()
    return described or {"name": "metric", "range": None, "chance": None}


def _metric_axis(ax: Axes, described: dict[str, Any], values: np.ndarray) -> None:
    """Name, range and chance line of the metric panel; the y range always holds every finite
    value drawn (a declared range is widened rather than a value left outside)."""
    name = str(described.get("name") or "metric")
    chance = described.get("chance")
    bounds = described.get("range")
    finite = values[np.isfinite(values)]
    lows = [float(finite.min())] if len(finite) else []
    highs = [float(finite.max())] if len(finite) else []
    if bounds is not None:
        lows.append(float(bounds[0]))
        highs.append(float(bounds[1]))
    if chance is not None:
        lows.append(float(chance))
        highs.append(float(chance))
    low, high = min(lows), max(highs)
    pad = 0.03 * (high - low) if high > low else max(0.05 * abs(high), 0.5)
    ax.set_ylim(low - pad, high + pad)
    title = name
    if chance is not None:
        ax.axhline(float(chance), color="grey", ls="--", lw=1.0,
                   label=f"chance level ({float(chance):.3g})")
        title += f" (dashed: chance level {float(chance):.3g})"
    if len(finite) < int(np.count_nonzero(~np.isnan(values))):
        title += "; inf values not drawn"
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(f"{name} on the evaluation data (end of each epoch)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(True, alpha=0.3)


def _multiplier_counts(mult: Table, run_id: int) -> tuple[np.ndarray, int, int]:
    """Finite-bin counts (over MULTIPLIER_EDGES[1:-1], outer bins folded in), #inf, #NaN."""
    finite_edges = MULTIPLIER_EDGES[1:-1]
    counts = np.zeros(len(finite_edges) - 1)
    n_inf = n_nan = 0
    m = mult.where(run=run_id)
    for lo, count in zip(m["log10_lo"], m["count"]):
        if np.isnan(lo):
            n_nan += int(count)
        elif np.isposinf(lo):
            n_inf += int(count)
        else:
            i = int(np.searchsorted(finite_edges, lo, side="right")) - 1
            counts[min(max(i, 0), len(counts) - 1)] += count
    return counts, n_inf, n_nan


def plot_multipliers(
    result: SweepResult,
    path: str | Path,
    max_eps: int = 5,
    max_panels: int = 2,
    optimizer: str | None = None,
) -> Path | None:
    """Figure 6: histogram over parameters of the end-of-training step multiplier (the
    optimizer's own ``multipliers()``: ``1/(sqrt(v_hat)+eps)`` for Adam) for up to ``max_eps``
    eps values (reference variant, first seed), one panel per scenario (up to ``max_panels``,
    ``seed`` first). ``optimizer``: whose runs (default: the reference optimizer, Adam if
    swept). An optimizer without eps has no multiplier: the figure says so."""
    runs = _Runs(result, optimizer)
    if not len(runs.info):
        return None
    if not runs.has_eps:
        fig = Figure(figsize=(7.0, 2.6), layout="constrained")
        ax = fig.subplots()
        ax.set_axis_off()
        ax.text(0.5, 0.5, f"{runs.optimizer} has no eps, so no step multiplier:\n"
                f"its {len(runs.info)} run(s) have no rows in multipliers.csv",
                ha="center", va="center", fontsize=11, transform=ax.transAxes)  # fmt: skip
        fig.suptitle(f"Per-parameter step multiplier ({runs.optimizer})")
        return _finish(fig, Path(path))
    ref = runs.reference()
    mult = result.multipliers
    if not len(mult):
        return None
    scenarios = sorted(runs.info.unique("scenario"), key=lambda s: (s != "seed", s))
    scenarios = scenarios[:max_panels]
    variant = {k: v for k, v in ref.items() if k != "scenario"}
    compared = runs.select(**ref)["eps_compared_with"][0]
    # eps added to a root-mean-square (not to a squared quantity) caps the multiplier at 1/eps.
    cap_line = compared.startswith("sqrt") or compared in ("|g|", "u")
    finite_edges = MULTIPLIER_EDGES[1:-1]
    inf_x = finite_edges[-1] + 1.0
    fig = Figure(figsize=(7.0 * len(scenarios) + 2.4, 5.0), layout="constrained")
    axes = fig.subplots(1, len(scenarios), squeeze=False, sharey=True)[0]
    lo_edge, hi_edge, any_inf = np.inf, -np.inf, False
    styles = ["-", "--", "-.", ":", (0, (5, 1))]
    for ax, scenario in zip(axes, scenarios):
        sub = runs.first_seed(runs.select(scenario=scenario, **variant))
        if not len(sub):
            ax.set_visible(False)
            continue
        eps_all = sub.unique("eps")
        colors = _eps_colors(eps_all)
        preferred = [0.0, 1e-8, 1e-4, 1e-2, 1.0, 100.0]
        chosen = [e for e in preferred if e in eps_all][:max_eps]
        if len(chosen) < min(max_eps, len(eps_all)):
            rest = [e for e in eps_all if e not in chosen]
            idx = np.linspace(0, len(rest) - 1, min(len(rest), max_eps - len(chosen)))
            chosen = sorted(set(chosen) | {rest[int(i)] for i in idx})
        for j, e in enumerate(chosen):
            counts, n_inf, n_nan = _multiplier_counts(mult, int(sub.where(eps=e)["run"][0]))
            nz = np.flatnonzero(counts)
            if len(nz):
                lo_edge = min(lo_edge, finite_edges[nz[0]])
                hi_edge = max(hi_edge, finite_edges[nz[-1] + 1])
            label = f"eps={_eps_label(e)}"
            extra = [f"{n_inf:,} inf"] * bool(n_inf) + [f"{n_nan:,} NaN"] * bool(n_nan)
            if extra:
                label += " (" + ", ".join(extra) + ")"
            ax.stairs(counts, finite_edges, color=colors[e], lw=2.6 - 0.4 * j,
                      ls=styles[j % len(styles)], label=label)  # fmt: skip
            if n_inf:
                any_inf = True
                ax.bar(inf_x, n_inf, width=0.5, color=colors[e], alpha=0.8)
            if e > 0 and cap_line:
                hi_edge = max(hi_edge, -math.log10(e))
                ax.axvline(-math.log10(e), color=colors[e], ls=":", lw=1)
        ax.set_title(f"scenario {scenario}")
        ax.set_xlabel(f"log10 of the step multiplier (1 / denominator; eps vs {compared})")
        ax.grid(True, alpha=0.3)
        h, lab = ax.get_legend_handles_labels()
        if cap_line:
            h.append(Line2D([], [], color="grey", ls=":"))
            lab.append("1/eps (the largest multiplier)")
        ax.legend(h, lab, fontsize=8, title=f"{runs.optimizer} eps", loc="upper right")
    left = (lo_edge - 0.5) if np.isfinite(lo_edge) else -1
    right = inf_x + 0.7 if any_inf else hi_edge + 0.7
    ticks = list(range(math.ceil(left), math.floor(min(right, hi_edge + 0.5)) + 1))
    if len(ticks) > 12:
        ticks = ticks[:: math.ceil(len(ticks) / 12)]
    for ax in axes:
        ax.set_xlim(left, right)
        ax.set_yscale("log")
        ax.set_ylim(0.7, 100 * max(int(result.multipliers["count"].max()), 1))  # legend room
        if any_inf:
            ax.set_xticks([*ticks, inf_x], [str(t) for t in ticks] + ["inf\n(1/0)"])
        else:
            ax.set_xticks(ticks, [str(t) for t in ticks])
    axes[0].set_ylabel("parameters (count, log scale)")
    name = "AMSGrad" if ref["amsgrad"] else runs.optimizer
    fig.suptitle(
        f"Per-parameter step multiplier after the last step ({name}, eps {ref['eps_mode']}; "
        f"{runs.dtype_label}, first seed)"
    )
    return _finish(fig, Path(path))


def plot_all(result: SweepResult, out_dir: str | Path) -> list[Path]:
    """Draw every figure the sweep can show into ``out_dir``; return the paths written.

    The one-optimizer figures (loss curves, final loss, eps-dominated, variants, multipliers,
    scenarios) are drawn for every optimizer of the sweep: the reference one (Adam if swept)
    under the names of :data:`PLOT_FILES`, each other one with its name appended
    (``loss_curves_rmsprop.png``). Optimizers without eps have none of the eps figures; a
    ``UserWarning`` names them (their runs are in ``eps_atlas.png``).
    """
    import warnings

    out = Path(out_dir)
    info = result.run_table()
    optimizers = _optimizer_order(info.unique("optimizer")) if len(info) else []
    reference = _reference_optimizer(info) if len(info) else None
    scenarios = [s for s in (info.unique("scenario") if len(info) else []) if s != "seed"]
    paths: list[Path | None] = []
    more: list[Path | None] = []
    without_eps = []
    for name in [reference, *(o for o in optimizers if o != reference)] if reference else []:
        suffix = "" if name == reference else f"_{name.lower()}"

        def file(stem: str, suffix: str = suffix) -> Path:
            return out / f"{stem.removesuffix('.png')}{suffix}.png"

        drawn = [
            plot_loss_curves(result, file(PLOT_FILES["loss_curves"]), optimizer=name),
            plot_final_loss(result, file(PLOT_FILES["final_loss"]), optimizer=name),
            plot_eps_dominated(result, file(PLOT_FILES["eps_dominated"]), optimizer=name),
            plot_variants(result, file(PLOT_FILES["variants"]), optimizer=name),
        ]
        if not _Runs(result, name).has_eps:
            without_eps.append(name)
        mult = [plot_multipliers(result, file(PLOT_FILES["multipliers"]), optimizer=name)]
        scen = [plot_scenario(result, file("scenario_" + s.replace("=", "").replace(",", "_")),
                              s, optimizer=name) for s in scenarios]  # fmt: skip
        (paths if name == reference else more).extend(drawn + mult + scen)
    # The atlas draws every run (or says which it left out): no run is silently unplotted.
    paths.append(plot_eps_atlas(result, out / PLOT_FILES["eps_atlas"]))
    paths.append(plot_eps_lowp(result, out / PLOT_FILES["eps_lowp"]))
    if without_eps:
        warnings.warn(
            f"plot_all: {', '.join(without_eps)} ha{'s' if len(without_eps) == 1 else 've'} no "
            "eps: no loss-curve, final-loss, eps-dominated, variants or scenario figures (the "
            "runs are in eps_atlas.png)", UserWarning, stacklevel=2,
        )  # fmt: skip
    return [p for p in paths + more if p is not None]


# -- the eps atlas: every optimizer and placement ----------------------------------------------

_SCENARIO_STYLES = (("-", "o"), ("--", "s"), (":", "^"), ("-.", "D"))


def _optimizer_order(names: Sequence[str]) -> list[str]:
    order = {m.name: i for i, m in enumerate(FAMILY)}
    return sorted(names, key=lambda n: (order.get(n, len(order)), n))


def atlas_coverage(
    result: SweepResult, max_panels: int = 16, max_scenarios: int = len(_SCENARIO_STYLES)
) -> tuple[list[int], dict[str, list[int]]]:
    """Which runs :func:`draw_eps_atlas` draws, and which it leaves out and why.

    Returns ``(drawn, left_out)``: the run ids drawn, and ``{reason: run ids}`` for the rest
    (optimizers beyond ``max_panels`` panels, scenarios beyond ``max_scenarios`` line styles, a
    final loss that is finite but ``<= 0``, which a log axis cannot show). Every run of the
    sweep is in exactly one of them; the figure states each reason with its count.
    """
    info = result.run_table()
    optimizers = _optimizer_order(info.unique("optimizer")) if len(info) else []
    scenarios = sorted(info.unique("scenario"), key=lambda s: (s != "seed", s)) if len(info) else []
    shown_opt = set(optimizers[:max_panels])
    shown_scen = set(scenarios[:max_scenarios])
    drawn: list[int] = []
    left_out: dict[str, list[int]] = {}
    for row in info.rows():
        if row["optimizer"] not in shown_opt:
            reason = f"optimizers beyond {max_panels} panels ({', '.join(optimizers[max_panels:])})"
        elif row["scenario"] not in shown_scen:
            reason = (f"scenarios beyond {max_scenarios} line styles "
                      f"({', '.join(scenarios[max_scenarios:])})")  # fmt: skip
        elif np.isfinite(row["final_loss"]) and row["final_loss"] <= 0:
            reason = "final loss <= 0 (a log axis cannot show it)"
        else:
            drawn.append(int(row["run"]))
            continue
        left_out.setdefault(reason, []).append(int(row["run"]))
    return drawn, left_out


def _variant_key(row: dict) -> tuple:
    return (row["eps_mode"], row["amsgrad"], row["amsgrad_max"], row["lr"], row["dtype"],
            row["hyperparameters"], row["steps"], row["state_dtype"], row["rounding"])


def _variant_label(key: tuple, vary: set[int]) -> str:
    mode, ams, amax, lr, dtype, hyper, steps, state, rounding = key
    parts = [] if mode == NO_PLACEMENT else [f"eps {mode}"]
    if ams:
        parts.append(f"AMSGrad {amax}")
    for i, text in ((3, f"lr {lr:g}"), (4, str(dtype)), (5, hyper), (6, f"{steps} steps"),
                    (7, f"{state} state"), (8, str(rounding))):  # fmt: skip
        if i in vary:
            parts.append(text)
    return ", ".join(parts) or "its one placement"


def draw_eps_atlas(
    result: SweepResult, max_panels: int = 16, max_scenarios: int = len(_SCENARIO_STYLES)
) -> Figure:
    """The eps atlas as a Figure: final loss against eps, one panel per optimizer, one color per
    placement (and per other setting that varies: lr, dtype, hyperparameters), one line style
    per scenario; the median over seeds. A run that ended NaN/inf is an X at the top of its
    panel at its eps (eps=0 left of the break); an optimizer without eps is a horizontal line.
    The footer counts the runs drawn and names, with counts, any left out
    (:func:`atlas_coverage`)."""
    from matplotlib import colormaps

    info = result.run_table()
    drawn, left_out = atlas_coverage(result, max_panels, max_scenarios)
    keep = np.isin(info["run"], drawn)
    shown = info.where(keep)
    optimizers = _optimizer_order(shown.unique("optimizer")) if len(shown) else []
    scenarios = sorted(shown.unique("scenario"), key=lambda s: (s != "seed", s)) if len(
        shown) else []  # fmt: skip
    eps_all = [e for e in (shown.unique("eps") if len(shown) else []) if np.isfinite(e)]
    ncols = min(4, max(len(optimizers), 1))
    nrows = max(math.ceil(len(optimizers) / ncols), 1)
    fig = Figure(figsize=(4.1 * ncols + 0.4, 3.3 * nrows + 1.5), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=True).ravel()
    palette = colormaps["tab10"]
    finite = shown["final_loss"][np.isfinite(shown["final_loss"])] if len(shown) else []
    positive = [v for v in finite if v > 0]
    low, high = (min(positive), max(positive)) if positive else (1.0, 1.0)
    lrs = {}
    for ax, name in zip(axes, optimizers):
        sub = shown.where(optimizer=name)
        rows = sub.rows()
        keys = sorted({_variant_key(r) for r in rows}, key=str)
        vary = {i for i in range(9) if len({k[i] for k in keys}) > 1}
        lr_values = sorted({r["lr"] for r in rows})
        lrs[name] = lr_values
        has_eps = bool(np.isfinite(sub["eps"]).all())
        where = _eps_axis(ax, eps_all) if eps_all else {}
        trans = blended_transform_factory(ax.transData, ax.transAxes)
        n_nan_marks = 0
        for k, key in enumerate(keys):
            color = palette(k % 10)
            label = _variant_label(key, vary)
            for j, scenario in enumerate(scenarios):
                ls, marker = _SCENARIO_STYLES[j]
                mine = [r for r in rows if _variant_key(r) == key and r["scenario"] == scenario]
                if not mine:
                    continue
                if not has_eps:
                    finals = np.array([r["final_loss"] for r in mine])
                    good = finals[np.isfinite(finals)]
                    if len(good):
                        ax.axhline(np.median(good), color=color, ls=ls, lw=1.8,
                                   label=label if j == 0 else None)  # fmt: skip
                    if len(good) < len(finals):
                        ax.text(0.5, 0.9 - 0.08 * j, f"{scenario}: {len(finals) - len(good)}/"
                                f"{len(finals)} NaN", transform=ax.transAxes, ha="center",
                                color=color, fontsize=7)  # fmt: skip
                    continue
                xs, ys = [], []
                for e in sorted({r["eps"] for r in mine}):
                    finals = np.array([r["final_loss"] for r in mine if r["eps"] == e])
                    good = finals[np.isfinite(finals)]
                    if len(good):
                        xs.append(where[e])
                        ys.append(np.median(good))
                    if len(good) < len(finals):
                        y_mark = 0.96 - 0.045 * (n_nan_marks % 6)
                        ax.plot(where[e], y_mark, marker="X", ms=8, color=color, mec="black",
                                mew=0.6, transform=trans, clip_on=False, ls="")  # fmt: skip
                        if e == 0:
                            ax.annotate("NaN" if scenario == scenarios[0] else f"NaN ({j + 1})",
                                        (where[e], y_mark), xycoords=trans, xytext=(6, 0),
                                        textcoords="offset points", fontsize=6, color=color,
                                        va="center")  # fmt: skip
                if any(r["eps"] in (0.0,) and not np.isfinite(r["final_loss"]) for r in mine):
                    n_nan_marks += 1
                ax.plot(xs, ys, ls=ls, marker=marker, ms=3.5, lw=1.5, color=color,
                        label=label if j == 0 else None)  # fmt: skip
        title = name + (f" (lr {lr_values[0]:g})" if len(lr_values) == 1 else "")
        if not has_eps:
            title += ": no eps"
            ax.text(0.5, 0.05, "no eps: one run per seed,\nno eps_dominated, no multiplier",
                    transform=ax.transAxes, ha="center", fontsize=7, color="0.3")  # fmt: skip
        ax.set_title(title, fontsize=10)
        ax.set_yscale("log")
        if where:
            xs_all = sorted(where.values())
            ax.set_xlim(xs_all[0] / 10**0.6, xs_all[-1] * 10**0.6)
        ax.grid(True, alpha=0.3)
        ax.tick_params(labelsize=7)
        if len(keys) > 1 or (keys and keys[0][0] != NO_PLACEMENT):
            ax.legend(fontsize=6.5, loc="lower left" if has_eps else "upper right")
    for ax in axes[len(optimizers):]:
        ax.set_visible(False)
    axes[0].set_ylim(low / 10**0.5, high * 10**1.5)
    for r in range(nrows):
        axes[r * ncols].set_ylabel("final loss (median over seeds)", fontsize=8)
    style_handles = [Line2D([], [], color="0.3", ls=_SCENARIO_STYLES[j][0],
                            marker=_SCENARIO_STYLES[j][1], ms=4, label=f"({j + 1}) scenario {s}")
                     for j, s in enumerate(scenarios)]  # fmt: skip
    style_handles.append(Line2D([], [], ls="", marker="X", color="grey", mec="black", ms=8,
                                label="ended NaN/inf (at the top, at its eps; "
                                "'NaN (2)': in scenario 2)"))  # fmt: skip
    fig.legend(handles=style_handles, loc="outside lower center", ncols=len(style_handles),
               fontsize=8)  # fmt: skip
    n_seeds = len(shown.unique("seed")) if len(shown) else 0
    steps = shown.unique("steps") if len(shown) else []
    dtypes = shown.unique("dtype") if len(shown) else []
    fig.suptitle(
        "eps atlas: final loss against eps for every optimizer and placement "
        f"({'/'.join(map(str, steps))} steps, {'/'.join(dtypes)}, {n_seeds} seed(s); "
        "lr per optimizer in each title; eps=0 left of the break)",
        fontsize=10,
    )
    note = f"{len(drawn)} of {len(info)} runs drawn."
    if left_out:
        note += " Left out: " + "; ".join(f"{len(ids)} run(s): {reason}"
                                          for reason, ids in left_out.items()) + "."  # fmt: skip
    fig.text(0.01, 0.0, note, fontsize=8, ha="left", va="bottom",
             color="firebrick" if left_out else "0.25")  # fmt: skip
    return fig


def plot_eps_atlas(
    result: SweepResult,
    path: str | Path,
    max_panels: int = 16,
    max_scenarios: int = len(_SCENARIO_STYLES),
) -> Path | None:
    """Figure 7, the eps atlas (see :func:`draw_eps_atlas`), written to ``path``; ``None`` for
    an empty sweep."""
    if not len(result.runs):
        return None
    return _finish(draw_eps_atlas(result, max_panels, max_scenarios), Path(path))


# -- eps in low precision ----------------------------------------------------------------------

#: (color, marker, marker size, line width) per (dtype, state_dtype) of the low-precision
#: figure: recipes that land on the same values (float16 with float16 or float32 state) differ
#: in size, so the one drawn first still shows around the other.
_LOWP_COLORS = {
    ("float32", "float32"): ("black", "o", 6, 1.6),
    ("float64", "float64"): ("0.45", "o", 6, 1.6),
    ("float16", "float16"): ("tab:blue", "o", 10, 3.4),
    ("float16", "float32"): ("tab:green", "D", 5, 1.4),
    ("bfloat16", "bfloat16"): ("tab:orange", "^", 7, 1.6),
    ("bfloat16", "float32"): ("tab:purple", "v", 5, 1.4),
}
#: Line style and whether the marker is filled, per rounding model.
_LOWP_ROUNDING = {"fused": ("-", True), "per_op": ("--", False)}


def _lowp_style(key: tuple[str, str, str], k: int) -> dict[str, object]:
    from matplotlib import colormaps

    dtype, state, rounding = key
    color, marker, size, lw = _LOWP_COLORS.get(
        (dtype, dtype if state == "same" else state), (colormaps["tab10"](k % 10), "s", 6, 1.6)
    )
    ls, filled = _LOWP_ROUNDING.get(rounding, (":", True))
    return {"color": color, "ls": ls, "marker": marker, "ms": size, "lw": lw,
            "mfc": color if filled else "white"}  # fmt: skip


def _n_params(result: SweepResult, run: int) -> int | None:
    """How many parameters run ``run`` has: its multiplier histogram counts every one (None
    for an optimizer without eps, which has no histogram)."""
    mult = result.multipliers
    if not len(mult):
        return None
    total = int(mult["count"][mult["run"] == run].sum())
    return total or None


def plot_eps_lowp(
    result: SweepResult, path: str | Path, eps_steps: float | None = None, max_scenarios: int = 2
) -> Path | None:
    """Figure 8, eps in low precision (:func:`draw_eps_lowp`), written to ``path``; ``None``
    when there is nothing to draw."""
    fig = draw_eps_lowp(result, eps_steps, max_scenarios)
    return None if fig is None else _finish(fig, Path(path))


def draw_eps_lowp(
    result: SweepResult, eps_steps: float | None = None, max_scenarios: int = 2
) -> Figure | None:
    """Eps in low precision as a Figure: the reference optimizer (Adam if swept) in every
    precision of the sweep (dtype, state dtype, rounding model).

    Top row, one panel per scenario (``seed`` first, up to ``max_scenarios``): the final loss
    against eps (median over seeds), one line per precision; a run that ended NaN/inf is an X
    at the top of the panel at its eps, one row of marks per precision. Bottom row, for the
    first scenario and one eps (``eps_steps``; default: 1e-8, PyTorch's default, if swept, else
    the smallest eps > 0): over steps, the share of coordinates whose second moment underflowed
    (``underflow / n_params``) and whose update was lost to rounding (``lost_updates /
    n_params``); a curve stops at the step that made the run NaN/inf (X). ``None`` when the
    sweep has a single precision and it is not 16-bit (the other figures show it) or no eps.
    Scenarios or placements left out are named in the footer.
    """
    runs = _Runs(result)
    every = runs.all_info.where(optimizer=runs.optimizer)
    precisions = _precisions(every)
    low = [p for p in precisions if {p[0], p[1]} & {"float16", "bfloat16"}]
    if not runs.has_eps or not (low or len(precisions) > 1):
        return None
    ref_mode = runs.reference(every)["eps_mode"]
    shown = every.where(eps_mode=ref_mode, amsgrad=False)
    if not len(shown):
        shown = every.where(eps_mode=ref_mode)
    scenarios = sorted(shown.unique("scenario"), key=lambda s: (s != "seed", s))
    left_out = {}
    if len(scenarios) > max_scenarios:
        left_out["scenarios"] = scenarios[max_scenarios:]
        scenarios = scenarios[:max_scenarios]
    n_other = len(every) - len(shown)
    eps_values = [e for e in shown.unique("eps") if np.isfinite(e)]
    positive = [e for e in eps_values if e > 0]
    if eps_steps is None:
        eps_steps = 1e-8 if 1e-8 in eps_values else (positive[0] if positive else eps_values[0])
    fig = Figure(figsize=(max(5.4 * len(scenarios), 10.8) + 3.6, 9.4), layout="constrained")
    grid = fig.add_gridspec(2, max(len(scenarios), 2))
    top = [fig.add_subplot(grid[0, j]) for j in range(len(scenarios))]
    for ax in top[1:]:
        ax.sharey(top[0])
    bottom = [fig.add_subplot(grid[1, 0]), fig.add_subplot(grid[1, 1])]
    styles = {p: _lowp_style(p, k) for k, p in enumerate(precisions)}
    drawn: list[float] = []
    any_nan = False
    for ax, scenario in zip(top, scenarios):
        sub = shown.where(scenario=scenario)
        where = _eps_axis(ax, eps_values)
        trans = blended_transform_factory(ax.transData, ax.transAxes)
        for k, key in enumerate(precisions):
            mine = sub.where(dtype=key[0], state_dtype=key[1], rounding=key[2])
            if not len(mine):
                continue
            st = styles[key]
            xs, ys = [], []
            for e in sorted(mine.unique("eps")):
                finals = mine.where(eps=e)["final_loss"]
                good = finals[np.isfinite(finals)]
                if len(good):
                    xs.append(where[e])
                    ys.append(float(np.median(good)))
                if len(good) < len(finals):
                    any_nan = True
                    ax.plot(where[e], 0.975 - 0.04 * k, "X", ms=8, color=st["color"],
                            mec="black", mew=0.5, transform=trans, clip_on=False)  # fmt: skip
            drawn += ys
            ax.plot(xs, ys, label=_precision_label(*key), **st)
        ax.set_yscale("log")
        xs_all = sorted(where.values())
        ax.set_xlim(xs_all[0] / 10**0.6, xs_all[-1] * 10**0.6)
        ax.grid(True, alpha=0.3)
        ax.set_xlabel("eps (log scale" + ("; 0 at the left, past the break)" if 0 in where
                                          else ")"))  # fmt: skip
        ax.set_title(f"final loss, scenario {scenario}")
        marks = [(x, text) for x, text in ((2.0**-24, "float16 smallest\nsubnormal 6e-8"),
                                           (2.0**-14, "float16 smallest\nnormal 6.1e-5"))
                 if xs_all[0] < x < xs_all[-1]]  # fmt: skip
        if marks:
            for x, _ in marks:
                ax.axvline(x, color="0.5", lw=0.8, ls=":", zorder=0)
            top_axis = ax.secondary_xaxis("top")
            top_axis.set_xticks([x for x, _ in marks], [t for _, t in marks], fontsize=7,
                                color="0.35")  # fmt: skip
            top_axis.minorticks_off()
    finite = [v for v in drawn if v > 0]
    lo, hi = (min(finite), max(finite)) if finite else (1.0, 1.0)
    top[0].set_ylim(lo / 10**0.5, hi * 10 ** (0.5 + 0.15 * len(precisions) * any_nan + 1.0))
    top[0].set_ylabel(f"loss after the last step ({int(shown['steps'][0])} steps)")

    # Bottom row: the stats over steps, first scenario, one eps.
    scenario = scenarios[0]
    sub = shown.where(scenario=scenario, eps=eps_steps)
    sub = sub.where(seed=min(sub.unique("seed"))) if len(sub) else sub
    counts_only = False
    for ax, column, title in (
        (bottom[0], "underflow", "second moments that underflowed to 0 (gradient != 0)"),
        (bottom[1], "lost_updates", "updates lost to rounding (p + delta == p, delta != 0)"),
    ):
        peak = 0.0
        for key in precisions:
            rows = sub.where(dtype=key[0], state_dtype=key[1], rounding=key[2]).rows()
            if not rows:
                continue
            row = rows[0]
            st = styles[key]
            steps, values = runs.steps(row["run"], column)
            n = _n_params(result, row["run"])
            counts_only = counts_only or n is None
            y = values.astype(float) / n * 100 if n else values.astype(float)
            stop = row["first_nonfinite_step"]  # NaN: the run stayed finite
            diverged = bool(np.isfinite(stop))
            if diverged:
                keep = steps <= stop
                steps, y = steps[keep], y[keep]
            ax.plot(steps, y, ls=st["ls"], color=st["color"], lw=st["lw"],
                    drawstyle="steps-post", label=_precision_label(*key))  # fmt: skip
            if diverged:
                ax.plot(steps[-1], y[-1], "X", ms=9, color=st["color"], mec="black", mew=0.6)
                ax.annotate(f"NaN/inf after step {int(stop)}", (steps[-1], y[-1]), fontsize=7,
                            xytext=(8, 4), textcoords="offset points", color=st["color"])
            peak = max(peak, float(np.nanmax(y, initial=0.0)))
        ax.set_xscale("log")
        ax.set_xlabel("optimizer step (log scale)")
        ax.set_ylabel("count" if counts_only else "% of parameters")
        ax.set_title(f"{title}\nscenario {scenario}, eps={_eps_label(eps_steps)}", fontsize=10)
        ax.set_ylim(-0.03 * max(peak, 1e-3), max(peak, 1e-3) * 1.12)
        ax.grid(True, alpha=0.3)
    handles, labels = top[0].get_legend_handles_labels()
    if any_nan:
        handles.append(Line2D([], [], ls="", marker="X", color="grey", mec="black", ms=8))
        labels.append("ended NaN/inf (at the top,\nat its eps; one row per recipe)")
    fig.legend(handles, labels, loc="outside right center", fontsize=8, title_fontsize=8,
               title="parameters, state, rounding\n(fused: PyTorch fused=True;\nper_op: "
               "its default for-loop)")  # fmt: skip
    mode = "" if ref_mode == NO_PLACEMENT else f", eps {ref_mode}"
    fig.suptitle(
        f"eps in low precision ({runs.optimizer}{mode}, lr {shown['lr'][0]:g}): final loss "
        "against eps for each recipe (top), and what 16-bit storage loses over the steps "
        "(bottom)",
        fontsize=10,
    )
    notes = []
    if n_other:
        notes.append(f"{n_other} run(s) of other placements or AMSGrad not drawn (see the other "
                     "figures)")  # fmt: skip
    if left_out:
        notes.append(f"scenarios not drawn: {', '.join(left_out['scenarios'])}")
    if notes:
        fig.text(0.01, 0.0, "; ".join(notes) + ".", fontsize=8, color="firebrick", va="bottom")
    return fig
