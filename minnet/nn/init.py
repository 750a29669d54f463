"""``minnet.nn.init``: PyTorch's in-place initialisers, with its names, defaults and fans.

Each takes a :class:`~minnet.nn.Parameter` (its ``.data`` is overwritten in place, so an
optimizer's flat buffers stay shared) or a float ``np.ndarray``, fills it and returns it. Values
are drawn in float64 from ``generator`` (an ``np.random.Generator``, an int seed, or ``None`` for
minnet's default generator, see :func:`minnet.manual_seed`) and rounded once to the array's dtype.
The draws are NumPy's, not PyTorch's: the distributions match, the numbers do not.

Fans, as PyTorch's ``_calculate_fan_in_and_fan_out``: for a weight of shape ``(out, in, *k)``,
``fan_in = in * prod(k)`` and ``fan_out = out * prod(k)`` (a ``Linear`` weight ``(out, in)``:
``fan_in = in``); fewer than 2 dimensions raise ``ValueError``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from minnet.nn.parameter import Parameter
from minnet.random import resolve_rng

__all__ = [
    "calculate_gain", "uniform_", "normal_", "constant_", "zeros_", "ones_", "xavier_uniform_",
    "xavier_normal_", "kaiming_uniform_", "kaiming_normal_", "trunc_normal_",
]  # fmt: skip


def _array(tensor: Any, where: str) -> np.ndarray:
    arr = tensor.data if isinstance(tensor, Parameter) else tensor
    if not isinstance(arr, np.ndarray):
        raise TypeError(
            f"{where}: expected a Parameter or a NumPy array, got {type(tensor).__name__}"
        )
    if arr.dtype.kind != "f" and arr.dtype.name != "bfloat16":
        raise TypeError(f"{where}: expected a floating-point array, got dtype {arr.dtype}")
    if not arr.flags.writeable:
        raise ValueError(f"{where}: the array is read-only")
    return arr


def _fill(tensor: Any, values: Any, where: str) -> Any:
    arr = _array(tensor, where)
    arr[...] = np.asarray(values, dtype=np.float64).astype(arr.dtype)
    return tensor


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """PyTorch's recommended gain: 1 for linear/conv/sigmoid, 5/3 for tanh, sqrt(2) for relu,
    ``sqrt(2 / (1 + slope**2))`` for leaky_relu (slope ``param``, default 0.01), 3/4 for selu."""
    linear = (
        "linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d",
        "conv_transpose3d",
    )  # fmt: skip
    if nonlinearity in linear or nonlinearity == "sigmoid":
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        if param is None:
            slope = 0.01
        elif isinstance(param, (int, float)) and not isinstance(param, bool):
            slope = float(param)
        else:
            raise ValueError(f"negative_slope {param} not a valid number")
        return math.sqrt(2.0 / (1 + slope**2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"Unsupported nonlinearity {nonlinearity}")


def _calculate_fan_in_and_fan_out(tensor: Any) -> tuple[int, int]:
    """``(fan_in, fan_out)`` of a weight, PyTorch's definition."""
    shape = _array(tensor, "fan computation").shape
    if len(shape) < 2:
        raise ValueError(
            "Fan in and fan out can not be computed for tensor with fewer than 2 dimensions"
        )
    receptive = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    return shape[1] * receptive, shape[0] * receptive


def _fan(tensor: Any, mode: str) -> int:
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"Mode {mode} not supported, please use one of fan_in, fan_out")
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    return fan_in if mode == "fan_in" else fan_out


def uniform_(tensor: Any, a: float = 0.0, b: float = 1.0, generator: Any = None) -> Any:
    """Fill with ``U(a, b)``."""
    arr = _array(tensor, "uniform_")
    return _fill(tensor, resolve_rng(generator, "uniform_").uniform(a, b, arr.shape), "uniform_")


def normal_(tensor: Any, mean: float = 0.0, std: float = 1.0, generator: Any = None) -> Any:
    """Fill with ``N(mean, std**2)``."""
    arr = _array(tensor, "normal_")
    return _fill(tensor, resolve_rng(generator, "normal_").normal(mean, std, arr.shape), "normal_")


def constant_(tensor: Any, val: float) -> Any:
    """Fill with ``val``."""
    return _fill(tensor, val, "constant_")


def zeros_(tensor: Any) -> Any:
    """Fill with zeros."""
    return _fill(tensor, 0.0, "zeros_")


def ones_(tensor: Any) -> Any:
    """Fill with ones."""
    return _fill(tensor, 1.0, "ones_")


def xavier_uniform_(tensor: Any, gain: float = 1.0, generator: Any = None) -> Any:
    """Glorot uniform: ``U(-a, a)``, ``a = gain * sqrt(6 / (fan_in + fan_out))``."""
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    a = math.sqrt(3.0) * gain * math.sqrt(2.0 / float(fan_in + fan_out))
    return uniform_(tensor, -a, a, generator)


def xavier_normal_(tensor: Any, gain: float = 1.0, generator: Any = None) -> Any:
    """Glorot normal: ``N(0, std**2)``, ``std = gain * sqrt(2 / (fan_in + fan_out))``."""
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    return normal_(tensor, 0.0, gain * math.sqrt(2.0 / float(fan_in + fan_out)), generator)


def kaiming_uniform_(
    tensor: Any,
    a: float = 0.0,
    mode: str = "fan_in",
    nonlinearity: str = "leaky_relu",
    generator: Any = None,
) -> Any:
    """He uniform: ``U(-b, b)``, ``b = sqrt(3) * gain / sqrt(fan)`` with ``gain =
    calculate_gain(nonlinearity, a)``; PyTorch's ``Linear`` initialisation is ``a=sqrt(5)``
    (``b = 1 / sqrt(fan_in)``)."""
    std = calculate_gain(nonlinearity, a) / math.sqrt(_fan(tensor, mode))
    bound = math.sqrt(3.0) * std
    return uniform_(tensor, -bound, bound, generator)


def kaiming_normal_(
    tensor: Any,
    a: float = 0.0,
    mode: str = "fan_in",
    nonlinearity: str = "leaky_relu",
    generator: Any = None,
) -> Any:
    """He normal: ``N(0, std**2)``, ``std = gain / sqrt(fan)``."""
    std = calculate_gain(nonlinearity, a) / math.sqrt(_fan(tensor, mode))
    return normal_(tensor, 0.0, std, generator)


def trunc_normal_(
    tensor: Any,
    mean: float = 0.0,
    std: float = 1.0,
    a: float = -2.0,
    b: float = 2.0,
    generator: Any = None,
) -> Any:
    """Fill with ``N(mean, std**2)`` truncated to ``[a, b]`` (PyTorch's defaults ``a=-2, b=2``
    are absolute bounds, not multiples of ``std``). Drawn by PyTorch's method: uniform on
    ``[cdf(a), cdf(b)]`` of the standard normal, mapped through the inverse CDF (``erfinv``),
    scaled by ``std``, shifted by ``mean`` and clipped to ``[a, b]``."""
    arr = _array(tensor, "trunc_normal_")
    if not std >= 0 or not a < b:
        raise ValueError(f"trunc_normal_: need std >= 0 and a < b, got std={std}, a={a}, b={b}")

    def cdf(v: float) -> float:
        return (1.0 + math.erf(v / math.sqrt(2.0))) / 2.0

    if std == 0:
        return _fill(tensor, np.clip(np.full(arr.shape, float(mean)), a, b), "trunc_normal_")
    lo, hi = cdf((a - mean) / std), cdf((b - mean) / std)
    u = resolve_rng(generator, "trunc_normal_").uniform(2 * lo - 1, 2 * hi - 1, arr.shape)
    values = _erfinv(u) * (std * math.sqrt(2.0)) + mean
    return _fill(tensor, np.clip(values, a, b), "trunc_normal_")


def _erfinv(y: np.ndarray) -> np.ndarray:
    """Inverse error function on ``(-1, 1)``: Giles's single-precision approximation refined
    by two Newton steps on ``erf`` (float64-accurate)."""
    y = np.clip(np.asarray(y, dtype=np.float64), -1 + 1e-16, 1 - 1e-16)
    w = -np.log((1.0 - y) * (1.0 + y))
    small = w < 5.0
    ws = w - 2.5
    p1 = 2.81022636e-08
    for c in (3.43273939e-07, -3.5233877e-06, -4.39150654e-06, 0.00021858087, -0.00125372503,
              -0.00417768164, 0.246640727, 1.50140941):  # fmt: skip
        p1 = c + p1 * ws
    wl = np.sqrt(w) - 3.0
    p2 = -0.000200214257
    for c in (0.000100950558, 0.00134934322, -0.00367342844, 0.00573950773, -0.0076224613,
              0.00943887047, 1.00167406, 2.83297682):  # fmt: skip
        p2 = c + p2 * wl
    x = np.where(small, p1, p2) * y
    erf = np.vectorize(math.erf, otypes=[np.float64])
    for _ in range(2):
        x = x - (erf(x) - y) / (2.0 / math.sqrt(math.pi) * np.exp(-x * x))
    return x
