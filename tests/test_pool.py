"""minnet's thread pool (minnet._pool): the row-ownership rule, pool path = serial path, gradients,
the fallback, the on-disk cache in a second process, and no second thread pool during a step."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import minnet
from minnet import _pool, threads

nn = minnet.nn


def _needs_pool() -> None:
    if threads._pool_max() < 2:
        pytest.skip(f"minnet's thread pool is off or has one thread here ({_pool.reason()})")


@pytest.fixture
def small_pool(monkeypatch: pytest.MonkeyPatch):
    """Every layer and optimizer group of the small test models takes the pool path."""
    _needs_pool()
    monkeypatch.setattr(_pool, "LINEAR_MIN_WORK", 0)
    monkeypatch.setattr(_pool, "OPTIM_MIN_SIZE", 0)
    yield
    minnet.set_num_threads(None)


# -- the ownership rule -----------------------------------------------------------------------


@pytest.mark.parametrize("rows", [1, 2, 3, 7, 100, 101])
@pytest.mark.parametrize("t_count", [1, 2, 3, 4])
def test_owned_rows_partition_every_row_once(rows: int, t_count: int) -> None:
    parts = [_pool.owned_rows(rows, t, t_count) for t in range(t_count)]
    assert parts[0][0] == 0 and parts[-1][1] == rows
    for (_, hi), (lo, _) in zip(parts, parts[1:]):
        assert hi == lo
    sizes = [hi - lo for lo, hi in parts]
    assert max(sizes) - min(sizes) <= 1


def test_thread_segments_are_the_owned_rows_of_each_parameter() -> None:
    params = [
        nn.Parameter(np.arange(12.0, dtype=np.float32).reshape(3, 4), "w"),
        nn.Parameter(np.arange(5.0, dtype=np.float32), "b"),
        nn.Parameter(np.array(7.0, dtype=np.float32), "s"),
        nn.Parameter(np.arange(24.0, dtype=np.float32).reshape(3, 2, 4), "k"),
    ]
    opt = minnet.optim.SGD(params, lr=0.1)
    flat = opt._groups[0]
    segs = flat.thread_segments(2)
    assert segs.shape == (2, 4, 2)
    for j, p in enumerate(params):
        rows = p.data.shape[0] if p.data.ndim else 1
        for t in range(2):
            r0, r1 = _pool.owned_rows(rows, t, 2)
            lo, hi = segs[t, j]
            # thread t's flat range is exactly rows r0:r1 of the parameter's view
            expected = p.data.reshape(rows, -1)[r0:r1].ravel()
            np.testing.assert_array_equal(flat.data[lo:hi], expected)
    params[1].requires_grad = False
    segs = flat.thread_segments(2)
    assert segs.shape == (2, 3, 2)  # the frozen bias is nobody's
    bias_lo, bias_hi = flat.offsets[1], flat.offsets[2]
    assert all(hi <= bias_lo or lo >= bias_hi for lo, hi in segs.reshape(-1, 2))


# -- pool path = serial path ------------------------------------------------------------------


def _mlp(seed: int = 0) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(40, 32, rng=seed), nn.ReLU(), nn.Linear(32, 16, rng=seed + 1), nn.ReLU(),
        nn.Linear(16, 3, rng=seed + 2),
    )  # fmt: skip


OPTIMIZERS = {
    "adam_amsgrad": lambda ps: minnet.optim.Adam(ps, lr=1e-2, amsgrad=True),
    "sgd_momentum": lambda ps: minnet.optim.SGD(ps, lr=1e-2, momentum=0.9, nesterov=True),
    "rmsprop_centered": lambda ps: minnet.optim.RMSprop(ps, lr=1e-3, momentum=0.5, centered=True),
    "lion": lambda ps: minnet.optim.Lion(ps, lr=1e-3),
}


def _train(make_opt, threads_: int, steps: int = 20, **opt_kw):
    minnet.set_num_threads(threads_)
    gen = np.random.default_rng(1)
    x = gen.standard_normal((24, 40)).astype(np.float32)
    y = gen.standard_normal((24, 3)).astype(np.float32)
    model = _mlp()
    loss_fn = nn.MSELoss()
    opt = make_opt(model.parameters())
    for k, v in opt_kw.items():
        setattr(opt, k, v)
    losses, stats = [], []
    for _ in range(steps):
        loss = loss_fn(model(x), y)
        losses.append(loss.item())
        opt.zero_grad()
        model.backward(loss_fn.backward())
        opt.step()
        stats.append(opt.stats)
    return np.array(losses), [p.data.copy() for p in model.parameters()], stats


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_pool_path_trains_like_the_serial_path(name: str, small_pool, monkeypatch) -> None:
    used = {"linear": 0, "optim": 0}
    fwd, opt_step = _pool.linear_forward, _pool.optimizer_step

    def count_fwd(*a, **k):
        used["linear"] += 1
        return fwd(*a, **k)

    def count_opt(*a, **k):
        out = opt_step(*a, **k)
        used["optim"] += out is not None
        return out

    monkeypatch.setattr(_pool, "linear_forward", count_fwd)
    monkeypatch.setattr(_pool, "optimizer_step", count_opt)
    pooled = _train(OPTIMIZERS[name], 2)
    assert used == {"linear": 3 * 20, "optim": 20}  # every layer, every step, on the pool
    serial = _train(OPTIMIZERS[name], 1)
    assert used == {"linear": 3 * 20, "optim": 20}  # one thread: the serial path
    np.testing.assert_allclose(pooled[0], serial[0], rtol=1e-5)
    for a, b in zip(pooled[1], serial[1]):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_pool_path_sums_the_stats_of_every_block(small_pool) -> None:
    make = OPTIMIZERS["adam_amsgrad"]
    pooled = _train(make, 2, steps=5, track_stats=True)[2]
    serial = _train(make, 1, steps=5, track_stats=True)[2]
    for a, b in zip(pooled, serial):
        assert a.n_params == b.n_params and a.nonfinite == b.nonfinite == 0
        assert a.eps_dominated == pytest.approx(b.eps_dominated, abs=2 / b.n_params)
        assert a.update_rms == pytest.approx(b.update_rms, rel=1e-4)


def test_check_finite_refuses_before_the_pool_writes(small_pool) -> None:
    minnet.set_num_threads(2)
    model = _mlp()
    opt = minnet.optim.Adam(model.parameters(), lr=1e-2, check_finite=True)
    before = [p.data.copy() for p in model.parameters()]
    for p in model.parameters():
        p.grad[...] = 1
    model[0].weight.grad[5, 3] = np.nan
    with pytest.raises(FloatingPointError, match="0.weight"):
        opt.step()
    for p, b in zip(model.parameters(), before):
        np.testing.assert_array_equal(p.data, b)


# -- gradients --------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["C", "F"])
def test_pool_backward_adds_into_grad_as_the_formulas_say(small_pool, dtype, layout) -> None:
    minnet.set_num_threads(2)
    gen = np.random.default_rng(2)
    lin = nn.Linear(30, 9, dtype=dtype, rng=3)
    x = gen.standard_normal((7, 30)).astype(dtype)
    g = gen.standard_normal((7, 9)).astype(dtype)
    x_in, g_in = (x, g) if layout == "C" else (np.asfortranarray(x), np.asfortranarray(g))
    w0, gw0, gb0 = lin.weight.data.copy(), gen.standard_normal((9, 30)), gen.standard_normal(9)
    lin.weight.grad[...] = gw0
    lin.bias.grad[...] = gb0
    tol = {"rtol": 1e-5, "atol": 1e-5} if dtype == np.float32 else {"rtol": 1e-12}
    np.testing.assert_allclose(lin(x_in), x @ w0.T + lin.bias.data, **tol)
    dx = lin.backward(g_in)
    np.testing.assert_allclose(lin.weight.grad, gw0 + g.T @ x, **tol)
    np.testing.assert_allclose(lin.bias.grad, gb0 + g.sum(0), **tol)
    np.testing.assert_allclose(dx, g @ w0, **tol)
    # a frozen weight keeps its .grad; a cleared bias .grad starts from the new gradient
    lin.weight.requires_grad = False
    lin.bias.grad = None
    frozen = lin.weight.grad.copy()
    lin(x_in)
    lin.backward(g_in)
    np.testing.assert_array_equal(lin.weight.grad, frozen)
    np.testing.assert_allclose(lin.bias.grad, g.sum(0), **tol)


def test_no_blas_pool_runs_beside_minnets_pool(small_pool, monkeypatch) -> None:
    from threadpoolctl import threadpool_info

    seen: list[set[int]] = []
    inner_fwd, inner_opt = _pool.linear_forward, _pool.optimizer_step

    def blas_threads() -> set[int]:
        return {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}

    def fwd(*a, **k):
        seen.append(blas_threads())
        return inner_fwd(*a, **k)

    def opt(*a, **k):
        seen.append(blas_threads())
        return inner_opt(*a, **k)

    monkeypatch.setattr(_pool, "linear_forward", fwd)
    monkeypatch.setattr(_pool, "optimizer_step", opt)
    _train(OPTIMIZERS["sgd_momentum"], 2, steps=2)
    assert len(seen) == 2 * 3 + 2
    assert all(s == {1} for s in seen), seen
    assert minnet.get_num_threads() == 2


# -- the fallback and the on-disk cache (fresh processes) -------------------------------------

_CHILD = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import minnet
    from minnet import _pool
    nn = minnet.nn
    minnet.set_num_threads(int(sys.argv[1]))
    gen = np.random.default_rng(0)
    x = gen.standard_normal((64, 600)).astype(np.float32)
    y = gen.standard_normal((64, 4)).astype(np.float32)
    model = nn.Sequential(nn.Linear(600, 64, rng=1), nn.ReLU(), nn.Linear(64, 4, rng=2))
    loss_fn = nn.MSELoss()
    opt = minnet.optim.Adam(model.parameters(), lr=1e-3, amsgrad=True)
    losses = []
    for _ in range(5):
        losses.append(loss_fn(model(x), y).item())
        opt.zero_grad()
        model.backward(loss_fn.backward())
        opt.step()
    fns = [_pool._forward, _pool._backward]
    fns += [_pool.optimizer_driver(k) for k in _pool._used]
    print(json.dumps({
        "available": _pool.available(), "reason": _pool.reason(),
        "threads": minnet.get_num_threads(), "losses": losses,
        "layer": _pool.threading_layer(),
        "hits": [sum(f.stats.cache_hits.values()) for f in fns],
        "misses": [sum(f.stats.cache_misses.values()) for f in fns],
    }))
    """
)


def _child(threads_: int, **env: str) -> dict:
    out = subprocess.run(
        [sys.executable, "-c", _CHILD, str(threads_)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_a_second_process_loads_the_pool_code_from_the_cache() -> None:
    _needs_pool()
    _child(2)  # compiles what is not cached yet
    second = _child(2)
    assert second["available"] and second["layer"] == "omp"
    assert len(second["hits"]) == 3  # forward, backward, AMSGrad's driver
    assert second["misses"] == [0, 0, 0], second
    assert all(h > 0 for h in second["hits"]), second


def test_without_the_pool_everything_runs_the_serial_path() -> None:
    _needs_pool()
    off = _child(2, MINNET_POOL="0")
    assert not off["available"] and off["reason"] == "MINNET_POOL=0"
    assert off["hits"][:2] == [0, 0] and off["misses"][:2] == [0, 0]  # never compiled
    pooled = _child(2)
    np.testing.assert_allclose(off["losses"], pooled["losses"], rtol=1e-5)


def _fork_child(q) -> None:  # runs in a forked child of a process whose pool has started
    try:
        losses = _train(OPTIMIZERS["sgd_momentum"], 2, steps=2)[0]
        q.put(("ok", threads.pool_threads(), float(losses[-1])))
    except BaseException as e:  # pragma: no cover - reported to the parent
        q.put(("error", repr(e), 0.0))


def test_a_forked_child_runs_the_serial_path(small_pool) -> None:
    import multiprocessing

    _train(OPTIMIZERS["sgd_momentum"], 2, steps=1)  # the pool runs in this process
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_fork_child, args=(q,))
    p.start()
    status, n, loss = q.get(timeout=120)
    p.join(timeout=60)
    assert status == "ok" and n == 1 and np.isfinite(loss), (status, n)
    assert p.exitcode == 0


def test_the_lab_hold_means_the_serial_path() -> None:
    _needs_pool()
    with threads.hold():
        assert threads.pool_threads() == 1 and minnet.get_num_threads() == 1


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
@pytest.mark.filterwarnings("ignore::minnet.optim.EpsWarning")  # float16 state on purpose
def test_16bit_optimizer_steps_on_the_pool_bit_for_bit(small_pool, dtype: str) -> None:
    """16-bit buffers (untracked) take the pool too; every kernel is elementwise, so the bits
    equal one serial call's, the word-pair loop's odd segment starts included."""
    from minnet.dtypes import as_dtype

    dt = as_dtype(dtype)
    gen = np.random.default_rng(3)
    results = []
    for threads_ in (2, 1):
        minnet.set_num_threads(threads_)
        ps = [nn.Parameter(gen.standard_normal(s).astype(dt)) for s in ((37, 11), (9,), (5, 3))]
        opt = minnet.optim.Adam(ps, lr=1e-2, amsgrad=True)
        calls = []
        real = _pool.optimizer_step

        def spy(*a, real=real, calls=calls, **k):
            out = real(*a, **k)
            calls.append(out is not None)
            return out

        _pool.optimizer_step = spy
        try:
            for _ in range(3):
                for p in ps:
                    p.grad[...] = gen.standard_normal(p.data.shape).astype(dt)
                opt.step()
        finally:
            _pool.optimizer_step = real
        assert calls == ([True] * 3 if threads_ == 2 else [])
        results.append([p.data.view(np.uint16).copy() for p in ps])
        gen = np.random.default_rng(3)
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)
