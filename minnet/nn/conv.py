"""``Conv2d`` and the 2-D pooling layers, on ``(N, C, H, W)`` arrays as PyTorch's.

The convolution is im2col: the padded input's windows are copied once into ``cols`` of shape
``(groups, C/groups * kH * kW, N * H_out * W_out)`` (one strided slice copy per kernel position,
in the layout ``(C, N, H, W)``), so that the forward and both products of the backward are one
BLAS matrix product per group (NumPy's ``matmul``):

    y[g]     = W[g] @ cols[g]                 W[g]: (out/groups, C/groups * kH * kW)
    dW[g]   += dY[g] @ cols[g].T              dY[g]: (out/groups, N * H_out * W_out)
    dcols[g] = W[g].T @ dY[g]                 then added back window by window (col2im)

Windows start at ``h_out * stride`` in the padded input and read every ``dilation``-th row and
column. The pooling layers read the same windows through a strided view (no copy). A float16
or bfloat16 layer computes in float32 and rounds each result once, as the other layers do
(``minnet.nn.Linear``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import as_strided

from minnet.nn._util import _as_float_array, _compute, _float_dtype
from minnet.nn.activation import _float_input
from minnet.nn.module import Module
from minnet.nn.parameter import Parameter, _accumulate_grad
from minnet.random import resolve_rng

__all__ = ["Conv2d", "MaxPool2d", "AvgPool2d", "AdaptiveAvgPool2d"]

_PADDING_STRINGS = ("same", "valid")
_PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def _pair(value: Any, name: str, where: str, minimum: int) -> tuple[int, int]:
    """An int or a pair of ints as ``(h, w)``, each ``>= minimum`` (``ValueError`` otherwise)."""
    items = tuple(value) if isinstance(value, (tuple, list)) else (value, value)
    if len(items) != 2 or any(
        isinstance(v, bool) or not isinstance(v, (int, np.integer)) for v in items
    ):
        raise TypeError(f"{where}: {name} must be an int or a tuple of two ints, got {value!r}")
    if any(v < minimum for v in items):
        if name == "padding":
            raise ValueError(f"{where}: negative padding is not supported, got {value!r}")
        raise ValueError(f"{where}: {name} must be >= {minimum}, got {value!r}")
    return int(items[0]), int(items[1])


def _image_input(module: Module, x: Any, channels: int | None) -> tuple[np.ndarray, bool]:
    """``(x as (N, C, H, W), whether x was one unbatched (C, H, W) image)``."""
    arr = _float_input(module, x)
    if arr.ndim not in (3, 4):
        raise ValueError(
            f"{module._label()}: expected a 4-D input (N, C, H, W) or a 3-D unbatched input "
            f"(C, H, W), got shape {arr.shape}"
        )
    unbatched = arr.ndim == 3
    if unbatched:
        arr = arr[None]
    if channels is not None and arr.shape[1] != channels:
        raise ValueError(
            f"{module._label()}: expected input with {channels} channels (in_channels="
            f"{channels}), got shape {arr.shape if not unbatched else arr.shape[1:]} with "
            f"{arr.shape[1]} channels"
        )
    return arr, unbatched


def _windows(xp: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int],
             dilation: tuple[int, int], out: tuple[int, int]) -> np.ndarray:  # fmt: skip
    """The read-only view ``(N, C, H_out, W_out, kH, kW)`` of the windows of ``xp``."""
    n, c = xp.shape[:2]
    s0, s1, s2, s3 = xp.strides
    return as_strided(
        xp,
        shape=(n, c, out[0], out[1], kernel[0], kernel[1]),
        strides=(s0, s1, s2 * stride[0], s3 * stride[1], s2 * dilation[0], s3 * dilation[1]),
        writeable=False,
    )


def _add_windows(dxp: np.ndarray, dwin: np.ndarray, stride: tuple[int, int],
                 dilation: tuple[int, int]) -> None:  # fmt: skip
    """col2im: ``dxp[n, c, h*s + i*d, w*s + j*d] += dwin[n, c, h, w, i, j]`` (one strided add
    per kernel position, so overlapping windows add up)."""
    ho, wo, kh, kw = dwin.shape[2:]
    for i in range(kh):
        r = i * dilation[0]
        for j in range(kw):
            c = j * dilation[1]
            dxp[:, :, r : r + stride[0] * (ho - 1) + 1 : stride[0],
                c : c + stride[1] * (wo - 1) + 1 : stride[1]] += dwin[:, :, :, :, i, j]  # fmt: skip


class Conv2d(Module):
    """2-D convolution (cross-correlation) over ``(N, C_in, H, W)`` (or unbatched ``(C_in, H,
    W)``), PyTorch's ``Conv2d``.

    ``y[n, o, h, w] = b[o] + sum_{c, i, j} W[o, c, i, j] * xp[n, g*C_in/groups + c, h*sH + i*dH,
    w*sW + j*dW]`` for ``o`` in group ``g`` (``xp``: the input padded with zeros). Output size
    ``H_out = floor((H + pad_top + pad_bottom - dH*(kH - 1) - 1) / sH) + 1`` (likewise ``W``).

    Args:
        in_channels, out_channels: channels of input and output (both divisible by ``groups``).
        kernel_size, stride, dilation: an int or ``(h, w)``; defaults ``stride=1``,
            ``dilation=1``.
        padding: an int or ``(h, w)`` of zeros on both sides, ``"valid"`` (none) or ``"same"``
            (output size = input size, stride 1 only; total ``d*(k - 1)`` per dimension, the
            odd one on the bottom/right side, as PyTorch). Default 0.
        groups: input and output channels split into ``groups`` independent convolutions.
        bias: learn an additive bias per output channel. Default ``True``.
        padding_mode: what the padding holds: ``"zeros"`` (default), ``"reflect"`` (the input
            mirrored without repeating its edge: pad < input size), ``"replicate"`` (the edge
            repeated) or ``"circular"`` (wrapped around: pad <= input size), as PyTorch (which
            pads with ``F.pad`` in that mode, then convolves without padding). The backward adds
            each padded position's gradient back to the input position it copies.
        dtype, rng: as for :class:`~minnet.nn.Linear`.

    Weight ``(out_channels, in_channels / groups, kH, kW)``; weight and bias start
    ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` with ``fan_in = in_channels / groups * kH * kW``
    (PyTorch's ``kaiming_uniform_(a=sqrt(5))`` and its bias bound). Keras's ``Conv2D`` starts
    from Glorot uniform and zero bias, and its layout is channels-last ``(N, H, W, C)``.

    Backward: ``dW += dY @ cols.T`` and ``db += dY.sum((0, 2, 3))`` per group, and (when the
    input gradient is wanted) ``dx`` = the window-wise sum of ``W.T @ dY`` with the padding cut
    off (see the module docstring).
    """

    _state_attrs = ("_cols", "_geom")

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: Any,
        stride: Any = 1,
        padding: Any = 0,
        dilation: Any = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        *,
        dtype: Any = np.float32,
        rng: np.random.Generator | int | None = None,
    ) -> None:
        for arg, value in (("in_channels", in_channels), ("out_channels", out_channels),
                           ("groups", groups)):  # fmt: skip
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"Conv2d: {arg} must be a positive integer, got {value!r}")
        if in_channels % groups:
            raise ValueError(
                f"Conv2d: in_channels must be divisible by groups (in_channels={in_channels}, "
                f"groups={groups})"
            )
        if out_channels % groups:
            raise ValueError(
                f"Conv2d: out_channels must be divisible by groups (out_channels="
                f"{out_channels}, groups={groups})"
            )
        if not isinstance(bias, (bool, np.bool_)):
            raise TypeError(f"Conv2d: bias must be a bool, got {bias!r}")
        if padding_mode not in _PADDING_MODES:
            raise ValueError(
                f"padding_mode must be one of {set(_PADDING_MODES)}, but got "
                f"padding_mode='{padding_mode}'"
            )
        super().__init__()
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.kernel_size = _pair(kernel_size, "kernel_size", "Conv2d", 1)
        self.stride = _pair(stride, "stride", "Conv2d", 1)
        self.dilation = _pair(dilation, "dilation", "Conv2d", 1)
        if isinstance(padding, str):
            if padding not in _PADDING_STRINGS:
                raise ValueError(
                    f"Invalid padding string {padding!r}, should be one of "
                    f"{set(_PADDING_STRINGS)}"
                )
            if padding == "same" and self.stride != (1, 1):
                raise ValueError("padding='same' is not supported for strided convolutions")
            self.padding: Any = padding
        else:
            self.padding = _pair(padding, "padding", "Conv2d", 0)
        self.groups = int(groups)
        self.padding_mode = padding_mode
        self.dtype = _float_dtype(dtype, "Conv2d")
        gen = resolve_rng(rng, "Conv2d")
        kh, kw = self.kernel_size
        fan_in = self.in_channels // self.groups * kh * kw
        bound = 1.0 / math.sqrt(fan_in)
        shape = (self.out_channels, self.in_channels // self.groups, kh, kw)
        self.weight = Parameter(gen.uniform(-bound, bound, shape).astype(self.dtype), "weight")
        self.bias = (
            Parameter(gen.uniform(-bound, bound, self.out_channels).astype(self.dtype), "bias")
            if bias
            else None
        )
        self._cols: np.ndarray | None = None
        self._geom: Any = None

    def _reset(self) -> None:
        self._cols = self._geom = None

    def _pad_sources(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For ``padding_mode != "zeros"``: the input row and column each row and column of the
        padded input copies (``padding_mode``'s rule), or ``ValueError`` as PyTorch's pad."""
        top, bottom, left, right = self._pads()
        out = []
        for dim, size, lo, hi in ((2, x.shape[2], top, bottom), (3, x.shape[3], left, right)):
            mode = self.padding_mode
            if (mode == "reflect" and max(lo, hi) >= size) or (
                mode == "circular" and max(lo, hi) > size
            ):
                raise ValueError(
                    f"{self._label()}: padding ({lo}, {hi}) at dimension {dim} of input "
                    f"{list(x.shape)} is too large for padding_mode={mode!r} (it must be "
                    f"{'less than' if mode == 'reflect' else 'at most'} the input size {size})"
                )
            p = np.arange(-lo, size + hi)
            if mode == "reflect":
                p = np.where(p < 0, -p, np.where(p >= size, 2 * (size - 1) - p, p))
            elif mode == "replicate":
                p = np.clip(p, 0, size - 1)
            else:
                p = p % size
            out.append(p)
        return out[0], out[1]

    def _pads(self) -> tuple[int, int, int, int]:
        """``(top, bottom, left, right)`` zeros added around the input."""
        if self.padding == "valid":
            return 0, 0, 0, 0
        if self.padding == "same":
            th = self.dilation[0] * (self.kernel_size[0] - 1)
            tw = self.dilation[1] * (self.kernel_size[1] - 1)
            return th // 2, th - th // 2, tw // 2, tw - tw // 2
        ph, pw = self.padding
        return ph, ph, pw, pw

    def forward(self, x: np.ndarray) -> np.ndarray:
        """The convolution of ``x`` ``(N, C_in, H, W)`` -> ``(N, C_out, H_out, W_out)``."""
        x = _as_float_array(x, self._label(), "input", self.dtype)
        x, unbatched = _image_input(self, x, self.in_channels)
        sources = None
        if self.padding_mode != "zeros":
            sources = (x.shape, *self._pad_sources(x))
            x = x[:, :, sources[1]][:, :, :, sources[2]]  # padded by copies; no zeros below
        n, c, h, w = x.shape
        top, bottom, left, right = self._pads() if sources is None else (0, 0, 0, 0)
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.stride, self.dilation
        hp, wp = h + top + bottom, w + left + right
        ho = (hp - dh * (kh - 1) - 1) // sh + 1
        wo = (wp - dw * (kw - 1) - 1) // sw + 1
        if ho < 1 or wo < 1:
            raise ValueError(
                f"{self._label()}: calculated padded input size per channel: ({hp} x {wp}). "
                f"Kernel size: ({dh * (kh - 1) + 1} x {dw * (kw - 1) + 1}) (with dilation). "
                "Kernel size can't be greater than actual input size "
                f"(input shape {x.shape[1:] if unbatched else x.shape})"
            )
        cd = _compute(self.dtype)
        g = self.groups
        # im2col in the channels-first layout (C, N, H, W): each kernel position is one strided
        # slice copy into cols[c, i, j] = (N, H_out, W_out)
        xp = np.zeros((c, n, hp, wp), cd)
        xp[:, :, top : top + h, left : left + w] = x.transpose(1, 0, 2, 3)
        cols6 = np.empty((c, kh, kw, n, ho, wo), cd)
        for i in range(kh):
            r = i * dh
            for j in range(kw):
                q = j * dw
                cols6[:, i, j] = xp[:, :, r : r + sh * (ho - 1) + 1 : sh,
                                    q : q + sw * (wo - 1) + 1 : sw]  # fmt: skip
        cols = cols6.reshape(g, c // g * kh * kw, n * ho * wo)
        wmat = self.weight.data.astype(cd, copy=False).reshape(g, self.out_channels // g, -1)
        out = np.matmul(wmat[0], cols[0])[None] if g == 1 else np.matmul(wmat, cols)
        y = out.reshape(self.out_channels, n, ho, wo).transpose(1, 0, 2, 3)
        if self.bias is not None:
            y = y + self.bias.data.astype(cd, copy=False)[:, None, None]
        y = np.ascontiguousarray(y, dtype=self.dtype)
        if self._keep():
            self._cols = cols
            self._geom = (x.shape, (hp, wp), (top, left), unbatched, sources)
        return y[0] if unbatched else y

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        """Add into ``weight.grad`` and ``bias.grad``; return dLoss/d(input)."""
        return self._legacy(self._backward, grad_out, False, True)

    def _backward(self, grad_out: np.ndarray, internal: bool, input_grad: bool) -> Any:
        cols, geom = self._cols, self._geom
        if cols is None:
            raise self._nothing_saved()
        (n, c, h, w), (hp, wp), (top, left), unbatched, sources = geom
        (kh, kw), g = self.kernel_size, self.groups
        ho_wo = cols.shape[2] // n
        grad_out = _as_float_array(grad_out, self._label(), "grad_out", self.dtype)
        gshape = grad_out.shape[1:] if not unbatched else grad_out.shape
        ok = grad_out.ndim == (3 if unbatched else 4) and gshape[0] == self.out_channels and (
            gshape[1] * gshape[2] == ho_wo
        )
        if not ok:
            raise ValueError(
                f"{self._label()}: grad_out must have the output's shape (N, {self.out_channels}"
                f", H_out, W_out) with N={n}, H_out*W_out={ho_wo}, got {grad_out.shape}"
            )
        if unbatched:
            grad_out = grad_out[None]
        if grad_out.shape[0] != n:
            raise ValueError(
                f"{self._label()}: grad_out has batch size {grad_out.shape[0]}, the input had {n}"
            )
        self._cols = self._geom = None
        self._freed = True
        ho, wo = grad_out.shape[2:]
        cd = _compute(self.dtype)
        og = self.out_channels // g
        gt = np.ascontiguousarray(grad_out.transpose(1, 0, 2, 3), dtype=cd).reshape(g, og, -1)
        weight = self.weight
        if weight.requires_grad:
            if g == 1:
                dw = np.matmul(gt[0], cols[0].T)
            else:
                dw = np.matmul(gt, cols.transpose(0, 2, 1))
            _accumulate_grad(weight, dw.reshape(weight.data.shape).astype(self.dtype), self)
        if self.bias is not None and self.bias.requires_grad:
            db = gt.reshape(self.out_channels, -1).sum(axis=1)
            _accumulate_grad(self.bias, db.astype(self.dtype, copy=False), self)
        if not input_grad:
            return None
        wmat = weight.data.astype(cd, copy=False).reshape(g, og, -1)
        if g == 1:
            dcols = np.matmul(wmat[0].T, gt[0])
        else:
            dcols = np.matmul(wmat.transpose(0, 2, 1), gt)  # (g, C/g * kh * kw, N * Ho * Wo)
        dcols6 = dcols.reshape(c, kh, kw, n, ho, wo)
        # col2im in the layout (C, N, H, W): one strided add per kernel position
        (sh, sw), (dh, dw_) = self.stride, self.dilation
        dxp = np.zeros((c, n, hp, wp), cd)
        for i in range(kh):
            r = i * dh
            for j in range(kw):
                q = j * dw_
                dxp[:, :, r : r + sh * (ho - 1) + 1 : sh,
                    q : q + sw * (wo - 1) + 1 : sw] += dcols6[:, i, j]  # fmt: skip
        dx = dxp[:, :, top : top + h, left : left + w].transpose(1, 0, 2, 3)
        if sources is not None:  # each padded row and column back onto the one it copies
            shape, rows, cols_ = sources
            folded = np.zeros((n, c, shape[2], w), cd)
            np.add.at(folded, (slice(None), slice(None), rows), dx)
            dx = np.zeros(shape, cd)
            np.add.at(dx, (slice(None), slice(None), slice(None), cols_), folded)
        dx = np.ascontiguousarray(dx, dtype=self.dtype)
        return dx[0] if unbatched else dx

    def extra_repr(self) -> str:
        s = (
            f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
            f"stride={self.stride}"
        )
        if self.padding != (0, 0):
            s += f", padding={self.padding!r}" if isinstance(self.padding, str) else (
                f", padding={self.padding}"
            )
        if self.dilation != (1, 1):
            s += f", dilation={self.dilation}"
        if self.groups != 1:
            s += f", groups={self.groups}"
        if self.bias is None:
            s += ", bias=False"
        if self.padding_mode != "zeros":
            s += f", padding_mode={self.padding_mode}"
        return s


def _pool_out(size: int, k: int, s: int, p: int, d: int, ceil: bool) -> int:
    """PyTorch's ``pooling_output_shape``: floor (or ceil) of ``(size + 2p - d(k-1) - 1) / s``
    plus 1; in ceil mode the last window must start inside the input or its left padding."""
    num = size + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil else 0)
    out = num // s + 1
    if ceil and (out - 1) * s >= size + p:
        out -= 1
    return out


class _Pool2d(Module):
    """Shared arguments, checks and geometry of :class:`MaxPool2d` and :class:`AvgPool2d`."""

    _state_attrs = ("_saved", "_geom")
    _dilation: tuple[int, int] = (1, 1)

    def __init__(self, kernel_size: Any, stride: Any, padding: Any, ceil_mode: bool) -> None:
        super().__init__()
        name = type(self).__name__
        self.kernel_size = _pair(kernel_size, "kernel_size", name, 1)
        self.stride = self.kernel_size if stride is None else _pair(stride, "stride", name, 1)
        self.padding = _pair(padding, "padding", name, 0)
        if not isinstance(ceil_mode, (bool, np.bool_)):
            raise TypeError(f"{name}: ceil_mode must be a bool, got {ceil_mode!r}")
        self.ceil_mode = bool(ceil_mode)
        self._saved: Any = None
        self._geom: Any = None

    def _reset(self) -> None:
        self._saved = self._geom = None

    def _layout(self, x: Any) -> tuple[np.ndarray, bool, Any]:
        """The input as ``(N, C, H, W)`` and the pooling geometry, with PyTorch's checks."""
        x, unbatched = _image_input(self, x, None)
        h, w = x.shape[2:]
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        (dh, dw) = self._dilation
        if not (ph <= (dh * (kh - 1) + 1) // 2 and pw <= (dw * (kw - 1) + 1) // 2):
            raise ValueError(
                f"{self._label()}: pad should be at most half of effective kernel size, but "
                f"got padding={self.padding}, kernel_size={self.kernel_size}"
                + (f" and dilation={self._dilation}" if self._dilation != (1, 1) else "")
            )
        ho = _pool_out(h, kh, sh, ph, dh, self.ceil_mode)
        wo = _pool_out(w, kw, sw, pw, dw, self.ceil_mode)
        if ho < 1 or wo < 1:
            raise ValueError(
                f"{self._label()}: given input size ({x.shape[1]}x{h}x{w}), calculated output "
                f"size ({x.shape[1]}x{ho}x{wo}): output size is too small"
            )
        # padded extent: the padding, and beyond it (ceil mode) what the last window reads
        hp = max(h + 2 * ph, (ho - 1) * sh + dh * (kh - 1) + 1)
        wp = max(w + 2 * pw, (wo - 1) * sw + dw * (kw - 1) + 1)
        return x, unbatched, (x.shape, (hp, wp), (ho, wo))

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        """dLoss/d(input) for dLoss/d(output) ``grad_out``."""
        return self._legacy(self._backward, grad_out, False, True)

    def _grad_in(self, grad_out: Any) -> tuple[np.ndarray, Any]:
        """``grad_out`` as ``(N, C, H_out, W_out)`` in the compute dtype, checked; frees state."""
        saved, geom = self._saved, self._geom
        if geom is None:
            raise self._nothing_saved()
        (n, c, h, w), _, (ho, wo), unbatched, dtype = geom
        g = _as_float_array(grad_out, self._label(), "grad_out", dtype)
        expected = (c, ho, wo) if unbatched else (n, c, ho, wo)
        if g.shape != expected:
            raise ValueError(
                f"{self._label()}: grad_out must have the output's shape {expected}, got "
                f"{g.shape}"
            )
        self._saved = self._geom = None
        self._freed = True
        g = g[None] if unbatched else g
        return g.astype(_compute(dtype), copy=False), saved

    def extra_repr(self) -> str:
        return (
            f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
            f"ceil_mode={self.ceil_mode}"
        )


class MaxPool2d(_Pool2d):
    """Maximum over each window, PyTorch's ``MaxPool2d`` on ``(N, C, H, W)`` or ``(C, H, W)``.

    ``y[n, c, h, w] = max_{i, j} x[n, c, h*sH - pH + i*dH, w*sW - pW + j*dW]`` over the
    positions inside the input (padding never wins). ``stride`` defaults to ``kernel_size``;
    ``padding`` is at most half the kernel; output size as :class:`Conv2d` with
    ``ceil_mode=False``, with ``ceil`` instead of ``floor`` in ceil mode (the last window must
    start inside the input or its left padding).

    Backward routes each output's gradient to its window's maximum (windows that overlap add up).
    Ties go to the first maximum in the window's row-major order, as PyTorch's CPU kernel (which
    replaces the running maximum only by a strictly greater value). A NaN is the maximum; where a
    window holds several NaNs PyTorch picks the last one and minnet the first (the output is NaN
    either way). ``return_indices=True`` makes a call return ``(output, indices)``, PyTorch's
    int64 indices of each maximum in its input plane (``row * W + column`` of the unpadded
    input); the indices take no gradient.
    """

    def __init__(
        self,
        kernel_size: Any,
        stride: Any = None,
        padding: Any = 0,
        dilation: Any = 1,
        return_indices: bool = False,
        ceil_mode: bool = False,
    ) -> None:
        if not isinstance(return_indices, (bool, np.bool_)):
            raise TypeError(f"MaxPool2d: return_indices must be a bool, got {return_indices!r}")
        super().__init__(kernel_size, stride, padding, ceil_mode)
        self.dilation = self._dilation = _pair(dilation, "dilation", "MaxPool2d", 1)
        self.return_indices = bool(return_indices)

    def forward(self, x: np.ndarray) -> Any:
        """The window maxima of ``x`` (and with ``return_indices``, where they are)."""
        x = _float_input(self, x)
        x, unbatched, (shape, (hp, wp), (ho, wo)) = self._layout(x)
        n, c, h, w = shape
        (ph, pw), cd = self.padding, _compute(x.dtype)
        xp = np.full((n, c, hp, wp), -np.inf, cd)
        xp[:, :, ph : ph + h, pw : pw + w] = x
        (kh, kw) = self.kernel_size
        win = _windows(xp, self.kernel_size, self.stride, self.dilation, (ho, wo))
        flat = win.reshape(n, c, ho, wo, kh * kw)
        arg = flat.argmax(axis=-1)  # the first maximum, as PyTorch's strict '>' scan
        isnan = np.isnan(flat)
        if isnan.any():  # NaN is the maximum (argmax already returns the first NaN)
            arg = np.where(isnan.any(axis=-1), isnan.argmax(axis=-1), arg)
        y = np.take_along_axis(flat, arg[..., None], axis=-1)[..., 0]
        y = np.ascontiguousarray(y, dtype=x.dtype)
        if self._keep():
            self._saved = arg
            self._geom = (shape, (hp, wp), (ho, wo), unbatched, x.dtype)
        if not self.return_indices:
            return y[0] if unbatched else y
        rows, cols = self._sources(arg, ho, wo)
        index = (rows - ph) * w + (cols - pw)
        return (y[0], index[0]) if unbatched else (y, index)

    def _sources(self, arg: np.ndarray, ho: int, wo: int) -> tuple[np.ndarray, np.ndarray]:
        """The padded input's row and column of each window's maximum (``arg``: its index in
        the window's row-major order), as int64 arrays of the output's shape."""
        kw, (sh, sw), (dh, dw) = self.kernel_size[1], self.stride, self.dilation
        rows = np.arange(ho)[:, None] * sh + (arg // kw) * dh  # (N, C, Ho, Wo) broadcast
        cols = np.arange(wo)[None, :] * sw + (arg % kw) * dw
        return rows, cols

    def _backward(self, grad_out: np.ndarray, internal: bool, input_grad: bool) -> Any:
        geom = self._geom
        g, arg = self._grad_in(grad_out)
        (n, c, h, w), (hp, wp), (ho, wo), unbatched, dtype = geom
        (ph, pw) = self.padding
        rows, cols = self._sources(arg, ho, wo)
        plane = np.arange(n * c).reshape(n, c, 1, 1) * (hp * wp)
        index = (plane + rows * wp + cols).ravel()
        dxp = np.bincount(index, weights=g.ravel(), minlength=n * c * hp * wp)
        dx = dxp.reshape(n, c, hp, wp)[:, :, ph : ph + h, pw : pw + w]
        dx = np.ascontiguousarray(dx, dtype=dtype)
        return dx[0] if unbatched else dx

    def extra_repr(self) -> str:
        return (
            f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
            f"dilation={self.dilation}, ceil_mode={self.ceil_mode}"
            + (", return_indices=True" if self.return_indices else "")
        )


class AvgPool2d(_Pool2d):
    """Mean over each window, PyTorch's ``AvgPool2d`` on ``(N, C, H, W)`` or ``(C, H, W)``.

    ``y[n, c, h, w] = sum_{i, j} xp[n, c, h*sH + i, w*sW + j] / divisor[h, w]`` with ``xp`` the
    input padded with zeros. PyTorch's divisor: with ``h0 = h*sH - pH`` and ``h1 = min(h0 + kH,
    H + pH)`` (likewise ``w``), ``divisor = (h1 - h0) * (w1 - w0)`` when ``count_include_pad``
    (the padding counts, the part of a ceil-mode window beyond it does not), else the number of
    input positions in the window; ``divisor_override`` replaces both. ``stride`` defaults to
    ``kernel_size``; output size as :class:`MaxPool2d` (dilation 1).

    Backward: ``dx`` gets ``g[n, c, h, w] / divisor[h, w]`` at every position of the window.
    """

    def __init__(
        self,
        kernel_size: Any,
        stride: Any = None,
        padding: Any = 0,
        ceil_mode: bool = False,
        count_include_pad: bool = True,
        divisor_override: int | None = None,
    ) -> None:
        super().__init__(kernel_size, stride, padding, ceil_mode)
        if not isinstance(count_include_pad, (bool, np.bool_)):
            raise TypeError(
                f"AvgPool2d: count_include_pad must be a bool, got {count_include_pad!r}"
            )
        if divisor_override is not None and (
            isinstance(divisor_override, bool)
            or not isinstance(divisor_override, (int, np.integer))
            or divisor_override == 0
        ):
            raise ValueError(f"AvgPool2d: divisor must be not zero, got {divisor_override!r}")
        self.count_include_pad = bool(count_include_pad)
        self.divisor_override = None if divisor_override is None else int(divisor_override)

    def _divisor(self, h: int, w: int, ho: int, wo: int) -> np.ndarray:
        """``(H_out, W_out)`` divisors, PyTorch's rule (see the class docstring)."""
        if self.divisor_override is not None:
            return np.full((ho, wo), float(self.divisor_override))
        sizes = []
        for d, (size, out) in enumerate(((h, ho), (w, wo))):
            k, s, p = self.kernel_size[d], self.stride[d], self.padding[d]
            start = np.arange(out) * s - p
            end = np.minimum(start + k, size + p)
            if self.count_include_pad:
                sizes.append(end - start)
            else:
                sizes.append(np.minimum(end, size) - np.maximum(start, 0))
        return np.outer(sizes[0], sizes[1]).astype(np.float64)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """The window means of ``x``."""
        x = _float_input(self, x)
        x, unbatched, (shape, (hp, wp), (ho, wo)) = self._layout(x)
        n, c, h, w = shape
        (ph, pw), cd = self.padding, _compute(x.dtype)
        xp = np.zeros((n, c, hp, wp), cd)
        xp[:, :, ph : ph + h, pw : pw + w] = x
        win = _windows(xp, self.kernel_size, self.stride, (1, 1), (ho, wo))
        div = self._divisor(h, w, ho, wo).astype(cd)
        y = np.ascontiguousarray(win.sum(axis=(-2, -1)) / div, dtype=x.dtype)
        if self._keep():
            self._saved = div
            self._geom = (shape, (hp, wp), (ho, wo), unbatched, x.dtype)
        return y[0] if unbatched else y

    def _backward(self, grad_out: np.ndarray, internal: bool, input_grad: bool) -> Any:
        geom = self._geom
        g, div = self._grad_in(grad_out)
        (n, c, h, w), (hp, wp), (ho, wo), unbatched, dtype = geom
        (kh, kw), (ph, pw) = self.kernel_size, self.padding
        share = g / div
        dxp = np.zeros((n, c, hp, wp), share.dtype)
        dwin = np.broadcast_to(share[..., None, None], (n, c, ho, wo, kh, kw))
        _add_windows(dxp, dwin, self.stride, (1, 1))
        dx = np.ascontiguousarray(dxp[:, :, ph : ph + h, pw : pw + w], dtype=dtype)
        return dx[0] if unbatched else dx

    def extra_repr(self) -> str:
        return (
            f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"
            + (f", ceil_mode={self.ceil_mode}" if self.ceil_mode else "")
            + ("" if self.count_include_pad else ", count_include_pad=False")
        )


class AdaptiveAvgPool2d(Module):
    """Mean over PyTorch's adaptive bins, so that the output is ``output_size``
    (``AdaptiveAvgPool2d(1)``: the global average pool of a CNN head).

    Output row ``i`` of ``H_out`` averages input rows ``floor(i*H/H_out)`` to ``ceil((i+1)*H/
    H_out) - 1`` (bins may overlap when ``H_out`` does not divide ``H``); likewise columns.
    ``output_size``: an int, or ``(h, w)`` where ``None`` keeps that input size. Backward
    spreads ``g / bin size`` over each bin (overlaps add up).
    """

    _state_attrs = ("_geom",)

    def __init__(self, output_size: Any) -> None:
        super().__init__()
        items = tuple(output_size) if isinstance(output_size, (tuple, list)) else (
            output_size, output_size
        )
        if len(items) != 2 or any(
            v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1)
            for v in items
        ):
            raise ValueError(
                "AdaptiveAvgPool2d: output_size must be a positive int or a pair of positive "
                f"ints (or None), got {output_size!r}"
            )
        self.output_size = output_size
        self._size = tuple(None if v is None else int(v) for v in items)
        self._geom: Any = None

    def _reset(self) -> None:
        self._geom = None

    @staticmethod
    def _bins(size: int, out: int) -> list[tuple[int, int]]:
        return [((i * size) // out, -((-(i + 1) * size) // out)) for i in range(out)]

    def forward(self, x: np.ndarray) -> np.ndarray:
        """``x`` ``(N, C, H, W)`` averaged to ``(N, C, H_out, W_out)``."""
        x = _float_input(self, x)
        x, unbatched = _image_input(self, x, None)
        n, c, h, w = x.shape
        ho = h if self._size[0] is None else self._size[0]
        wo = w if self._size[1] is None else self._size[1]
        cd = _compute(x.dtype)
        xc = x.astype(cd, copy=False)
        if (ho, wo) == (1, 1):
            y = xc.mean(axis=(2, 3), keepdims=True)
        elif h % ho == 0 and w % wo == 0:  # equal, disjoint bins: one reshape
            y = xc.reshape(n, c, ho, h // ho, wo, w // wo).mean(axis=(3, 5))
        else:
            y = np.empty((n, c, ho, wo), cd)
            for i, (h0, h1) in enumerate(self._bins(h, ho)):
                for j, (w0, w1) in enumerate(self._bins(w, wo)):
                    y[:, :, i, j] = xc[:, :, h0:h1, w0:w1].mean(axis=(2, 3))
        y = np.ascontiguousarray(y, dtype=x.dtype)
        if self._keep():
            self._geom = (x.shape, (ho, wo), unbatched, x.dtype)
        return y[0] if unbatched else y

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        """dLoss/d(input) for dLoss/d(output) ``grad_out``."""
        return self._legacy(self._backward, grad_out, False, True)

    def _backward(self, grad_out: np.ndarray, internal: bool, input_grad: bool) -> Any:
        geom = self._geom
        if geom is None:
            raise self._nothing_saved()
        (n, c, h, w), (ho, wo), unbatched, dtype = geom
        g = _as_float_array(grad_out, self._label(), "grad_out", dtype)
        expected = (c, ho, wo) if unbatched else (n, c, ho, wo)
        if g.shape != expected:
            raise ValueError(
                f"{self._label()}: grad_out must have the output's shape {expected}, got "
                f"{g.shape}"
            )
        self._geom = None
        self._freed = True
        g = (g[None] if unbatched else g).astype(_compute(dtype), copy=False)
        dx = np.zeros((n, c, h, w), g.dtype)
        for i, (h0, h1) in enumerate(self._bins(h, ho)):
            for j, (w0, w1) in enumerate(self._bins(w, wo)):
                dx[:, :, h0:h1, w0:w1] += (g[:, :, i, j] / ((h1 - h0) * (w1 - w0)))[..., None, None]
        dx = dx.astype(dtype, copy=False)
        return dx[0] if unbatched else dx

    def extra_repr(self) -> str:
        return f"output_size={self.output_size}"
