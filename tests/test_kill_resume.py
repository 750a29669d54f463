"""Exact resume in a new process for every Adam variant, SGD and AdamW, and checkpoints that
survive SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from _train_with_checkpoints import checkpoint, fresh, train, variants
from test_checkpoint import assert_identical

import minnet

HELPER = str(Path(__file__).with_name("_train_with_checkpoints.py"))


def test_resume_in_new_process_is_bit_identical_for_every_variant(tmp_path: Path) -> None:
    straight, halfway = {}, {}
    for name, variant in variants().items():
        straight[name] = checkpoint(train(fresh(variant), 500))
        halfway[name] = checkpoint(train(fresh(variant), 250))
    minnet.save(halfway, tmp_path / "halfway.npz")
    subprocess.run(
        [sys.executable, HELPER, "resume", str(tmp_path / "halfway.npz"),
         str(tmp_path / "resumed.npz"), "500"],
        check=True,
        timeout=120,
    )  # fmt: skip
    resumed = minnet.load(tmp_path / "resumed.npz")
    assert list(resumed) == list(straight)
    for name in straight:
        # Parameters, optimizer state (step, exp_avg, exp_avg_sq, max_exp_avg_sq, param group),
        # step counter and RNG state, all bit for bit.
        assert_identical(straight[name], resumed[name], name)
        assert not np.array_equal(
            halfway[name]["model"]["0.weight"], straight[name]["model"]["0.weight"]
        )


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX SIGKILL")
def test_sigkill_at_random_moments_loses_nothing(tmp_path: Path) -> None:
    steps, every, rounds = 300, 2, 6
    reference = checkpoint(train(fresh({}), steps))
    ckpt, out = tmp_path / "ckpt.npz", tmp_path / "final.npz"
    rng = np.random.default_rng(2024)
    last_step, killed = 0, 0
    for round_ in range(rounds + 1):
        proc = subprocess.Popen(
            [sys.executable, HELPER, "run", str(ckpt), str(out), str(steps), str(every)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            ready = proc.stdout.readline().split()  # type: ignore[union-attr]
            assert ready[:1] == ["ready"] and int(ready[1]) == last_step
            if round_ < rounds:
                time.sleep(float(rng.uniform(0.0, 0.3)))
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
        finally:
            proc.kill()
            proc.stdout.close()  # type: ignore[union-attr]
        if proc.returncode == -signal.SIGKILL:
            killed += 1
        else:
            assert proc.returncode == 0
        # Whatever the moment of the kill, the latest checkpoint is whole and not older than
        # the previous one (or absent if the kill came before the first save).
        stray = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
        assert all(n.startswith(".ckpt.npz.") for n in stray)
        if ckpt.exists():
            state = minnet.load(ckpt)
            assert state["step"] % every == 0 and state["step"] >= last_step
            last_step = state["step"]
        if out.exists():
            break
    assert killed >= 1
    assert_identical(reference, minnet.load(out))


class _Killed(Exception):
    pass


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_death_at_every_write_fsync_and_rename_leaves_old_or_new(tmp_path: Path) -> None:
    """Deterministic companion to the SIGKILL test: a forked child runs ``save`` and dies
    (``os._exit``, no cleanup) at its k-th file operation, for every k; a write it dies in is
    half done and flushed. Each time ``path`` must hold the old or the new checkpoint, whole."""
    old, new = ({k: checkpoint(train(fresh({}), n))[k] for k in ("model", "step")} for n in (2, 4))
    path = tmp_path / "ckpt.npz"
    minnet.save(old, path)
    old_bytes = path.read_bytes()
    outcomes = []
    for k in range(1, 500):
        pid = os.fork()
        if pid == 0:  # child: never returns into pytest
            code = 3
            try:
                _save_dying_at(new, path, k)
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status), status
        code = os.WEXITSTATUS(status)
        assert code in (0, 1), f"child failed with {code} at operation {k}"
        back = minnet.load(path)
        outcomes.append("new" if back["step"] == 4 else "old")
        assert_identical(new if outcomes[-1] == "new" else old, back)
        if code == 0:  # save completed before operation k
            break
        path.write_bytes(old_bytes)
    else:
        pytest.fail("save never completed")
    # Old checkpoint after every death before the rename, the new one after it.
    assert outcomes[0] == "old" and outcomes[-1] == "new" and len(outcomes) > 20
    assert outcomes == sorted(outcomes, key=["old", "new"].index), outcomes


def _save_dying_at(obj: dict, path: Path, k: int) -> None:
    """``minnet.save`` in which the k-th write / fsync / replace kills the process."""
    counter = {"n": 0}

    def due() -> bool:
        counter["n"] += 1
        return counter["n"] == k

    real_fdopen, real_fsync, real_replace = os.fdopen, os.fsync, os.replace

    class DyingFile:
        def __init__(self, f: object) -> None:
            self._f = f

        def __getattr__(self, name: str) -> object:
            return getattr(self._f, name)

        def __enter__(self) -> DyingFile:
            return self

        def __exit__(self, *exc: object) -> None:
            self._f.close()  # type: ignore[attr-defined]

        def write(self, data: bytes) -> int:
            if due():
                self._f.write(bytes(data)[: len(data) // 2])  # type: ignore[attr-defined]
                self._f.flush()  # type: ignore[attr-defined]
                os._exit(1)
            return self._f.write(data)  # type: ignore[attr-defined]

    def fsync(fd: int) -> None:
        if due():
            os._exit(1)
        real_fsync(fd)

    def replace(src: str, dst: str) -> None:
        if due():
            os._exit(1)
        real_replace(src, dst)

    os.fdopen = lambda *a, **kw: DyingFile(real_fdopen(*a, **kw))  # type: ignore[assignment]
    os.fsync, os.replace = fsync, replace  # type: ignore[assignment]
    minnet.save(obj, path)
