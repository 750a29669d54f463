r"""Schedule-Free AdamW (Defazio et al. 2024, "The Road Less Scheduled"): the class, its element
rule and a plain-NumPy reference, side by side. Keras 3's ``keras.optimizers.ScheduleFreeAdamW``
(``variant="keras"``) and optax 0.2.8's ``optax.contrib.schedule_free_adamw``
(``variant="optax"``, the default).

Schedule-free training keeps three sequences: ``z`` (where the Adam-like steps without momentum
go), ``x`` (a weighted average of the ``z``; the point to evaluate the model at) and ``y =
(1 - beta1) * z + beta1 * x`` (where the gradient is taken). The parameters hold ``y`` while
training; the state holds ``z`` and the second moment, and ``x`` is recomputed from ``y`` and
``z`` at every step (``x = (y - (1 - beta1) * z) / beta1``), as both libraries and the authors'
``schedulefree`` package do. :meth:`ScheduleFreeAdamW.eval` turns the parameters into ``x``
and :meth:`ScheduleFreeAdamW.train` back into ``y`` (the ``schedulefree`` package's API); the
mode is each parameter group's ``"train_mode"``, so it is in the state dict. The update and the
differences between the two libraries are in :class:`ScheduleFreeAdamW`'s docstring.

16-bit storage: ``rounding="fused"`` computes the step in float32 and rounds each stored value
once. ``rounding="per_op"`` is refused: it means PyTorch's op-by-op rounding, and PyTorch has no
schedule-free optimizer.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from minnet.nn import Parameter
from minnet.optim._kernel import Rule, element, sqrt_plus_eps
from minnet.optim.optimizer import (
    Optimizer,
    Options,
    cast_scalars,
    check_betas,
    check_choice,
    check_eps,
    check_lr,
    check_nonnegative,
    check_real,
    check_weight_decay,
)

if TYPE_CHECKING:
    from typing_extensions import Unpack

__all__ = ["ScheduleFreeAdamW", "SCHEDULE_FREE_VARIANTS"]

#: The libraries whose formula ``variant`` selects.
SCHEDULE_FREE_VARIANTS = ("optax", "keras")


class ScheduleFreeScalars(NamedTuple):
    """Per-step constants of the schedule-free AdamW update, already in the arrays' dtype."""

    beta2: np.floating
    one_minus_beta2: np.floating
    bc2: np.floating  # 1 - beta2**t: v_hat = v / bc2
    eps: np.floating
    lr: np.floating  # the step size of z (with warm-up)
    neg_lr: np.floating  # -lr
    weight_decay: np.floating  # optax: added to the direction (times y)
    decay_lr: np.floating  # Keras: the base lr of its decoupled decay y -= y * wd * lr
    beta1: np.floating
    one_minus_beta1: np.floating
    ck: np.floating  # the averaging weight of the new z in x
    one_minus_ck: np.floating
    one: np.floating  # 1 in the arrays' dtype (optax's 1 / (sqrt(v_hat) + eps))


def check_warmup_steps(warmup_steps: object) -> int:
    """An integer ``>= 0``: ``Invalid warmup_steps value: {warmup_steps}``."""
    v = check_real("warmup_steps", warmup_steps)
    if not (0.0 <= v and v == math.floor(v)):
        raise ValueError(f"Invalid warmup_steps value: {warmup_steps}")
    return int(v)


def warmup_lr(lr: float, warmup_steps: int, count: float, variant: str) -> float:
    """The learning rate at ``count`` under the variant's linear warm-up from 0: Keras's
    ``lr * min(count / warmup_steps, 1)`` (float64); optax's ``linear_schedule(0, lr,
    warmup_steps)(count)``, ``(0 - lr) * (1 - min(count, W) / W) + lr``, computed **in
    float32** as jitted optax computes it (its int32 count divided by the int ``W`` is float32;
    XLA turns the division into a product with ``float32(1 / W)`` and fuses both multiply-adds:
    ``frac = fma(-k, float32(1/W), 1)``, ``fma(float32(-lr), frac, float32(lr))``; emulated
    here by exact float64 products rounded once to float32). With a warm-up optax's learning
    rate is thus rounded to float32 at every step, also after the warm-up (``float32(lr)``).
    ``lr`` without warm-up."""
    if warmup_steps <= 0:
        return lr
    if variant == "keras":
        return lr * min(count / warmup_steps, 1.0)
    f32 = np.float32
    k = float(f32(min(max(count, 0.0), float(warmup_steps))))
    frac = f32(-k * float(f32(1.0 / warmup_steps)) + 1.0)
    return float(f32(float(f32(-lr)) * float(frac) + float(f32(lr))))


# -- the element rule ---------------------------------------------------------------------------


@element
def update(p, g, state, s, o, rp, rs):  # pragma: no cover - compiled
    """One coordinate (:mod:`minnet.optim._kernel`'s rule contract); ``o = (keras, decay)``:
    Keras's order of operations, and whether a weight decay applies. No per_op model."""
    keras, decay = o
    z, v = state[0], state[1]
    y = p
    if keras:
        if decay:
            y = p - p * s.weight_decay * s.decay_lr  # Keras's decoupled decay, before the step
        v = v + (g * g - v) * s.one_minus_beta2
        den, dominated = sqrt_plus_eps(v / s.bc2, s.eps)
        z_new = z - (s.lr * g) / den
    else:
        v = s.one_minus_beta2 * (g * g) + s.beta2 * v
        den, dominated = sqrt_plus_eps(v / s.bc2, s.eps)
        u = (s.one / den) * g
        if decay:
            u = u + s.weight_decay * y
        z_new = z + s.neg_lr * u
    x = (y - s.one_minus_beta1 * z) / s.beta1
    x = s.one_minus_ck * x + s.ck * z_new
    if keras:
        new = s.one_minus_beta1 * z_new + s.beta1 * x
        delta = new - y
    else:
        delta = (s.beta1 * x + s.one_minus_beta1 * z_new) - y  # optax: updates = y_new - y
        new = y + delta
    return y, new, (z_new, v), delta, new - p, dominated, g


@element
def multiplier(state, s, o):  # pragma: no cover - run by NumPy
    """``k`` in ``z -= lr * k * g``: ``1 / (sqrt(v_hat) + eps)``."""
    return 1.0 / sqrt_plus_eps(state[1] / s.bc2, s.eps)[0]


#: Schedule-free AdamW's element rule; the second moment ``exp_avg_sq`` is state 1.
RULE = Rule(update, second_moment=1, multiplier=multiplier)


def schedule_free_adamw_reference(
    param: np.ndarray, grad: np.ndarray, state: tuple, s: ScheduleFreeScalars, o: tuple
) -> None:
    """The same update with whole-array NumPy, in place (the rule's arguments)."""
    keras, decay = o
    z, v = state
    with np.errstate(all="ignore"):
        y = param.copy()
        if keras:
            if decay:
                y = param - param * s.weight_decay * s.decay_lr
            v[...] = v + (grad * grad - v) * s.one_minus_beta2
            z_new = z - (s.lr * grad) / (np.sqrt(v / s.bc2) + s.eps)
        else:
            v[...] = s.one_minus_beta2 * (grad * grad) + s.beta2 * v
            u = (1 / (np.sqrt(v / s.bc2) + s.eps)) * grad
            if decay:
                u = u + s.weight_decay * y
            z_new = z + s.neg_lr * u
        x_prev = (y - s.one_minus_beta1 * z) / s.beta1
        x = s.one_minus_ck * x_prev + s.ck * z_new
        if keras:
            param[...] = s.one_minus_beta1 * z_new + s.beta1 * x
        else:
            param[...] = y + ((s.beta1 * x + s.one_minus_beta1 * z_new) - y)
        z[...] = z_new


# -- the class ------------------------------------------------------------------------------


class ScheduleFreeAdamW(Optimizer):
    r"""Schedule-Free AdamW with Keras 3's (3.15.1) or optax 0.2.8's exact semantics, as one
    fused Numba kernel; ``eval()`` / ``train()`` switch the parameters between ``x`` and ``y``.

    With ``t`` the step count (1 on the first call of :meth:`step`), the parameters holding
    ``y``, ``z`` (state ``"z"``, a copy of the parameter at its first step) and ``v``
    (``"exp_avg_sq"``, from 0):

    .. code-block:: text

        variant="optax"   (optax.contrib.schedule_free_adamw = schedule_free(chain(
                           scale_by_rms(b2, eps, eps_in_sqrt=False, bias_correction=True),
                           add_decayed_weights(weight_decay), scale_by_learning_rate(lr_z)),
                           lr_c, b1, weight_lr_power))
            v      = (1 - beta2) * g**2 + beta2 * v
            u      = (1 / (sqrt(v / (1 - beta2**t)) + eps)) * g + weight_decay * y
            z_new  = z + (-lr_z) * u
            lr_max = max(lr_max, lr_c);  weight_sum = weight_sum + lr_max**weight_lr_power
            c      = lr_max**weight_lr_power / weight_sum        (0 where that is 0/0)
            x      = (1 - c) * (y - (1 - beta1) * z) / beta1 + c * z_new
            y      = y + ((beta1 * x + (1 - beta1) * z_new) - y)

        variant="keras"   (keras.optimizers.ScheduleFreeAdamW; its base optimizer's
                           decoupled weight decay first)
            y      = y - y * weight_decay * lr                    (the lr without warm-up)
            v      = v + (g**2 - v) * (1 - beta2)
            z_new  = z - (lr_z * g) / (sqrt(v / (1 - beta2**t)) + eps)
            c      = 1 / t
            x      = (1 - c) * (y - (1 - beta1) * z) / beta1 + c * z_new
            y      = (1 - beta1) * z_new + beta1 * x

    ``eps`` sits in both *outside* the square root and after the bias correction of ``v``,
    as Adam's (optax's ``eps_in_sqrt=False``): it dominates ``sqrt(v_hat)`` where ``|g|``
    stays below it, and the step of ``z`` is then ``lr / eps * g``. With ``eps=0`` a
    coordinate whose gradient has been 0 so far divides 0 by 0 (NaN), in both libraries.

    **Where the libraries differ.** Without warm-up and weight decay they are one formula
    (``c = lr**p / (t * lr**p) = 1 / t`` for a constant lr; the moment's two forms differ in
    rounding only), and each replays the other's fixtures to 1e-9. With ``warmup_steps = W``:
    Keras's step size is ``lr_z = lr * min(t / W, 1)`` and its average stays uniform (``c =
    1/t``); optax evaluates its schedule ``(0 - lr) * (1 - min(k, W) / W) + lr`` at ``k = t -
    1`` for ``lr_z`` (the base optimizer's count starts at 0, so its first step moves nothing)
    and at ``k = t`` for ``lr_c``, and weights the average by ``lr_max**weight_lr_power`` (the
    authors' choice, which down-weights the warm-up's ``z``); optax's warm-up schedule computes
    in float32 (see :func:`warmup_lr`), so its lr is ``float32(lr)`` after the warm-up (a
    relative 1e-8 from the float64 lr; minnet does the same). Weight decay: optax adds
    ``weight_decay * y`` to ``z``'s direction (scaled by ``lr_z``, warm-up included); Keras
    shrinks ``y`` by ``lr * weight_decay`` (the lr without warm-up) before the step and leaves
    ``z`` alone. ``weight_lr_power`` is optax's only (``variant="keras"`` refuses another value
    than 2). Both start with ``z`` equal to the parameters; minnet copies them at each
    parameter's first step (the ``schedulefree`` package's lazy start).

    Defaults (both libraries): ``lr=0.0025``, ``betas=(0.9, 0.999)`` (Keras's ``beta_1``,
    ``beta_2``; optax's ``b1``, ``b2``), ``eps=1e-8`` (Keras's ``epsilon``), no warm-up
    (Keras's ``warmup_steps=0``, optax's ``None``: optax's ``0`` would be a schedule stuck at
    0), ``weight_decay=0`` (Keras's ``None``), ``weight_lr_power=2`` (optax). optax's
    ``state_dtype`` is minnet's ``state_dtype``.

    **Evaluation.** :meth:`eval` sets every parameter to ``x = (y - (1 - beta1) * z) / beta1``
    (optax's ``schedule_free_eval_params``) and :meth:`train` back to ``y = beta1 * x + (1 -
    beta1) * z``; :meth:`step` in eval mode raises ``RuntimeError``. The round trip is exact up
    to rounding (about one ulp of ``x``). A parameter that no step has updated has no ``z``
    yet and is left as it is. The mode is each group's ``"train_mode"`` (``True`` at the
    start), saved and loaded with the state dict; train in train mode and save the model's
    parameters in the mode you mean to load them in.

    Args:
        params: iterable of :class:`minnet.nn.Parameter`, or of dicts defining parameter groups.
        lr: learning rate, ``>= 0``. Default ``0.0025``.
        betas: ``(beta1, beta2)``, ``beta1`` in ``(0, 1)`` (``x`` divides by it) and ``beta2``
            in ``[0, 1)``. Default ``(0.9, 0.999)``.
        eps: added to ``sqrt(v_hat)``, ``>= 0``. Default ``1e-8``.
        weight_decay: ``>= 0``, as the variant applies it (above). Default ``0``.
        warmup_steps: the length of the linear warm-up from 0, an integer ``>= 0`` (0: none).
            Default ``0``.
        weight_lr_power: optax's power of ``lr_max`` in the averaging weights, ``>= 0``.
            Default ``2``.
        variant: ``"optax"`` (default) or ``"keras"`` (above).
        track_stats, check_finite, state_dtype: :class:`~minnet.optim.optimizer.Optimizer`'s.
        rounding: ``"fused"`` (default). With 16-bit buffers ``"per_op"`` raises
            ``ValueError``: PyTorch has no schedule-free optimizer.

    Raises:
        ValueError: on an invalid hyperparameter, with PyTorch's message style (NaN is
            rejected).
        TypeError: on a hyperparameter of the wrong type.
        RuntimeError: :meth:`step` in eval mode.
    """

    def __init__(
        self,
        params: Iterable[Parameter] | Iterable[dict[str, Any]],
        lr: float = 0.0025,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        weight_lr_power: float = 2.0,
        variant: str = "optax",
        **options: Unpack[Options],
    ) -> None:
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                        warmup_steps=warmup_steps, weight_lr_power=weight_lr_power,
                        variant=variant)  # fmt: skip
        super().__init__(params, defaults, **options)

    rule = RULE
    reference = staticmethod(schedule_free_adamw_reference)
    checks: Mapping[str, Callable[[Any], Any]] = {
        "lr": check_lr, "eps": check_eps, "betas": check_betas,
        "weight_decay": check_weight_decay, "warmup_steps": check_warmup_steps,
        "weight_lr_power": partial(check_nonnegative, "weight_lr_power"),
        "variant": partial(check_choice, "variant", choices=SCHEDULE_FREE_VARIANTS),
    }  # fmt: skip
    #: ``z`` starts as a copy of the parameter, at the parameter's first step.
    _param_state = ("z",)

    def _check_group(self, hp: Mapping[str, Any]) -> None:
        if not hp["betas"][0] > 0:
            raise ValueError(
                f"Invalid beta parameter at index 0: {hp['betas'][0]} (schedule-free needs "
                "beta1 > 0: x = (y - (1 - beta1) * z) / beta1)"
            )
        if hp["variant"] == "keras" and hp["weight_lr_power"] != 2.0:
            raise ValueError(
                f"ScheduleFreeAdamW: weight_lr_power={hp['weight_lr_power']} is optax's; "
                "Keras's average is uniform (c = 1/t). Use variant='optax', or leave it at 2"
            )

    def _install_group(self, group: dict[str, Any]) -> None:
        group.setdefault("train_mode", True)
        super()._install_group(group)

    def _state_spec(self, group: Mapping[str, Any]) -> dict[str, float]:
        return {"z": 0.0, "exp_avg_sq": 0.0}  # z: the parameter's copy (_param_state)

    def _group_state_spec(self, group: Mapping[str, Any]) -> dict[str, float]:
        return {"weight_sum": 0.0, "lr_max": 0.0}

    def _advance_group_state(
        self, group: Mapping[str, Any], state: Mapping[str, float], step: int
    ) -> dict[str, float]:
        """``lr_max = max(lr_max, lr_c)`` and ``weight_sum += lr_max**weight_lr_power``
        (optax); Keras weights every step by 1, so its ``weight_sum`` counts the steps."""
        variant = group["variant"]
        lr_c = warmup_lr(group["lr"], group["warmup_steps"], float(step), variant)
        lr_max = max(state["lr_max"], lr_c) if not math.isnan(lr_c) else lr_c
        weight = 1.0 if variant == "keras" else lr_max ** group["weight_lr_power"]
        return {"weight_sum": state["weight_sum"] + weight, "lr_max": lr_max}

    def _scalars(
        self,
        group: Mapping[str, Any],
        dtype: np.dtype,
        step: int,
        group_state: Mapping[str, float] | None = None,
    ) -> ScheduleFreeScalars:
        variant = group["variant"]
        if group_state is None:  # recomputed from t (only for callers outside step())
            group_state = self._group_state_spec(group)
            for k in range(1, step + 1):
                group_state = self._advance_group_state(group, group_state, k)
        lr, wd, power = group["lr"], group["weight_decay"], group["weight_lr_power"]
        beta1, beta2 = group["betas"]
        total = group_state["weight_sum"]
        if variant == "keras":
            lr_z = warmup_lr(lr, group["warmup_steps"], float(step), variant)
            weight = 1.0
        else:
            lr_z = warmup_lr(lr, group["warmup_steps"], float(step - 1), variant)
            weight = group_state["lr_max"] ** power
        if math.isnan(weight) or math.isnan(total):
            ck = math.nan
        elif total == 0:
            ck = 0.0 if weight == 0 else math.copysign(math.inf, weight)  # optax's nan_to_num
        else:
            ck = weight / total
        bc2 = 1.0 - beta2 ** float(step)
        return cast_scalars(ScheduleFreeScalars, dtype, beta2, 1.0 - beta2, bc2, group["eps"],
                            lr_z, -lr_z, wd, lr, beta1, 1.0 - beta1, ck, 1.0 - ck, 1.0)  # fmt: skip

    def _options(self, group: Mapping[str, Any], formats: Any = None) -> tuple[Any, ...]:
        return (group["variant"] == "keras", group["weight_decay"] != 0)

    #: PyTorch lacks it: ``rounding="per_op"`` is refused (the base's message).
    no_pytorch = "schedule-free optimizer"

    # -- train and eval modes ---------------------------------------------------------------

    @property
    def train_mode(self) -> bool:
        """Whether the parameters hold ``y`` (training) rather than ``x`` (evaluation)."""
        return all(g.get("train_mode", True) for g in self.param_groups)

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One schedule-free step (:meth:`Optimizer.step`); ``RuntimeError`` in eval mode."""
        self._sync_groups()
        if not all(g.get("train_mode", True) for g in self.param_groups):
            raise RuntimeError(
                "ScheduleFreeAdamW.step() in eval mode: the parameters hold x, the averaged "
                "point to evaluate at, not y, where gradients are taken; call "
                "optimizer.train() before training (and optimizer.eval() before evaluating)"
            )
        return super().step(closure)

    def eval(self) -> None:
        """Set every parameter to the evaluation point ``x = (y - (1 - beta1) * z) / beta1``
        (optax's ``schedule_free_eval_params``); a no-op for a group already in eval mode."""
        self._switch(train=False)

    def train(self) -> None:
        """Set every parameter back to ``y = beta1 * x + (1 - beta1) * z``, where the next
        gradient is taken; a no-op for a group already in train mode."""
        self._switch(train=True)

    def _switch(self, train: bool) -> None:
        self._sync_groups()
        for i, group in enumerate(self.param_groups):
            if bool(group.get("train_mode", True)) == train:
                continue
            beta1 = float(group["betas"][0])
            for flat in self._flats[i]:
                compute = np.float64 if flat.dtype == np.float64 else np.float32
                z_all = flat.state["z"]
                for j, (off, size) in enumerate(zip(flat.offsets, flat.sizes)):
                    if flat.steps[j] == 0:  # no z yet: y = x = the parameter
                        continue
                    p = flat.data[off : off + size].astype(compute)
                    z = z_all[off : off + size].astype(compute)
                    b1 = compute(beta1)
                    one_minus_b1 = compute(1.0 - beta1)
                    if train:
                        out = b1 * p + one_minus_b1 * z
                    else:
                        out = (p - one_minus_b1 * z) / b1
                    flat.data[off : off + size] = out.astype(flat.dtype)
            group["train_mode"] = train

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """:meth:`Optimizer.load_state_dict`; a group saved without ``"train_mode"`` (another
        library's layout) is in train mode."""
        super().load_state_dict(state_dict)
        for group in self.param_groups:
            group["train_mode"] = bool(group.get("train_mode", True))

    # -- what eps does (for the lab) --------------------------------------------------------

    @staticmethod
    def eps_compared_with_options(options: Mapping[str, Any]) -> str | None:
        """``"sqrt(v_hat)"``: eps is added to the root of the bias-corrected second moment."""
        return "sqrt(v_hat)"
