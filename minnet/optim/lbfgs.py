r"""L-BFGS (PyTorch's ``torch.optim.LBFGS``): limited-memory BFGS with an optional strong-Wolfe
line search, a faithful port of ``torch/optim/lbfgs.py`` (PyTorch 2.13) over minnet's flat buffer.

L-BFGS is not an element rule: each iteration takes dot products over the whole parameter
vector (the two-loop recursion over the history of steps ``s`` and gradient changes ``y``), and
the line search calls the closure at trial points. So :class:`LBFGS` overrides ``step`` and runs
NumPy dot products on the flat buffer that holds every parameter (``FlatBuffers.data``), in
PyTorch's order of operations: the same iterations, the same tests and the same scalars
(``t``, ``ys``, ``H_diag``, ``ro``, ``al``) as PyTorch computes them, the loss as a Python
float. ``_cubic_interpolate`` and ``_strong_wolfe`` are ported line for line.

There is no eps in the update. Its epsilons are the tolerances, and they only end the loop:
``tolerance_grad`` (stop when ``max |g| <= tolerance_grad``), ``tolerance_change`` (stop when
the directional derivative, the step ``max |t d|`` or the loss change fall below it; the strong
Wolfe zoom stops when its bracket times ``max |d|`` does) and the curvature guard ``ys > 1e-10``
(a pair ``(s, y)`` enters the history only then), which is PyTorch's hard-coded constant, not
an option. None of them is added to or divides anything, so ``eps_compared_with()`` is
``None``, ``multipliers()`` is ``None`` and the lab does not sweep LBFGS.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from minnet import threads as _threads
from minnet.nn import Parameter
from minnet.optim.optimizer import (
    Optimizer,
    OptimizerStats,
    Options,
    check_lr,
    check_nonnegative,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["LBFGS", "cubic_interpolate", "strong_wolfe"]

#: The state-dict entries, PyTorch's names in PyTorch's order.
STATE_KEYS = ("func_evals", "n_iter", "d", "t", "old_dirs", "old_stps", "ro", "H_diag",
              "prev_flat_grad", "prev_loss", "al")  # fmt: skip


def cubic_interpolate(
    x1: Any, f1: Any, g1: Any, x2: Any, f2: Any, g2: Any, bounds: tuple[Any, Any] | None = None
) -> Any:
    """PyTorch's ``_cubic_interpolate``: the minimiser of the cubic through two points with
    values ``f`` and slopes ``g``, clamped to ``bounds`` (default: between the points); the
    bounds' midpoint when the cubic has no real minimiser."""
    if bounds is not None:
        xmin_bound, xmax_bound = bounds
    else:
        xmin_bound, xmax_bound = (x1, x2) if x1 <= x2 else (x2, x1)
    d1 = g1 + g2 - 3 * (f1 - f2) / (x1 - x2)
    d2_square = d1**2 - g1 * g2
    if d2_square >= 0:
        d2 = np.sqrt(d2_square)
        if x1 <= x2:
            min_pos = x2 - (x2 - x1) * ((g2 + d2 - d1) / (g2 - g1 + 2 * d2))
        else:
            min_pos = x1 - (x1 - x2) * ((g1 + d2 - d1) / (g1 - g2 + 2 * d2))
        return min(max(min_pos, xmin_bound), xmax_bound)
    return (xmin_bound + xmax_bound) / 2.0


def strong_wolfe(
    obj_func: Callable[[np.ndarray, Any, np.ndarray], tuple[float, np.ndarray]],
    x: np.ndarray, t: Any, d: np.ndarray, f: float, g: np.ndarray, gtd: Any,
    c1: float = 1e-4, c2: float = 0.9, tolerance_change: float = 1e-9, max_ls: int = 25,
) -> tuple[float, np.ndarray, Any, int]:  # fmt: skip
    """PyTorch's ``_strong_wolfe`` (ported from minFunc's ``lswolfe.lua``): a step ``t`` along
    ``d`` from ``x`` that satisfies the strong Wolfe conditions (sufficient decrease ``c1``,
    curvature ``c2``), by bracketing and cubic zooming, with at most ``max_ls`` evaluations of
    ``obj_func(x, t, d) -> (loss, flat gradient)``. Returns ``(loss, gradient, t, evals)``."""
    d_norm = np.abs(d).max()
    g = g.copy()
    f_new, g_new = obj_func(x, t, d)
    ls_func_evals = 1
    gtd_new = g_new.dot(d)

    # bracket an interval containing a point satisfying the Wolfe criteria
    t_prev, f_prev, g_prev, gtd_prev = 0, f, g, gtd
    done = False
    ls_iter = 0
    while ls_iter < max_ls:
        if f_new > (f + c1 * t * gtd) or (ls_iter > 1 and f_new >= f_prev):
            bracket = [t_prev, t]
            bracket_f = [f_prev, f_new]
            bracket_g = [g_prev, g_new.copy()]
            bracket_gtd = [gtd_prev, gtd_new]
            break
        if abs(gtd_new) <= -c2 * gtd:
            bracket = [t]
            bracket_f = [f_new]
            bracket_g = [g_new]
            done = True
            break
        if gtd_new >= 0:
            bracket = [t_prev, t]
            bracket_f = [f_prev, f_new]
            bracket_g = [g_prev, g_new.copy()]
            bracket_gtd = [gtd_prev, gtd_new]
            break
        # interpolate
        min_step = t + 0.01 * (t - t_prev)
        max_step = t * 10
        tmp = t
        t = cubic_interpolate(t_prev, f_prev, gtd_prev, t, f_new, gtd_new,
                              bounds=(min_step, max_step))  # fmt: skip
        # next step
        t_prev = tmp
        f_prev = f_new
        g_prev = g_new.copy()
        gtd_prev = gtd_new
        f_new, g_new = obj_func(x, t, d)
        ls_func_evals += 1
        gtd_new = g_new.dot(d)
        ls_iter += 1

    # reached max number of iterations?
    if ls_iter == max_ls:
        bracket = [0, t]
        bracket_f = [f, f_new]
        bracket_g = [g, g_new]

    # zoom phase: refine the bracket until a point satisfies the criteria
    insuf_progress = False
    low_pos, high_pos = (0, 1) if bracket_f[0] <= bracket_f[-1] else (1, 0)
    while not done and ls_iter < max_ls:
        # line-search bracket is so small
        if abs(bracket[1] - bracket[0]) * d_norm < tolerance_change:
            break
        # compute new trial value
        t = cubic_interpolate(bracket[0], bracket_f[0], bracket_gtd[0], bracket[1],
                              bracket_f[1], bracket_gtd[1])  # fmt: skip
        # t too close to a boundary: move it 0.1 * len(bracket) away (see PyTorch's comment)
        eps = 0.1 * (max(bracket) - min(bracket))
        if min(max(bracket) - t, t - min(bracket)) < eps:
            if insuf_progress or t >= max(bracket) or t <= min(bracket):
                if abs(t - max(bracket)) < abs(t - min(bracket)):
                    t = max(bracket) - eps
                else:
                    t = min(bracket) + eps
                insuf_progress = False
            else:
                insuf_progress = True
        else:
            insuf_progress = False

        # evaluate new point
        f_new, g_new = obj_func(x, t, d)
        ls_func_evals += 1
        gtd_new = g_new.dot(d)
        ls_iter += 1

        if f_new > (f + c1 * t * gtd) or f_new >= bracket_f[low_pos]:
            # Armijo condition not satisfied or not lower than lowest point
            bracket[high_pos] = t
            bracket_f[high_pos] = f_new
            bracket_g[high_pos] = g_new.copy()
            bracket_gtd[high_pos] = gtd_new
            low_pos, high_pos = (0, 1) if bracket_f[0] <= bracket_f[1] else (1, 0)
        else:
            if abs(gtd_new) <= -c2 * gtd:
                done = True  # Wolfe conditions satisfied
            elif gtd_new * (bracket[high_pos] - bracket[low_pos]) >= 0:
                # old high becomes new low
                bracket[high_pos] = bracket[low_pos]
                bracket_f[high_pos] = bracket_f[low_pos]
                bracket_g[high_pos] = bracket_g[low_pos]
                bracket_gtd[high_pos] = bracket_gtd[low_pos]
            # new point becomes new low
            bracket[low_pos] = t
            bracket_f[low_pos] = f_new
            bracket_g[low_pos] = g_new.copy()
            bracket_gtd[low_pos] = gtd_new

    t = bracket[low_pos]
    f_new = bracket_f[low_pos]
    g_new = bracket_g[low_pos]
    return f_new, g_new, t, ls_func_evals


# -- checks (PyTorch checks lr only; the rest with its message style) ---------------------------


def _check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}: {value!r}")
    if not value >= 1:
        raise ValueError(f"Invalid {name} value: {value}")
    return int(value)


def _check_line_search(value: object) -> str | None:
    if value is not None and value != "strong_wolfe":
        raise ValueError(f"only 'strong_wolfe' is supported, got line_search_fn={value!r}")
    return value  # type: ignore[return-value]


def _scalar(value: Any) -> Any:
    """A state scalar as a Python float (``None`` and PyTorch's int ``H_diag = 1`` kept)."""
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    return float(value)


class LBFGS(Optimizer):
    r"""L-BFGS with PyTorch's exact algorithm (``torch.optim.LBFGS``, PyTorch 2.13), including its
    strong-Wolfe line search.

    ``step(closure)`` runs up to ``max_iter`` iterations; ``closure()`` must recompute the loss
    and the gradients (``zero_grad()``, forward, backward, or assign ``p.grad``) and return the
    loss; ``step`` returns the loss of its first call. With ``x`` the flat vector of every
    parameter and ``g`` its gradient, one iteration (PyTorch's order):

    .. code-block:: text

        first iteration ever:  d = -g,  history empty,  H_diag = 1
        otherwise:             y = g - g_prev,  s = d * t,  ys = y . s
                               if ys > 1e-10: push (y, s, 1/ys) (drop the oldest beyond
                                   history_size), H_diag = ys / (y . y)
                               d = two-loop recursion: q = -g; for i newest..oldest:
                                   al[i] = (s_i . q) * ro_i, q -= al[i] * y_i;
                                   r = q * H_diag; for i oldest..newest:
                                   r += (al[i] - (y_i . r) * ro_i) * s_i;  d = r
        t    = min(1, 1 / sum|g|) * lr on the first iteration ever, else lr
        stop if g . d > -tolerance_change
        line_search_fn=None:          x += t * d, then re-evaluate (not after the last iteration)
        line_search_fn="strong_wolfe": t from the strong-Wolfe search (c1=1e-4, c2=0.9, at most
                                      max_eval - evaluations so far trials), x += t * d
        stop after max_iter iterations, max_eval closure calls, when max|g| <= tolerance_grad,
        when max|t d| <= tolerance_change, or when |loss - prev_loss| < tolerance_change

    and ``step`` returns at once (before any iteration) when the first gradient already has
    ``max|g| <= tolerance_grad``.

    **Where eps sits: nowhere.** L-BFGS's update has no eps: the tolerances are its epsilons,
    and they only decide when to stop (the module docstring lists each, and the fixed
    ``ys > 1e-10`` curvature guard). ``eps_compared_with()`` and ``multipliers()`` are ``None``,
    ``stats.eps_dominated`` is 0, and the lab's eps sweeps do not include it.

    **State** (PyTorch's layout: the whole state is one entry, under the first parameter's
    index): ``func_evals`` and ``n_iter`` (ints, over every step), ``d`` (the latest direction),
    ``t`` (its step length), ``old_dirs`` (the ``y``'s) and ``old_stps`` (the ``s``'s), lists of
    flat arrays oldest first, ``ro`` (``1 / ys`` each), ``H_diag``, ``prev_flat_grad``,
    ``prev_loss`` and ``al`` (the two-loop coefficients, ``history_size`` entries, ``None``
    where unused). Arrays are flat over the parameters in group order; scalars are Python floats
    (PyTorch: 0-d tensors or floats). Loading it resumes bit for bit. Before the first step the
    state is empty.

    **One group, one dtype.** As PyTorch, one parameter group only (``ValueError`` for more, and
    from :meth:`add_param_group`); all parameters share one dtype (float32 or float64: the
    history lives in it), and the arithmetic stays in it (the scalars of a float32 problem are
    float32, as PyTorch's 0-d tensors are). A parameter whose ``grad`` is ``None`` counts as a
    zero gradient (PyTorch's ``_gather_flat_grad``). ``check_finite=True`` refuses, after the
    fact, a step that leaves a parameter non-finite: it puts back the parameters and the state
    as they were before the step and raises ``FloatingPointError`` (the closure has run).
    ``track_stats=True`` records :class:`~minnet.optim.optimizer.OptimizerStats` with
    ``step = n_iter``, ``update_rms`` the RMS of the step's total change of the parameters, and
    ``eps_dominated = 0``.

    Args:
        params: iterable of :class:`minnet.nn.Parameter` (or one dict group).
        lr: learning rate (the step length without line search, and the line search's first
            trial), ``>= 0``. Default ``1``.
        max_iter: iterations per :meth:`step`, ``>= 1``. Default ``20``.
        max_eval: closure calls per :meth:`step`; ``None``: ``max_iter * 5 // 4`` (stored so in
            the group, as PyTorch). Default ``None``.
        tolerance_grad: stop when ``max|g| <= tolerance_grad``, ``>= 0``. Default ``1e-7``.
        tolerance_change: stop on a smaller directional derivative, step or loss change,
            ``>= 0``. Default ``1e-9``.
        history_size: pairs ``(s, y)`` kept, ``>= 1``. Default ``100``.
        line_search_fn: ``None`` or ``"strong_wolfe"``. Default ``None``.
        track_stats, check_finite: above. ``state_dtype`` must stay ``None`` and ``rounding``
            does not apply (no 16-bit buffers). PyTorch's LBFGS has no
            ``foreach``/``fused``/``capturable``/``differentiable``, so neither does this class.

    Raises:
        ValueError: on an invalid hyperparameter (PyTorch's ``Invalid learning rate: {lr}``;
            NaN is rejected), on a second parameter group or mixed dtypes.
        TypeError: on a hyperparameter of the wrong type, or ``step()`` without a closure.
    """

    _supports_lowp = False

    def __init__(
        self,
        params: Iterable[Parameter] | Iterable[dict[str, Any]],
        lr: float = 1,
        max_iter: int = 20,
        max_eval: int | None = None,
        tolerance_grad: float = 1e-7,
        tolerance_change: float = 1e-9,
        history_size: int = 100,
        line_search_fn: str | None = None,
        **options: Unpack[Options],
    ) -> None:
        if max_eval is None and isinstance(max_iter, numbers.Integral):
            max_eval = max_iter * 5 // 4
        defaults = dict(lr=lr, max_iter=max_iter, max_eval=max_eval,
                        tolerance_grad=tolerance_grad, tolerance_change=tolerance_change,
                        history_size=history_size, line_search_fn=line_search_fn)  # fmt: skip
        super().__init__(params, defaults, **options)
        if len(self.param_groups) != 1:
            raise ValueError("LBFGS doesn't support per-parameter options (parameter groups)")
        flats = self._flats[0]
        if len(flats) != 1:
            dtypes = sorted(str(f.dtype) for f in flats)
            raise ValueError(f"LBFGS: every parameter must have one dtype (its history lives in "
                             f"it), got {dtypes}")  # fmt: skip
        self._flat = flats[0]
        self._state: dict[str, Any] = {}

    checks = {
        "lr": check_lr,
        "max_iter": lambda v: _check_positive_int("max_iter", v),
        "max_eval": lambda v: _check_positive_int("max_eval", v),
        "tolerance_grad": lambda v: check_nonnegative("tolerance_grad", v),
        "tolerance_change": lambda v: check_nonnegative("tolerance_change", v),
        "history_size": lambda v: _check_positive_int("history_size", v),
        "line_search_fn": _check_line_search,
    }

    def _state_spec(self, group: Mapping[str, Any]) -> dict[str, float]:
        return {}  # no per-coordinate state in the flat buffers: the history is global

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Refused, as PyTorch: LBFGS has one parameter group."""
        raise ValueError("LBFGS doesn't support per-parameter options (parameter groups)")

    @property
    def step_count(self) -> int:
        """The iterations so far (the state's ``n_iter``)."""
        return int(self._state.get("n_iter", 0))

    def multipliers(self) -> None:
        """``None``: L-BFGS has no eps (module docstring)."""
        return None

    # -- the flat vector ----------------------------------------------------------------------

    def _gather_flat_grad(self) -> np.ndarray:
        """A copy of the flat gradient (a ``None`` gradient's place holds zeros)."""
        return self._flat.grad.copy()

    def _add_grad(self, step_size: Any, update: np.ndarray) -> None:
        """``x += step_size * update`` in place (PyTorch's ``p.add_(update, alpha=t)``)."""
        data = self._flat.data
        data += step_size * update

    def _directional_evaluate(
        self, closure: Callable[[], Any], x: np.ndarray, t: Any, d: np.ndarray
    ) -> tuple[float, np.ndarray]:
        self._add_grad(t, d)
        loss = float(closure())
        flat_grad = self._gather_flat_grad()
        self._flat.data[...] = x
        return loss, flat_grad

    # -- the step -------------------------------------------------------------------------------

    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """Up to ``max_iter`` L-BFGS iterations (class docstring); returns the loss of the first
        ``closure()`` call."""
        if closure is None:
            raise TypeError("LBFGS.step() needs a closure that recomputes the loss and the "
                            "gradients and returns the loss (step(closure))")  # fmt: skip
        _threads.tick()
        with np.errstate(all="ignore"):  # NaN and inf pass silently, as in PyTorch
            return self._step(closure)

    def _step(self, closure: Callable[[], Any]) -> Any:
        self._sync_groups()
        if len(self.param_groups) != 1:
            raise ValueError("LBFGS doesn't support per-parameter options (parameter groups)")
        if self._snapshot(self.param_groups[0]) != self._checked[0]:
            self._revalidate(0)
        self._flat.check_bound()
        group = self.param_groups[0]
        lr = group["lr"]
        max_iter = group["max_iter"]
        max_eval = group["max_eval"]
        tolerance_grad = group["tolerance_grad"]
        tolerance_change = group["tolerance_change"]
        line_search_fn = group["line_search_fn"]
        history_size = group["history_size"]

        x_start = self._flat.data.copy() if (self.check_finite or self.track_stats) else None
        saved = self._copy_state() if self.check_finite else None
        state = self._state
        state.setdefault("func_evals", 0)
        state.setdefault("n_iter", 0)

        # evaluate initial f(x) and df/dx
        orig_loss = closure()
        loss = float(orig_loss)
        current_evals = 1
        state["func_evals"] += 1

        flat_grad = self._gather_flat_grad()
        opt_cond = np.abs(flat_grad).max() <= tolerance_grad
        if opt_cond:  # optimal condition
            self._finish(x_start, saved)
            return orig_loss

        d = state.get("d")
        t = state.get("t")
        old_dirs = state.get("old_dirs")
        old_stps = state.get("old_stps")
        ro = state.get("ro")
        H_diag = state.get("H_diag")
        prev_flat_grad = state.get("prev_flat_grad")
        prev_loss = state.get("prev_loss")

        n_iter = 0
        while n_iter < max_iter:
            n_iter += 1
            state["n_iter"] += 1

            # compute gradient descent direction
            if state["n_iter"] == 1:
                d = -flat_grad
                old_dirs = []
                old_stps = []
                ro = []
                H_diag = 1
            else:
                # do lbfgs update (update memory)
                y = flat_grad - prev_flat_grad
                s = d * t
                ys = y.dot(s)  # y*s
                if ys > 1e-10:
                    if len(old_dirs) == history_size:  # shift history by one
                        old_dirs.pop(0)
                        old_stps.pop(0)
                        ro.pop(0)
                    old_dirs.append(y)
                    old_stps.append(s)
                    ro.append(1.0 / ys)
                    H_diag = ys / y.dot(y)  # (y*y)

                # the approximate inverse Hessian times the gradient (two-loop recursion)
                num_old = len(old_dirs)
                if "al" not in state:
                    state["al"] = [None] * history_size
                al = state["al"]
                q = -flat_grad
                for i in range(num_old - 1, -1, -1):
                    al[i] = old_stps[i].dot(q) * ro[i]
                    q += -al[i] * old_dirs[i]
                d = r = q * H_diag
                for i in range(num_old):
                    be_i = old_dirs[i].dot(r) * ro[i]
                    r += (al[i] - be_i) * old_stps[i]

            prev_flat_grad = flat_grad.copy()
            prev_loss = loss

            # compute step length
            if state["n_iter"] == 1:
                t = min(1.0, 1.0 / np.abs(flat_grad).sum()) * lr
            else:
                t = lr

            # directional derivative
            gtd = flat_grad.dot(d)  # g * d
            if gtd > -tolerance_change:  # directional derivative is below tolerance
                break

            ls_func_evals = 0
            if line_search_fn is not None:
                x_init = self._flat.data.copy()

                def obj_func(x: np.ndarray, t: Any, d: np.ndarray) -> tuple[float, np.ndarray]:
                    return self._directional_evaluate(closure, x, t, d)

                loss, flat_grad, t, ls_func_evals = strong_wolfe(
                    obj_func, x_init, t, d, loss, flat_grad, gtd,
                    max_ls=max_eval - current_evals,
                )  # fmt: skip
                self._add_grad(t, d)
                opt_cond = np.abs(flat_grad).max() <= tolerance_grad
            else:
                # no line search, simply move with fixed-step
                self._add_grad(t, d)
                if n_iter != max_iter:
                    # re-evaluate the function only if not in the last iteration
                    loss = float(closure())
                    flat_grad = self._gather_flat_grad()
                    opt_cond = np.abs(flat_grad).max() <= tolerance_grad
                    ls_func_evals = 1

            current_evals += ls_func_evals
            state["func_evals"] += ls_func_evals

            # check conditions
            if n_iter == max_iter:
                break
            if current_evals >= max_eval:
                break
            if opt_cond:  # optimal condition
                break
            if np.abs(d * t).max() <= tolerance_change:  # lack of progress
                break
            if abs(loss - prev_loss) < tolerance_change:
                break

        state["d"] = d
        state["t"] = t
        state["old_dirs"] = old_dirs
        state["old_stps"] = old_stps
        state["ro"] = ro
        state["H_diag"] = H_diag
        state["prev_flat_grad"] = prev_flat_grad
        state["prev_loss"] = prev_loss
        self._finish(x_start, saved)
        return orig_loss

    def _copy_state(self) -> dict[str, Any]:
        """A copy of the state that the step cannot change (lists copied; arrays are never
        written in place)."""
        return {k: list(v) if isinstance(v, list) else v for k, v in self._state.items()}

    def _finish(self, x_start: np.ndarray | None, saved: dict[str, Any] | None) -> None:
        """``check_finite``'s refusal (parameters and state put back) and ``track_stats``."""
        data = self._flat.data
        if saved is not None and x_start is not None and not np.isfinite(data).all():
            bad = ~np.isfinite(data)
            names = []
            for p, off, size in zip(self._flat.params, self._flat.offsets, self._flat.sizes):
                n = int(bad[off : off + size].sum())
                if n:
                    names.append(f"{p.name or '?'} ({n} of {size} elements)")
            data[...] = x_start
            self._state = saved
            step = int(saved.get("n_iter", 0)) + 1
            raise FloatingPointError(
                f"LBFGS (check_finite=True): the step from iteration {step} would make "
                f"parameters non-finite: {', '.join(names)}. Likely cause: a NaN or infinite "
                "loss or gradient from the closure, or a step too long (lower lr or use "
                "line_search_fn='strong_wolfe'). Parameters and optimizer state are unchanged "
                "(the closure has run)."
            )
        if self.track_stats and x_start is not None:
            n = data.size
            change = data.astype(np.float64) - x_start
            self.stats = OptimizerStats(
                self.step_count, 0.0, int((~np.isfinite(data)).sum()),
                math.sqrt(float(change.dot(change)) / n) if n else 0.0, n,
            )  # fmt: skip

    # -- state dicts ----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """PyTorch's layout: ``{"state": {0: {func_evals, n_iter, d, t, old_dirs, old_stps, ro,
        H_diag, prev_flat_grad, prev_loss, al}}, "param_groups": [{..., "params": [0, ...]}]}``
        (the state under the first parameter, empty before the first step), as copies."""
        group = {k: v for k, v in self.param_groups[0].items() if k != "params"}
        group["params"] = list(range(len(self.param_groups[0]["params"])))
        state: dict[int, dict[str, Any]] = {}
        if self._state:
            entry: dict[str, Any] = {}
            for key in STATE_KEYS:
                if key not in self._state:
                    continue
                value = self._state[key]
                if key in ("func_evals", "n_iter"):
                    entry[key] = int(value)
                elif isinstance(value, np.ndarray):
                    entry[key] = value.copy()
                elif isinstance(value, list):
                    entry[key] = [v.copy() if isinstance(v, np.ndarray) else _scalar(v)
                                  for v in value]  # fmt: skip
                else:
                    entry[key] = _scalar(value)
            state[0] = entry
        return {"state": state, "param_groups": [group]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a :meth:`state_dict` (or PyTorch's, converted to NumPy): options and the whole
        state; everything is checked before anything is written."""
        if not isinstance(state_dict, dict) or set(state_dict) != {"state", "param_groups"}:
            raise ValueError("LBFGS.load_state_dict expects keys ['param_groups', 'state']")
        groups = state_dict["param_groups"]
        if not isinstance(groups, (list, tuple)) or len(groups) != 1:
            raise ValueError("LBFGS doesn't support per-parameter options (parameter groups)")
        saved = groups[0]
        n = len(self.param_groups[0]["params"])
        if len(saved.get("params", ())) != n:
            raise ValueError(f"loaded state dict has {len(saved.get('params', ()))} parameters, "
                             f"this optimizer has {n}")  # fmt: skip
        self._refuse_other_options(saved)
        candidate = {k: saved.get(k, self.defaults[k]) for k in self._keys}
        hp = self._validate(candidate)
        entries = state_dict["state"]
        entry = dict(next(iter(entries.values()))) if entries else {}
        extra = sorted(set(entry) - set(STATE_KEYS))
        if extra:
            raise ValueError(f"loaded LBFGS state has {extra}, which LBFGS does not keep")
        dtype = self._flat.dtype
        size = self._flat.size

        def array(key: str, value: Any) -> np.ndarray:
            arr = np.asarray(value)
            if arr.shape != (size,):
                raise ValueError(f"loaded '{key}' has shape {arr.shape}, expected ({size},)")
            return arr.astype(dtype)

        def scalar(value: Any) -> Any:
            return None if value is None else dtype.type(value)

        new: dict[str, Any] = {}
        for key, value in entry.items():
            if key in ("func_evals", "n_iter"):
                new[key] = int(value)
            elif key in ("d", "prev_flat_grad"):
                new[key] = None if value is None else array(key, value)
            elif key in ("old_dirs", "old_stps"):
                new[key] = [array(key, v) for v in value]
            elif key in ("ro", "al"):
                new[key] = [scalar(v) for v in value]
            elif key == "prev_loss":
                new[key] = None if value is None else float(value)
            elif key == "H_diag" and isinstance(value, numbers.Integral):
                new[key] = int(value)  # the first iterations' 1, an int as in PyTorch
            else:
                new[key] = scalar(value)
        group = self.param_groups[0]
        params = group["params"]
        group.clear()
        group.update({k: v for k, v in saved.items() if k != "params"})
        group.update(hp)
        group["params"] = params
        self._checked[0] = self._snapshot(group)
        self._valid[0] = {k: group[k] for k in self._keys}
        self._state = new
        self.stats = None
