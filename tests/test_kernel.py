"""Adam's compiled kernel: its IEEE behaviour (NaN through the AMSGrad max), its tracked counts
against a NumPy recount of Adam's eps rule, and the skeleton's disk cache across processes.

The kernel against the NumPy reference for every optimizer and variant (float64 and float32,
the dry run, eps=0's 0/0), and the disk cache hit in a second process for every optimizer,
are in tests/test_optim_family.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from minnet.optim._kernel import kernel
from minnet.optim.adam import (
    MAX_RAW,
    NO_MAX,
    RULE,
    AdamScalars,
    adam_reference,
    adam_scalars,
)


def adam_step_numba(
    param, grad, m, v, vmax, scratch, s, mode, ams, track, write, decoupled=False
):  # type: ignore[no-untyped-def]
    """Adam's compiled pass for one variant (the AMSGrad max only when ``ams`` keeps one)."""
    state = (m, v) if ams == NO_MAX else (m, v, vmax)
    return kernel(RULE, (mode, ams, decoupled), track, write)(param, grad, *state, scratch, s)


def scalars64(**kw: object) -> AdamScalars:
    hp = dict(lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0, step=1)
    hp.update(kw)
    return adam_scalars(np.dtype(np.float64), **hp)


def test_nan_gradient_propagates_through_amsgrad_max() -> None:
    param, m, v, vmax = np.ones(3), np.zeros(3), np.zeros(3), np.zeros(3)
    s = scalars64(amsgrad=True)
    grad = np.array([np.nan, 1.0, 0.0])
    adam_step_numba(param, grad, m, v, vmax, np.empty(0), s, 0, MAX_RAW, False, True)
    assert np.isnan(vmax[0]) and np.isnan(param[0])
    assert np.isfinite(param[1:]).all()


def test_tracked_counts_match_a_numpy_recount() -> None:
    rng = np.random.default_rng(3)
    n = 5000
    finite = rng.standard_normal(n)
    grad = rng.standard_normal(n) * (rng.random(n) < 0.5)  # half the coordinates get g = 0
    s = scalars64(eps=1e-3)
    # The reference on finite parameters gives the expected update of every coordinate.
    ref = finite.copy()
    adam_reference(ref, grad, (np.zeros(n), v_ref := np.zeros(n)), s, (0, 0, False))
    param = finite.copy()
    param[:3] = np.nan  # three parameters are already NaN: the update leaves them NaN
    n_dom, n_bad, sum_sq = adam_step_numba(
        param, grad, np.zeros(n), np.zeros(n), np.empty(0), np.empty(n), s, 0, 0, True, True
    )
    assert n_dom == int(np.sum(s.eps >= np.sqrt(v_ref) / s.root_div))
    assert 0 < n_dom < n
    assert n_bad == 3
    assert sum_sq == pytest.approx(np.sum((ref - finite) ** 2), rel=1e-9)


def test_a_rule_from_an_unimportable_module_does_not_break_other_kernels(tmp_path) -> None:
    """Every kernel is built from the skeleton's one closure, so their disk-cache entries share a
    file name; a key naming a type from a module that another process cannot import (a user's
    script, a test's temporary module) must not make that process's kernels fail to load."""
    mod = tmp_path / "mod"
    mod.mkdir()
    (mod / "my_rule.py").write_text(
        textwrap.dedent(
            """
            from typing import NamedTuple
            import numpy as np
            from minnet.optim._kernel import Rule, element, kernel

            class MyScalars(NamedTuple):
                neg_lr: np.floating

            @element
            def update(p, g, state, s, o, rp, rs):
                return p, p + s.neg_lr * g, (), s.neg_lr * g, s.neg_lr * g, False, g

            a = np.ones(8)
            kernel(Rule(update), (), False, True)(a, a.copy(), a[:0], MyScalars(-0.1))
            """
        )
    )
    adam = textwrap.dedent(
        """
        import numpy as np
        from minnet.optim._kernel import kernel
        from minnet.optim.adam import RULE, adam_scalars
        a = np.ones(4)
        s = adam_scalars(np.dtype(np.float64), lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8,
                         weight_decay=0.0, step=1)
        kernel(RULE, (0, 0, False), False, True)(a, a.copy(), a * 0, a * 0, a[:0], s)
        print(a[0])
        """
    )
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    run = [sys.executable, "-c"]
    subprocess.run([*run, adam], env=env, check=True, capture_output=True)
    subprocess.run([*run, "import my_rule"], env=dict(env, PYTHONPATH=str(mod)), check=True,
                   capture_output=True)  # fmt: skip
    out = subprocess.run([*run, adam], env=env, check=True, capture_output=True, text=True)
    assert float(out.stdout) == pytest.approx(1.0 - 1e-3)


STEP_SCRIPT = textwrap.dedent(
    """
    import numpy as np
    import minnet.optim as optim
    from minnet.nn import Parameter
    for name in ("Adam", "NAdam", "SGD"):
        p = Parameter(np.ones(8))
        opt = getattr(optim, name)([p])
        kernel = opt._kernel(opt.param_groups[0], False, True)
        p.grad[...] = 1.0
        opt.step()
        print(name, sum(kernel.stats.cache_hits.values()))
    """
)


@pytest.mark.slow
def test_the_disk_cache_key_follows_the_files_a_kernel_reaches(tmp_path) -> None:
    """In a copy of the package: an edit of a file no kernel reaches (the lab) keeps every
    kernel on disk; an edit of ``adam.py`` recompiles Adam and NAdam (whose rule calls Adam's
    ``moments``) but not SGD."""
    import shutil

    import minnet

    root = tmp_path / "src"
    shutil.copytree(os.path.dirname(minnet.__file__), root / "minnet",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "cache"), PYTHONPATH=str(root))

    def hits() -> dict[str, int]:
        out = subprocess.run([sys.executable, "-c", STEP_SCRIPT], env=env, cwd=tmp_path,
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
        return {name: int(n) for name, n in (line.split() for line in out.splitlines())}

    def touch(path) -> None:
        st = os.stat(path)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))

    assert hits() == {"Adam": 0, "NAdam": 0, "SGD": 0}  # the first process compiles
    touch(root / "minnet" / "lab" / "plots.py")
    assert hits() == {"Adam": 1, "NAdam": 1, "SGD": 1}  # nothing a kernel reaches changed
    touch(root / "minnet" / "optim" / "adam.py")
    assert hits() == {"Adam": 0, "NAdam": 0, "SGD": 1}
