"""Attention: ``ScaledDotProductAttention`` and ``MultiheadAttention``, with hand-written backward.

Both compute, per batch entry and head, with ``q`` ``(L, E)``, ``k`` ``(S, E)``, ``v`` ``(S, Ev)``::

    s = q @ k.T * scale + bias          bias: 0 / -inf from a boolean mask, or a float mask
    p = softmax(s)                      stable: exp(s - max(s)) / sum(exp(s - max(s)))
    o = (p * m / (1 - dropout)) @ v     m: the dropout mask (training mode only), else p @ v

and backward, for ``G = dLoss/do`` (``pd = p * m / (1 - dropout)``)::

    dv = pd.T @ G       dpd = G @ v.T       dp = dpd * m / (1 - dropout)
    ds = p * (dp - sum(dp * p, -1)) * scale     dq = ds @ k     dk = ds.T @ q

A row whose every key is masked (bias ``-inf`` throughout) has no softmax: scaled dot-product
attention gives it ``p = 0`` (an output of 0 and no gradient), as PyTorch's
``scaled_dot_product_attention`` does; ``MultiheadAttention`` with ``need_weights=True`` gives
NaN there, as PyTorch's does (its weights path takes a plain softmax). A float16 or bfloat16
input is computed in float32 and each result rounded once to its dtype.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from minnet.nn._util import (
    _as_float_array,
    _asarray,
    _compute,
    _float_dtype,
    _is_float,
    _own_float_dtype,
)
from minnet.nn.init import xavier_uniform_
from minnet.nn.linear import Linear
from minnet.nn.module import Module
from minnet.nn.parameter import Parameter, _accumulate_grad
from minnet.random import default_generator, resolve_rng

__all__ = ["ScaledDotProductAttention", "MultiheadAttention", "scaled_dot_product_attention"]


def _softmax(s: np.ndarray, safe: bool) -> np.ndarray:
    """Stable softmax over the last axis; ``safe``: a row of ``-inf`` gives zeros (else NaN)."""
    m = s.max(axis=-1, keepdims=True)
    if safe:
        m = np.where(np.isneginf(m), m.dtype.type(0), m)
    with np.errstate(invalid="ignore"):  # -inf - -inf: the NaN row PyTorch gives too
        e = np.exp(s - m)
    z = e.sum(axis=-1, keepdims=True)
    if safe:
        z = np.where(z == 0, z.dtype.type(1), z)
    return e / z


def _swap(a: np.ndarray) -> np.ndarray:
    return np.swapaxes(a, -1, -2)


def _attend(q: np.ndarray, k: np.ndarray, v: np.ndarray, bias: np.ndarray | None, scale: float,
            keep: np.ndarray | None, safe: bool) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """``(o, p)``: the attention output and the softmax weights (before dropout)."""
    s = np.matmul(q, _swap(k))
    s *= s.dtype.type(scale)
    if bias is not None:
        s = s + bias
    p = _softmax(s, safe)
    return np.matmul(p if keep is None else p * keep, v), p


def _attend_backward(g: np.ndarray, q: np.ndarray, k: np.ndarray, v: np.ndarray, p: np.ndarray,
                     keep: np.ndarray | None, scale: float) -> tuple[np.ndarray, ...]:  # fmt: skip
    """``(dq, dk, dv)`` for ``G = dLoss/do`` (formulas in the module docstring)."""
    pd = p if keep is None else p * keep
    dv = np.matmul(_swap(pd), g)
    dp = np.matmul(g, _swap(v))
    if keep is not None:
        dp *= keep
    ds = p * (dp - (dp * p).sum(axis=-1, keepdims=True))
    ds *= ds.dtype.type(scale)
    return np.matmul(ds, k), np.matmul(_swap(ds), q), dv


def _unbroadcast(g: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``g`` summed over the axes that broadcasting added to an array of ``shape``."""
    if g.shape == shape:
        return g
    extra = g.ndim - len(shape)
    g = g.sum(axis=tuple(range(extra))) if extra else g
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    return g.sum(axis=axes, keepdims=True) if axes else g


def _mask_bias(mask: Any, where: str, dtype: np.dtype, true_attends: bool) -> np.ndarray:
    """An attention mask as an additive bias in ``dtype``: a boolean mask gives 0 where a key
    takes part and ``-inf`` where it does not (``true_attends``: True marks the keys that take
    part, as in ``scaled_dot_product_attention``; else True marks the keys to ignore, as in
    ``MultiheadAttention``); a float mask is added as it is."""
    arr = _asarray(mask, where, "mask")
    if arr.dtype == np.bool_:
        allowed = arr if true_attends else ~arr
        return np.where(allowed, dtype.type(0), dtype.type(-np.inf))
    if not _is_float(arr.dtype):
        raise TypeError(
            f"{where}: only bool and floating types of masks are supported, got {arr.dtype}"
        )
    return arr.astype(dtype)


def _dropout_keep(p: float, shape: tuple[int, ...], dtype: np.dtype,
                  rng: np.random.Generator | None) -> np.ndarray:  # fmt: skip
    """``m / (1 - p)``: Bernoulli(1 - p) keep mask (``u >= p``), scaled, as ``Dropout``."""
    if p == 1.0:
        return np.zeros(shape, dtype)
    gen = rng if rng is not None else default_generator()
    return (gen.random(shape) >= p).astype(dtype) / dtype.type(1.0 - p)


def _check_p(p: Any, where: str) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float, np.integer, np.floating)):
        raise TypeError(f"{where}: dropout probability must be a float, got {p!r}")
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"{where}: dropout probability has to be between 0 and 1, but got {p}")
    return float(p)


class ScaledDotProductAttention(Module):
    """``softmax(q @ k.T * scale + mask) @ v`` over the last two axes, with hand-written backward
    (PyTorch's ``F.scaled_dot_product_attention`` as a module; formulas in the module docstring).

    ``module(query, key, value, attn_mask=None, is_causal=False)`` with ``query`` ``(..., L,
    E)``, ``key`` ``(..., S, E)``, ``value`` ``(..., S, Ev)`` (leading axes broadcast) returns
    ``(..., L, Ev)``. ``scale`` defaults to ``1 / sqrt(E)``. ``attn_mask`` broadcasts to ``(...,
    L, S)``: boolean (True: the key takes part) or float (added to the scores).
    ``is_causal=True`` lets query ``i`` see keys ``j <= i`` only (PyTorch's top-left aligned
    ``tril``) and refuses an ``attn_mask``. A row whose every key is masked gives 0 (PyTorch's
    behaviour).

    ``backward(g)`` adds nothing into parameters (there are none) and returns ``(dq, dk, dv)``,
    or one array ``dq + dk + dv`` when query, key and value were the same array
    (self-attention); ``loss.backward()`` routes each gradient to the call that produced it.
    Masks get no gradient.

    Args:
        dropout_p: dropout on the attention weights in training mode (``module.train()``),
            drawn from ``rng`` (an int seed, a Generator, or ``None``: minnet's default
            generator, see ``minnet.manual_seed``). Default 0.
        scale: the factor of ``q @ k.T``; ``None`` (default) is ``1 / sqrt(E)``.
    """

    _state_attrs = ("_saved",)
    _inputs = ("query", "key", "value")

    def __init__(self, dropout_p: float = 0.0, scale: float | None = None, *,
                 rng: np.random.Generator | int | None = None) -> None:  # fmt: skip
        super().__init__()
        self.dropout_p = _check_p(dropout_p, "ScaledDotProductAttention")
        if scale is not None and (isinstance(scale, bool) or not isinstance(
            scale, (int, float, np.integer, np.floating)
        )):
            raise TypeError(f"ScaledDotProductAttention: scale must be a float, got {scale!r}")
        self.scale = None if scale is None else float(scale)
        self._rng = None if rng is None else resolve_rng(rng, "ScaledDotProductAttention")
        self._saved: Any = None

    def _reset(self) -> None:
        self._saved = None

    def forward(self, query: np.ndarray, key: np.ndarray, value: np.ndarray,
                attn_mask: Any = None, is_causal: bool = False) -> np.ndarray:  # fmt: skip
        """The attention output ``(..., L, Ev)`` (see the class docstring)."""
        same = query is key and key is value
        where = self._label()
        q = _as_float_array(query, where, "query", _own_float_dtype(_asarray(query, where, "q")))
        dtype = q.dtype
        k = q if same else _as_float_array(key, where, "key", dtype)
        v = q if same else _as_float_array(value, where, "value", dtype)
        if q.ndim < 2 or k.ndim < 2 or v.ndim < 2:
            raise ValueError(
                f"{where}: query, key and value need at least 2 dimensions (..., L, E), got "
                f"shapes {q.shape}, {k.shape}, {v.shape}"
            )
        if q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
            raise ValueError(
                f"{where}: expected query (..., L, E), key (..., S, E) and value (..., S, Ev); "
                f"got shapes {q.shape}, {k.shape}, {v.shape}"
            )
        try:
            batch = np.broadcast_shapes(q.shape[:-2], k.shape[:-2], v.shape[:-2])
        except ValueError:
            raise ValueError(
                f"{where}: the leading dimensions of query {q.shape}, key {k.shape} and value "
                f"{v.shape} do not broadcast"
            ) from None
        cd = _compute(dtype)
        q32, k32, v32 = (a.astype(cd, copy=False) for a in (q, k, v))
        L, S = q.shape[-2], k.shape[-2]
        bias = None
        if is_causal:
            if attn_mask is not None:
                raise ValueError(
                    f"{where}: explicit attn_mask should not be set when is_causal=True"
                )
            bias = np.where(np.tri(L, S, dtype=bool), cd.type(0), cd.type(-np.inf))
        elif attn_mask is not None:
            bias = _mask_bias(attn_mask, where, cd, true_attends=True)
            try:
                np.broadcast_shapes(bias.shape, batch + (L, S))
            except ValueError:
                raise ValueError(
                    f"{where}: attn_mask of shape {bias.shape} does not broadcast to the "
                    f"scores' shape {batch + (L, S)}"
                ) from None
        scale = 1.0 / math.sqrt(q.shape[-1]) if self.scale is None else self.scale
        keep = None
        if self.training and self.dropout_p > 0:
            keep = _dropout_keep(self.dropout_p, batch + (L, S), cd, self._rng)
        out, p = _attend(q32, k32, v32, bias, scale, keep, safe=True)
        if self._keep():
            self._saved = (q32, k32, v32, p, keep, scale, same, (q.shape, k.shape, v.shape),
                           dtype, out.shape)  # fmt: skip
        return out.astype(dtype, copy=False)

    def backward(self, grad_out: np.ndarray) -> Any:
        """``(dq, dk, dv)``, or ``dq + dk + dv`` for self-attention (one array)."""
        return self._legacy(self._backward, grad_out, False, True)

    def _backward(self, grad_out: np.ndarray, internal: bool, input_grad: bool) -> Any:
        saved = self._saved
        if saved is None:
            raise self._nothing_saved()
        q, k, v, p, keep, scale, same, shapes, dtype, out_shape = saved
        g = _as_float_array(grad_out, self._label(), "grad_out", dtype)
        if g.shape != out_shape:
            raise ValueError(
                f"{self._label()}: grad_out must have the output's shape {out_shape}, got "
                f"{g.shape}"
            )
        self._saved = None
        self._freed = True
        dq, dk, dv = _attend_backward(g.astype(q.dtype, copy=False), q, k, v, p, keep, scale)
        grads = [_unbroadcast(d, s).astype(dtype, copy=False) for d, s in zip((dq, dk, dv), shapes)]
        if same:
            return grads[0] + grads[1] + grads[2]
        return tuple(grads)

    def extra_repr(self) -> str:
        return f"dropout_p={self.dropout_p}, scale={self.scale}"


def scaled_dot_product_attention(
    query: np.ndarray,
    key: np.ndarray,
    value: np.ndarray,
    attn_mask: Any = None,
    dropout_p: float = 0.0,
    is_causal: bool = False,
    scale: float | None = None,
) -> np.ndarray:
    """PyTorch's ``F.scaled_dot_product_attention``: a fresh :class:`ScaledDotProductAttention`
    called once (so ``loss.backward()`` runs through it); dropout with ``dropout_p`` is applied
    whenever ``dropout_p > 0``, as PyTorch's function does (pass ``dropout_p=0.0`` in evaluation),
    with masks from minnet's default generator. A hand-written ``backward`` uses the module."""
    layer = ScaledDotProductAttention(dropout_p, scale)
    return layer(query, key, value, attn_mask=attn_mask, is_causal=is_causal)


class MultiheadAttention(Module):
    """PyTorch's ``MultiheadAttention``: ``num_heads`` attention heads over projections of the
    query, key and value, and an output projection.

    With ``W = in_proj_weight`` ``(3E, E)`` split into ``W_q, W_k, W_v`` and ``b =
    in_proj_bias``: ``Q = query @ W_q.T + b_q`` (likewise ``K``, ``V``), each split into
    ``num_heads`` heads of ``D = E / num_heads`` columns; per head ``O_h = softmax(Q_h @ K_h.T /
    sqrt(D) + mask) @ V_h`` (the module docstring's attention, with dropout ``dropout`` on the
    weights in training mode), and ``y = concat(O_h) @ out_proj.weight.T + out_proj.bias``.

    ``forward(query, key, value, key_padding_mask=None, need_weights=True, attn_mask=None,
    average_attn_weights=True, is_causal=False)`` returns ``(attn_output, attn_weights)``:

    * shapes ``(L, N, E)`` (``batch_first=False``, the default), ``(N, L, E)`` (``batch_first=
      True``) or unbatched ``(L, E)``; key and value ``(S, N, E)`` / ``(N, S, E)`` / ``(S, E)``.
    * ``key_padding_mask`` ``(N, S)``: boolean (True: the key is ignored) or float (added).
      ``attn_mask`` ``(L, S)`` or ``(N * num_heads, L, S)``: boolean (True: *not* allowed to
      attend, the opposite of ``scaled_dot_product_attention``) or float (added); both are
      turned into additive ``-inf``/float biases and summed, as PyTorch does.
    * ``is_causal`` is PyTorch's hint: it needs ``attn_mask`` (``RuntimeError`` otherwise), and
      with no ``key_padding_mask`` and ``need_weights=False`` the causal mask is used in place of
      ``attn_mask``.
    * ``attn_weights``: the (dropped-out) weights averaged over heads ``(N, L, S)``, per head
      ``(N, num_heads, L, S)`` with ``average_attn_weights=False``, ``None`` with
      ``need_weights=False``. They are not differentiable: a loss computed from them refuses to
      backpropagate. A row with every key masked gives NaN with ``need_weights=True`` and 0
      with ``need_weights=False``, as in PyTorch.

    ``backward(g)`` adds into ``in_proj_weight``, ``in_proj_bias``, ``out_proj.weight`` and
    ``out_proj.bias`` and returns the input gradient: one array for self-attention (query, key
    and value the same array; the sum of its three roles), else ``(dquery, dkey, dvalue)``.

    Parameters and initialisation as PyTorch: ``in_proj_weight`` Xavier uniform
    (``U(-a, a)``, ``a = sqrt(6 / (E + 3E))``), ``in_proj_bias`` and ``out_proj.bias`` zeros,
    ``out_proj.weight`` ``Linear``'s ``U(-1/sqrt(E), 1/sqrt(E))``. Keras's ``MultiHeadAttention``
    has separate query/key/value kernels of shape ``(E, heads, key_dim)``, Glorot uniform each.
    With ``kdim`` or ``vdim`` other than ``embed_dim`` (keys and values of other widths), the
    projections are three parameters as in PyTorch, ``q_proj_weight`` ``(E, E)``,
    ``k_proj_weight`` ``(E, kdim)`` and ``v_proj_weight`` ``(E, vdim)`` (Xavier uniform each),
    and ``in_proj_weight`` is ``None``. ``add_bias_kv`` and ``add_zero_attn`` are not
    implemented (``NotImplementedError``).

    Args:
        embed_dim: ``E``, divisible by ``num_heads``.
        num_heads: number of heads.
        dropout: dropout probability on the attention weights (training mode). Default 0.
        bias: ``in_proj_bias`` and ``out_proj.bias``. Default ``True``.
        kdim, vdim: the key's and the value's last dimension (``None``: ``embed_dim``).
        batch_first: ``(N, L, E)`` inputs and outputs instead of ``(L, N, E)``.
        dtype, rng: as for :class:`~minnet.nn.Linear`; ``rng`` also draws the dropout masks
            (``None``: minnet's default generator at each draw).
    """

    _state_attrs = ("_saved",)
    _inputs = ("query", "key", "value")

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        add_bias_kv: bool = False,
        add_zero_attn: bool = False,
        kdim: int | None = None,
        vdim: int | None = None,
        batch_first: bool = False,
        *,
        dtype: Any = np.float32,
        rng: np.random.Generator | int | None = None,
    ) -> None:
        for arg, value in (("embed_dim", embed_dim), ("num_heads", num_heads)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(
                    f"MultiheadAttention: {arg} must be a positive integer, got {value!r}"
                )
        if embed_dim % num_heads:
            raise ValueError(
                f"MultiheadAttention: embed_dim must be divisible by num_heads (embed_dim="
                f"{embed_dim}, num_heads={num_heads})"
            )
        if add_bias_kv or add_zero_attn:
            raise NotImplementedError(
                "MultiheadAttention: only add_bias_kv = add_zero_attn = False are implemented"
            )
        for arg, value in (("kdim", kdim), ("vdim", vdim)):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1
            ):
                raise ValueError(
                    f"MultiheadAttention: {arg} must be a positive integer or None, got {value!r}"
                )
        if not isinstance(bias, (bool, np.bool_)):
            raise TypeError(f"MultiheadAttention: bias must be a bool, got {bias!r}")
        super().__init__()
        self.embed_dim = int(embed_dim)
        self.kdim = self.embed_dim if kdim is None else int(kdim)
        self.vdim = self.embed_dim if vdim is None else int(vdim)
        self._qkv_same_embed_dim = self.kdim == self.embed_dim == self.vdim
        self.num_heads = int(num_heads)
        self.head_dim = self.embed_dim // self.num_heads
        self.dropout = _check_p(dropout, "MultiheadAttention")
        self.batch_first = bool(batch_first)
        self.dtype = _float_dtype(dtype, "MultiheadAttention")
        gen = resolve_rng(rng, "MultiheadAttention")
        self._rng = None if rng is None else gen
        e = self.embed_dim
        if self._qkv_same_embed_dim:
            self.in_proj_weight = Parameter(np.zeros((3 * e, e), self.dtype), "in_proj_weight")
            for name in ("q_proj_weight", "k_proj_weight", "v_proj_weight"):
                self.register_parameter(name, None)
        else:
            for name, width in (("q", e), ("k", self.kdim), ("v", self.vdim)):
                weight = Parameter(np.zeros((e, width), self.dtype), f"{name}_proj_weight")
                setattr(self, f"{name}_proj_weight", weight)
            self.register_parameter("in_proj_weight", None)
        if bias:
            self.in_proj_bias = Parameter(np.zeros(3 * e, self.dtype), "in_proj_bias")
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = Linear(e, e, bias=bool(bias), dtype=self.dtype, rng=gen)
        for weight in self._proj_weights():
            xavier_uniform_(weight, generator=gen)
        if bias:
            self.out_proj.bias.data[...] = 0
        self._saved: Any = None

    def _reset(self) -> None:
        self._saved = None

    def _proj_weights(self) -> list[Parameter]:
        """The parameters holding the query, key and value projections: ``[in_proj_weight]``,
        or ``[q_proj_weight, k_proj_weight, v_proj_weight]`` with other key/value widths."""
        if self._qkv_same_embed_dim:
            return [self.in_proj_weight]
        return [self.q_proj_weight, self.k_proj_weight, self.v_proj_weight]

    def _proj(self, i: int, cd: np.dtype) -> np.ndarray:
        """Projection ``i`` (0: query, 1: key, 2: value) as an ``(E, width)`` array of ``cd``."""
        if self._qkv_same_embed_dim:
            e = self.embed_dim
            return self.in_proj_weight.data[i * e : (i + 1) * e].astype(cd, copy=False)
        return self._proj_weights()[i].data.astype(cd, copy=False)

    # ---------------------------------------------------------------------------- checks

    def _inputs_nle(self, query: Any, key: Any, value: Any) -> tuple[Any, ...]:
        """``(q, k, v, same, unbatched)`` as ``(N, L, E)`` arrays of the model's dtype."""
        where = self._label()
        same = query is key and key is value
        q = _as_float_array(query, where, "query", self.dtype)
        k = q if same else _as_float_array(key, where, "key", self.dtype)
        v = q if same else _as_float_array(value, where, "value", self.dtype)
        if q.ndim not in (2, 3):
            raise ValueError(
                f"{where}: query should be unbatched 2-D or batched 3-D, but received "
                f"{q.ndim}-D query of shape {q.shape}"
            )
        if k.ndim != q.ndim or v.ndim != q.ndim:
            raise ValueError(
                f"{where}: for {q.ndim}-D query, key and value should be {q.ndim}-D, got "
                f"shapes {k.shape} and {v.shape}"
            )
        if q.shape[-1] != self.embed_dim:
            raise ValueError(
                f"{where}: was expecting embedding dimension of {self.embed_dim}, but got "
                f"query of shape {q.shape}"
            )
        if k.shape[:-1] != v.shape[:-1] or (k.shape[-1], v.shape[-1]) != (self.kdim, self.vdim):
            raise ValueError(
                f"{where}: key shape {k.shape} and value shape {v.shape} must be (S, N, kdim) "
                f"and (S, N, vdim) ((N, S, ...) with batch_first) with kdim={self.kdim}, "
                f"vdim={self.vdim}"
            )
        unbatched = q.ndim == 2
        if unbatched:
            q, k, v = q[None], k[None], v[None]
        elif not self.batch_first:
            q, k, v = (a.transpose(1, 0, 2) for a in (q, k, v))
        if q.shape[0] != k.shape[0]:
            raise ValueError(
                f"{where}: query and key have different batch sizes: shapes {query.shape} "
                f"and {key.shape} (batch_first={self.batch_first})"
            )
        return q, k, v, same, unbatched

    def _bias(self, n: int, L: int, S: int, key_padding_mask: Any, attn_mask: Any,
              cd: np.dtype, unbatched: bool) -> np.ndarray | None:  # fmt: skip
        """The merged additive mask, broadcastable to ``(N, H, L, S)`` (PyTorch's merge)."""
        where, h = self._label(), self.num_heads
        bias = None
        if attn_mask is not None:
            a = _mask_bias(attn_mask, where, cd, true_attends=False)
            if a.ndim == 2:
                if a.shape != (L, S):
                    raise ValueError(
                        f"{where}: the shape of the 2D attn_mask is {a.shape}, but should be "
                        f"{(L, S)}"
                    )
                bias = a
            elif a.ndim == 3:
                if a.shape != (n * h, L, S):
                    raise ValueError(
                        f"{where}: the shape of the 3D attn_mask is {a.shape}, but should be "
                        f"{(n * h, L, S)}"
                    )
                bias = a.reshape(n, h, L, S)
            else:
                raise ValueError(f"{where}: attn_mask's dimension {a.ndim} is not supported")
        if key_padding_mask is not None:
            kp = _mask_bias(key_padding_mask, where, cd, true_attends=False)
            expected = (S,) if unbatched else (n, S)
            if kp.shape != expected:
                raise ValueError(
                    f"{where}: expected key_padding_mask of shape {expected}, got {kp.shape}"
                )
            kp = kp.reshape(n, 1, 1, S)
            bias = kp if bias is None else bias + kp
        return bias

    # ---------------------------------------------------------------------------- passes

    def forward(
        self,
        query: np.ndarray,
        key: np.ndarray,
        value: np.ndarray,
        key_padding_mask: Any = None,
        need_weights: bool = True,
        attn_mask: Any = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """``(attn_output, attn_weights)`` (see the class docstring)."""
        q_in, k_in, v_in, same, unbatched = self._inputs_nle(query, key, value)
        if is_causal and attn_mask is None:
            raise RuntimeError(
                f"{self._label()}: Need attn_mask if specifying the is_causal hint. You may "
                "use the Transformer module method `generate_square_subsequent_mask` to "
                "create this mask."
            )
        n, L, e = q_in.shape
        S = k_in.shape[1]
        h, d = self.num_heads, self.head_dim
        cd = _compute(self.dtype)
        b = None if self.in_proj_bias is None else self.in_proj_bias.data.astype(cd, copy=False)
        q_in, k_in, v_in = (a.astype(cd, copy=False) for a in (q_in, k_in, v_in))
        if same:  # one array as query, key and value (so kdim = vdim = embed_dim)
            qkv = np.matmul(q_in, self.in_proj_weight.data.astype(cd, copy=False).T)
            if b is not None:
                qkv += b
            Q, K, V = qkv[..., :e], qkv[..., e : 2 * e], qkv[..., 2 * e :]
        else:
            Q, K, V = (
                np.matmul(x, self._proj(i, cd).T)
                + (0 if b is None else b[i * e : (i + 1) * e])
                for i, x in enumerate((q_in, k_in, v_in))
            )
        heads = [a.reshape(n, -1, h, d).transpose(0, 2, 1, 3) for a in (Q, K, V)]
        if is_causal and key_padding_mask is None and not need_weights:
            bias = np.where(np.tri(L, S, dtype=bool), cd.type(0), cd.type(-np.inf))
        else:
            bias = self._bias(n, L, S, key_padding_mask, attn_mask, cd, unbatched)
        keep = None
        if self.training and self.dropout > 0:
            keep = _dropout_keep(self.dropout, (n, h, L, S), cd, self._rng)
        scale = 1.0 / math.sqrt(d)
        o, p = _attend(*heads, bias, scale, keep, safe=not need_weights)
        o_cat = np.ascontiguousarray(o.transpose(0, 2, 1, 3)).reshape(n, L, e)
        wo = self.out_proj.weight.data.astype(cd, copy=False)
        y = np.matmul(o_cat, wo.T)
        if self.out_proj.bias is not None:
            y += self.out_proj.bias.data.astype(cd, copy=False)
        if self._keep():
            self._saved = ((q_in, k_in, v_in), heads, p, keep, scale, o_cat, same, unbatched)
        weights = None
        if need_weights:
            pd = p if keep is None else p * keep
            weights = pd.mean(axis=1) if average_attn_weights else pd
            weights = (weights[0] if unbatched else weights).astype(self.dtype, copy=False)
        y = y[0] if unbatched else (y if self.batch_first else y.transpose(1, 0, 2))
        return np.ascontiguousarray(y, dtype=self.dtype), weights

    def backward(self, grad_out: np.ndarray) -> Any:
        """Add into the parameters' ``.grad``; return ``dx`` (self-attention) or ``(dquery,
        dkey, dvalue)``."""
        return self._legacy(self._backward, grad_out, False, True)

    def _backward(self, grad_out: np.ndarray, internal: bool, input_grad: bool) -> Any:
        saved = self._saved
        if saved is None:
            raise self._nothing_saved()
        (q_in, k_in, v_in), heads, p, keep, scale, o_cat, same, unbatched = saved
        n, L, e = o_cat.shape
        h, d = self.num_heads, self.head_dim
        g = _as_float_array(grad_out, self._label(), "grad_out", self.dtype)
        expected = (L, e) if unbatched else ((n, L, e) if self.batch_first else (L, n, e))
        if g.shape != expected:
            raise ValueError(
                f"{self._label()}: grad_out must have the output's shape {expected}, got "
                f"{g.shape}"
            )
        self._saved = None
        self._freed = True
        cd = o_cat.dtype
        g = g.astype(cd, copy=False)
        g = g[None] if unbatched else (g if self.batch_first else g.transpose(1, 0, 2))
        g2 = g.reshape(n * L, e)
        out_proj = self.out_proj
        if out_proj.weight.requires_grad:
            dwo = np.matmul(g2.T, o_cat.reshape(n * L, e))
            _accumulate_grad(out_proj.weight, dwo.astype(self.dtype, copy=False), self)
        if out_proj.bias is not None and out_proj.bias.requires_grad:
            _accumulate_grad(out_proj.bias, g2.sum(axis=0).astype(self.dtype, copy=False), self)
        do = np.matmul(g, out_proj.weight.data.astype(cd, copy=False))
        do = do.reshape(n, L, h, d).transpose(0, 2, 1, 3)
        dqh, dkh, dvh = _attend_backward(do, *heads, p, keep, scale)
        dQ, dK, dV = (a.transpose(0, 2, 1, 3).reshape(n, -1, e) for a in (dqh, dkh, dvh))
        wp, bp = self.in_proj_weight, self.in_proj_bias
        if same:
            w = wp.data.astype(cd, copy=False)
            dqkv = np.concatenate((dQ, dK, dV), axis=-1).reshape(n * L, 3 * e)
            if wp.requires_grad:
                dw = np.matmul(dqkv.T, q_in.reshape(n * L, e))
                _accumulate_grad(wp, dw.astype(self.dtype, copy=False), self)
            if bp is not None and bp.requires_grad:
                _accumulate_grad(bp, dqkv.sum(axis=0).astype(self.dtype, copy=False), self)
            dx = np.matmul(dqkv, w).reshape(n, L, e)
            return self._to_layout(dx, unbatched)
        grads = []
        dws, dbs = [], []
        for i, (dy, x) in enumerate(((dQ, q_in), (dK, k_in), (dV, v_in))):
            dy2 = dy.reshape(-1, e)
            dws.append(np.matmul(dy2.T, x.reshape(-1, x.shape[-1])))
            dbs.append(dy2.sum(axis=0))
            grads.append(self._to_layout(np.matmul(dy, self._proj(i, cd)), unbatched))
        if self._qkv_same_embed_dim:
            if wp.requires_grad:
                _accumulate_grad(wp, np.concatenate(dws).astype(self.dtype, copy=False), self)
        else:
            for weight, dw in zip(self._proj_weights(), dws):
                if weight.requires_grad:
                    _accumulate_grad(weight, dw.astype(self.dtype, copy=False), self)
        if bp is not None and bp.requires_grad:
            _accumulate_grad(bp, np.concatenate(dbs).astype(self.dtype, copy=False), self)
        return tuple(grads)

    def _to_layout(self, a: np.ndarray, unbatched: bool) -> np.ndarray:
        """An ``(N, L, E)`` gradient in the layout of the input it belongs to."""
        if unbatched:
            a = a[0]
        elif not self.batch_first:
            a = a.transpose(1, 0, 2)
        return np.ascontiguousarray(a, dtype=self.dtype)

    def extra_repr(self) -> str:
        return (
            f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, dropout={self.dropout}, "
            f"batch_first={self.batch_first}"
            + ("" if self._qkv_same_embed_dim else f", kdim={self.kdim}, vdim={self.vdim}")
        )

    def __repr__(self) -> str:
        return (
            f"MultiheadAttention(\n  {self.extra_repr()}\n  (out_proj): "
            f"{self.out_proj!r}\n)"
        )

