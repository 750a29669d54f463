"""Record PyTorch's outputs and gradients for minnet's convolution, pooling and attention layers.

Run by hand in an environment with PyTorch (the tests only replay the file and need no torch):

    PYTHONPATH=. /path/to/torch-env/bin/python scripts/make_conv_attention_fixtures.py
    # writes tests/fixtures/conv_attention_torch.npz

Every case is one layer with its PyTorch keyword arguments, run in float64 and float32 on inputs
and parameters drawn here with NumPy (stored in the file, so the replay uses the same numbers and
loads the same parameters). Keys per case and dtype, ``<case>/<dtype>/<name>``:

* inputs: ``x`` (Conv2d and pools), ``q``, ``k``, ``v`` (attention; a self-attention case stores
  ``q`` only and passes the same array three times), masks (``attn_mask``,
  ``key_padding_mask``), parameters ``p:<name>`` (PyTorch's ``named_parameters`` names);
* ``grad``: the upstream gradient of the (first) output;
* PyTorch's results: ``out``, ``weights`` (MultiheadAttention with ``need_weights``),
  ``indices`` (MaxPool2d with ``return_indices``), input
  gradients ``dx`` / ``dq``, ``dk``, ``dv``, parameter gradients ``g:<name>``.

``cases`` is the JSON list ``[name, class, constructor kwargs, call kwargs, input spec]``;
``torch_version`` the version that recorded them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "conv_attention_torch.npz"

# (name, class, constructor kwargs, call kwargs, input spec)
# Input specs: "img" x (2, 4, 7, 6); "img1" (2, 1, 8, 8); "ties" small integers (2, 3, 6, 6) for
# max-pool ties; "sdpa" q (2, 3, 5, 4), k/v (2, 3, 6, 4); "sdpa_self" one (2, 5, 4) array;
# "mha_self" x (5, 2, 8) as query = key = value; "mha_cross" q (5, 2, 8), k/v (7, 2, 8);
# "mha_bf" batch_first q (2, 5, 8), k/v (2, 7, 8); "mha_unbatched" q (5, 8), k/v (7, 8).
# Masks in call kwargs are spec strings, drawn in make_masks.
# fmt: off
CASES: list[tuple[str, str, dict, dict, str]] = [
    ("conv", "Conv2d", {"in_channels": 4, "out_channels": 6, "kernel_size": 3}, {}, "img"),
    ("conv_stride_pad", "Conv2d", {"in_channels": 4, "out_channels": 6, "kernel_size": (3, 2),
                                   "stride": 2, "padding": 1}, {}, "img"),
    ("conv_same_dilation", "Conv2d", {"in_channels": 4, "out_channels": 5, "kernel_size": 3,
                                      "padding": "same", "dilation": 2}, {}, "img"),
    ("conv_same_even", "Conv2d", {"in_channels": 4, "out_channels": 3, "kernel_size": (4, 2),
                                  "padding": "same"}, {}, "img"),
    ("conv_groups", "Conv2d", {"in_channels": 4, "out_channels": 6, "kernel_size": 3,
                               "groups": 2, "stride": (2, 1), "padding": (1, 2)}, {}, "img"),
    ("conv_depthwise_nobias", "Conv2d", {"in_channels": 4, "out_channels": 4, "kernel_size": 3,
                                         "groups": 4, "bias": False, "padding": "valid"}, {},
     "img"),
    ("conv_digits", "Conv2d", {"in_channels": 1, "out_channels": 8, "kernel_size": 3,
                               "padding": 1}, {}, "img1"),
    ("maxpool", "MaxPool2d", {"kernel_size": 2}, {}, "img"),
    ("maxpool_ceil_pad", "MaxPool2d", {"kernel_size": 3, "stride": 2, "padding": 1,
                                       "ceil_mode": True}, {}, "img"),
    ("maxpool_dilation", "MaxPool2d", {"kernel_size": 2, "stride": 1, "dilation": 2}, {}, "img"),
    ("maxpool_ties_overlap", "MaxPool2d", {"kernel_size": 3, "stride": 1, "padding": 1}, {},
     "ties"),
    ("maxpool_ties", "MaxPool2d", {"kernel_size": 2, "ceil_mode": True, "stride": 2}, {}, "ties"),
    ("avgpool", "AvgPool2d", {"kernel_size": 2}, {}, "img"),
    ("avgpool_ceil_pad", "AvgPool2d", {"kernel_size": 3, "stride": 2, "padding": 1,
                                       "ceil_mode": True}, {}, "img"),
    ("avgpool_no_pad_count", "AvgPool2d", {"kernel_size": 3, "stride": 2, "padding": 1,
                                           "ceil_mode": True, "count_include_pad": False}, {},
     "img"),
    ("avgpool_overlap", "AvgPool2d", {"kernel_size": (3, 2), "stride": 1}, {}, "img"),
    ("adaptive_1", "AdaptiveAvgPool2d", {"output_size": 1}, {}, "img"),
    ("adaptive_divisible", "AdaptiveAvgPool2d", {"output_size": (7, 3)}, {}, "img"),
    ("adaptive_uneven", "AdaptiveAvgPool2d", {"output_size": (3, 4)}, {}, "img"),
    ("adaptive_none", "AdaptiveAvgPool2d", {"output_size": (None, 4)}, {}, "img"),
    ("sdpa", "ScaledDotProductAttention", {}, {}, "sdpa"),
    ("sdpa_causal", "ScaledDotProductAttention", {}, {"is_causal": True}, "sdpa"),
    ("sdpa_bool_mask", "ScaledDotProductAttention", {}, {"attn_mask": "bool_ls"}, "sdpa"),
    ("sdpa_bool_mask_full_row", "ScaledDotProductAttention", {},
     {"attn_mask": "bool_ls_full_row"}, "sdpa"),
    ("sdpa_float_mask", "ScaledDotProductAttention", {}, {"attn_mask": "float_bhls"}, "sdpa"),
    ("sdpa_scale", "ScaledDotProductAttention", {"scale": 0.3}, {}, "sdpa"),
    ("sdpa_self_causal", "ScaledDotProductAttention", {}, {"is_causal": True}, "sdpa_self"),
    ("mha_self", "MultiheadAttention", {"embed_dim": 8, "num_heads": 2}, {}, "mha_self"),
    ("mha_self_heads", "MultiheadAttention", {"embed_dim": 8, "num_heads": 4},
     {"average_attn_weights": False}, "mha_self"),
    ("mha_cross", "MultiheadAttention", {"embed_dim": 8, "num_heads": 2}, {}, "mha_cross"),
    ("mha_kpm_bool", "MultiheadAttention", {"embed_dim": 8, "num_heads": 2},
     {"key_padding_mask": "kpm_bool"}, "mha_cross"),
    ("mha_kpm_float", "MultiheadAttention", {"embed_dim": 8, "num_heads": 2},
     {"key_padding_mask": "kpm_float"}, "mha_cross"),
    ("mha_attn_mask_bool", "MultiheadAttention", {"embed_dim": 8, "num_heads": 2},
     {"attn_mask": "mha_bool_ls"}, "mha_cross"),
    ("mha_attn_mask_3d_float", "MultiheadAttention", {"embed_dim": 8, "num_heads": 2},
     {"attn_mask": "mha_float_3d"}, "mha_cross"),
    ("mha_causal_kpm", "MultiheadAttention", {"embed_dim": 8, "num_heads": 2},
     {"attn_mask": "causal_bool", "is_causal": True, "key_padding_mask": "kpm_bool"},
     "mha_self"),
    ("mha_causal_no_weights", "MultiheadAttention", {"embed_dim": 8, "num_heads": 2},
     {"attn_mask": "causal_bool", "is_causal": True, "need_weights": False}, "mha_self"),
    ("mha_batch_first_no_weights", "MultiheadAttention",
     {"embed_dim": 8, "num_heads": 2, "batch_first": True},
     {"need_weights": False, "key_padding_mask": "kpm_bool"}, "mha_bf"),
    ("mha_no_bias", "MultiheadAttention", {"embed_dim": 8, "num_heads": 2, "bias": False}, {},
     "mha_cross"),
    ("mha_unbatched", "MultiheadAttention", {"embed_dim": 8, "num_heads": 2},
     {"attn_mask": "mha_bool_ls"}, "mha_unbatched"),
    ("conv_reflect", "Conv2d", {"in_channels": 4, "out_channels": 3, "kernel_size": 3,
                                "padding": (2, 3), "padding_mode": "reflect"}, {}, "img"),
    ("conv_replicate_stride", "Conv2d", {"in_channels": 4, "out_channels": 3,
                                         "kernel_size": (3, 2), "stride": 2, "padding": (3, 1),
                                         "padding_mode": "replicate"}, {}, "img"),
    ("conv_circular_dilation", "Conv2d", {"in_channels": 4, "out_channels": 2, "kernel_size": 3,
                                          "dilation": 2, "padding": (7, 6),
                                          "padding_mode": "circular"}, {}, "img"),
    ("conv_same_reflect_even", "Conv2d", {"in_channels": 4, "out_channels": 3,
                                          "kernel_size": (4, 2), "padding": "same",
                                          "padding_mode": "reflect"}, {}, "img"),
    ("maxpool_indices", "MaxPool2d", {"kernel_size": 3, "stride": 2, "padding": 1,
                                      "dilation": (1, 2), "return_indices": True}, {}, "img"),
    ("maxpool_indices_ties", "MaxPool2d", {"kernel_size": 2, "ceil_mode": True,
                                           "return_indices": True}, {}, "ties"),
    ("mha_kdim_vdim", "MultiheadAttention", {"embed_dim": 8, "num_heads": 2, "kdim": 6,
                                             "vdim": 3}, {"key_padding_mask": "kpm_bool"},
     "mha_kv_dims"),
    ("mha_kdim_vdim_bf_no_bias", "MultiheadAttention",
     {"embed_dim": 8, "num_heads": 4, "kdim": 6, "vdim": 3, "batch_first": True, "bias": False},
     {"average_attn_weights": False}, "mha_kv_bf"),
]
# fmt: on

SHAPES = {
    "img": (2, 4, 7, 6),
    "img1": (2, 1, 8, 8),
    "sdpa": ((2, 3, 5, 4), (2, 3, 6, 4)),
    "sdpa_self": (2, 5, 4),
    "mha_self": (5, 2, 8),
    "mha_cross": ((5, 2, 8), (7, 2, 8)),
    "mha_bf": ((2, 5, 8), (2, 7, 8)),
    "mha_unbatched": ((5, 8), (7, 8)),
    "mha_kv_dims": ((5, 2, 8), (7, 2, 6), (7, 2, 3)),
    "mha_kv_bf": ((2, 5, 8), (2, 7, 6), (2, 7, 3)),
}


def make_inputs(spec: str, rng: np.random.Generator) -> dict[str, np.ndarray]:
    if spec == "ties":
        return {"x": rng.integers(0, 3, (2, 3, 6, 6)).astype(np.float64)}
    shape = SHAPES[spec]
    if spec in ("img", "img1"):
        return {"x": rng.standard_normal(shape)}
    if spec in ("sdpa_self", "mha_self"):
        return {"q": rng.standard_normal(shape)}
    qs, ks, *vs = shape
    return {"q": rng.standard_normal(qs), "k": rng.standard_normal(ks),
            "v": rng.standard_normal(vs[0] if vs else ks)}  # fmt: skip


def make_mask(spec: str, L: int, S: int, n: int, heads: int, rng: np.random.Generator) -> Any:
    if spec == "bool_ls":
        m = rng.random((L, S)) > 0.3
        m[:, 0] = True  # no empty row
        return m
    if spec == "bool_ls_full_row":
        m = rng.random((L, S)) > 0.3
        m[:, 0] = True
        m[1] = False  # one row sees no key
        return m
    if spec == "float_bhls":
        return rng.standard_normal((2, 3, L, S))
    if spec == "kpm_bool":
        m = np.zeros((n, S), bool)
        m[0, -2:] = True
        m[1, 1] = True
        return m
    if spec == "kpm_float":
        return rng.standard_normal((n, S))
    if spec == "mha_bool_ls":
        m = rng.random((L, S)) < 0.3  # True: not allowed
        m[:, 0] = False
        return m
    if spec == "mha_float_3d":
        return rng.standard_normal((n * heads, L, S))
    if spec == "causal_bool":
        return ~np.tri(L, S, dtype=bool)
    raise ValueError(spec)



def torch_module(cls: str, kwargs: dict, dtype: torch.dtype) -> Any:
    if cls == "ScaledDotProductAttention":
        return None
    return getattr(torch.nn, cls)(**kwargs).to(dtype)


def record(case: tuple, dtype_name: str, rng_seed: int, store: dict[str, np.ndarray]) -> None:
    name, cls, ctor, call, spec = case
    rng = np.random.default_rng(rng_seed)
    dtype = {"float64": torch.float64, "float32": torch.float32}[dtype_name]
    npdt = np.dtype(dtype_name)
    key = f"{name}/{dtype_name}"
    inputs = {k: v.astype(npdt) for k, v in make_inputs(spec, rng).items()}
    tensors = {k: torch.tensor(v, requires_grad=True) for k, v in inputs.items()}
    for k, v in inputs.items():
        store[f"{key}/{k}"] = v
    module = torch_module(cls, ctor, dtype)
    if module is not None:
        # parameters drawn here (PyTorch's own init draws are not NumPy's)
        with torch.no_grad():
            for pname, p in module.named_parameters():
                values = (rng.standard_normal(tuple(p.shape)) * 0.5).astype(npdt)
                p.copy_(torch.tensor(values))
                store[f"{key}/p:{pname}"] = values
    kwargs = dict(call)
    if "q" in inputs:
        q = tensors["q"]
        k = tensors.get("k", q)
        if cls == "MultiheadAttention":
            bf = ctor.get("batch_first", False)
            if q.dim() == 2:
                L, S, n = q.shape[0], k.shape[0], 1
            elif bf:
                L, S, n = q.shape[1], k.shape[1], q.shape[0]
            else:
                L, S, n = q.shape[0], k.shape[0], q.shape[1]
        else:
            L, S, n = q.shape[-2], k.shape[-2], 1
        for mk in ("attn_mask", "key_padding_mask"):
            if mk in kwargs:
                m = make_mask(kwargs[mk], L, S, n, ctor.get("num_heads", 1), rng)
                if cls == "MultiheadAttention" and q.dim() == 2 and mk == "key_padding_mask":
                    m = m[0]
                m = m.astype(npdt) if m.dtype != bool else m
                store[f"{key}/{mk}"] = m
                kwargs[mk] = torch.tensor(m)
        args = (q, q, q) if "k" not in inputs else (q, tensors["k"], tensors["v"])
        if cls == "ScaledDotProductAttention":
            out = F.scaled_dot_product_attention(*args, **kwargs, scale=ctor.get("scale"))
            weights = None
        else:
            out, weights = module(*args, **kwargs)
    else:
        out = module(tensors["x"])
        weights = None
        if isinstance(out, tuple):  # MaxPool2d(return_indices=True)
            out, indices = out
            store[f"{key}/indices"] = indices.numpy()
    grad = rng.standard_normal(tuple(out.shape)).astype(npdt)
    store[f"{key}/grad"] = grad
    out.backward(torch.tensor(grad))
    store[f"{key}/out"] = out.detach().numpy()
    if weights is not None:
        store[f"{key}/weights"] = weights.detach().numpy()
    for k, t in tensors.items():
        store[f"{key}/d{k}"] = t.grad.numpy()
    if module is not None:
        for pname, p in module.named_parameters():
            store[f"{key}/g:{pname}"] = p.grad.numpy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    torch.manual_seed(0)
    store: dict[str, np.ndarray] = {}
    for i, case in enumerate(CASES):
        for dtype_name in ("float64", "float32"):
            record(case, dtype_name, 1000 + i, store)
    store["cases"] = np.array(json.dumps([list(c) for c in CASES]))
    store["torch_version"] = np.array(torch.__version__)
    np.savez_compressed(args.out, **store)
    print(f"wrote {len(CASES)} cases ({len(store)} arrays) to {args.out}")


if __name__ == "__main__":
    main()
