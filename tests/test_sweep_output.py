"""Sweeps that never lose work: the output directory's lock, a writability check before the
first run, runs saved as they finish, ``--resume``, workers that die with their parent, Ctrl-C,
progress and the diverged-runs summary."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import pytest

import minnet.lab.runner as runner
from minnet.cli import main
from minnet.lab import grid, sweep
from minnet.lab.runner import FINISHED_DIR, LOCK_NAME, SweepOutputError, SweepResult

fcntl = pytest.importorskip("fcntl")

# 4 eps x Adam/AMSGrad x 2 seeds x 2 scenarios = 32 runs of 40 steps (4 of them diverge).
ARGS = ["sweep", "--eps", "0", "1e-8", "1e-4", "1", "--amsgrad", "both", "--seeds", "2",
        "--steps", "40", "--zero-features", "0", "20", "--no-plots", "--no-progress"]  # fmt: skip
TOTAL = 32
# The same without the second scenario and with longer runs: 16 runs of 300 steps.
LONG = [*ARGS[:10], "--steps", "300", "--no-plots", "--no-progress"]
PROC = Path("/proc")


def _tables(out: Path) -> tuple[bytes, bytes]:
    return (out / "runs.csv").read_bytes(), (out / "multipliers.csv").read_bytes()


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes]:
    """``runs.csv`` and ``multipliers.csv`` of the uninterrupted sweep (one process)."""
    out = tmp_path_factory.mktemp("reference")
    assert main([*ARGS, "--workers", "1", "--out", str(out)]) == 0
    return _tables(out)


def _finished(out: Path) -> int:
    runs = out / FINISHED_DIR
    return len([p for p in runs.iterdir() if p.suffix == ".npz"]) if runs.is_dir() else 0


def _start(argv: list[str]) -> subprocess.Popen:
    """``python -m minnet <argv>`` in its own session (so that the test can clean up its whole
    process group, and Ctrl-C can be sent as a terminal would: to the group), with Ctrl-C's
    default disposition: a test run launched in the background of a non-interactive shell
    ignores SIGINT, and an ignored signal is inherited through ``exec``."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "minnet", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, start_new_session=True,
                            preexec_fn=_default_sigint)  # fmt: skip


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _end(proc: subprocess.Popen) -> tuple[str, str]:
    """Kill whatever is left of ``proc``'s process group; return its output."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return proc.communicate(timeout=120)


def _wait_for(condition: Callable[[], bool], timeout: float, every: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(every)
    return condition()


def _reached(out: Path, runs: int, proc: subprocess.Popen) -> bool:
    return _finished(out) >= runs or proc.poll() is not None


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of a live process, None if it is gone (or a zombie)."""
    try:
        text = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    state, ppid = text.rsplit(")", 1)[1].split()[:2]
    return None if state in ("Z", "X") else (state, int(ppid))


def _descendants(pid: int) -> set[int]:
    found, frontier = set(), {pid}
    while frontier:
        kids = set()
        for entry in PROC.iterdir():
            if entry.name.isdigit():
                st = _stat(int(entry.name))
                if st is not None and st[1] in frontier:
                    kids.add(int(entry.name))
        kids -= found
        found |= kids
        frontier = kids
    return found


# -- the lock and the checks before the first run -------------------------------------------------


def test_a_second_sweep_into_a_busy_directory_fails_at_once(tmp_path: Path, capsys) -> None:
    out = tmp_path / "busy"
    first = _start([*LONG, "--workers", "1", "--out", str(out)])
    try:
        line = first.stdout.readline()  # type: ignore[union-attr]
        assert line.startswith("minnet sweep: 16 runs of 300 steps"), line + _end(first)[1]
        # The first holds the lock from before this line until it exits.
        with pytest.raises(SystemExit) as info:
            main([*ARGS, "--seeds", "1", "--workers", "1", "--out", str(out)])
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert err == (f"minnet sweep: error: {out} is in use by another sweep (pid "
                       f"{first.pid}); wait for it to finish or choose another --out (see "
                       "'minnet sweep --help')\n")  # fmt: skip
        with pytest.raises(SweepOutputError, match="is in use by another sweep"):
            sweep(grid(eps=[1.0], amsgrad=[False], seeds=[0], steps=1), workers=1, out=out,
                  resume=True)  # fmt: skip
        # The first sweep goes on, untouched: stop it with Ctrl-C; what it finished is kept.
        assert _wait_for(lambda: _finished(out) >= 1, 120)
        os.killpg(first.pid, signal.SIGINT)
        assert first.wait(timeout=120) == 130
    finally:
        _, err = _end(first)
    assert "runs finished and kept" in err
    assert not (out / "runs.csv").exists()


def test_a_locked_directory_refuses_python_writes_too(tmp_path: Path) -> None:
    specs = grid(eps=[1.0], amsgrad=[False], seeds=[0], steps=2)
    result = sweep(specs, workers=1, progress=False)
    (tmp_path / LOCK_NAME).write_text("4242\n")
    with open(tmp_path / LOCK_NAME, "rb") as held:  # as another process's lock would be
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        with pytest.raises(SweepOutputError) as info:
            result.write(tmp_path)
        assert str(info.value) == (f"{tmp_path} is in use by another sweep (pid 4242); wait for "
                                   "it to finish or choose another output directory")
        with pytest.raises(SweepOutputError, match="in use"):
            sweep(specs, workers=1, out=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [LOCK_NAME]
    result.write(tmp_path)  # released: fine
    assert (tmp_path / "runs.csv").exists()


def _unwritable(tmp_path: Path) -> Path:
    if os.geteuid() != 0:
        locked = tmp_path / "read-only"
        locked.mkdir()
        locked.chmod(0o555)
        return locked
    if not os.access("/sys/kernel", os.F_OK):
        pytest.skip("running as root and no /sys/kernel: no directory root cannot write")
    return Path("/sys/kernel")  # root cannot create files in sysfs


def test_an_unwritable_output_fails_before_the_first_run(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_training(*args: object) -> None:
        raise AssertionError("a run was trained before the output was checked")

    monkeypatch.setattr(runner, "run", no_training)
    (tmp_path / "a-file").write_text("")
    for out, why in [(_unwritable(tmp_path), "cannot write to"),
                     (tmp_path / "a-file" / "sub", "cannot create")]:  # fmt: skip
        with pytest.raises(SystemExit) as info:
            main([*ARGS, "--workers", "1", "--out", str(out)])
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert err.startswith(f"minnet sweep: error: {why} {out}: ") and err.count("\n") == 1
        assert "Traceback" not in err
        with pytest.raises(SweepOutputError, match=why):
            sweep(grid(eps=[1.0], amsgrad=[False], seeds=[0], steps=1), workers=1, out=out)


# -- resume ---------------------------------------------------------------------------------------


def test_resume_keeps_finished_runs_and_trains_only_the_others(
    tmp_path: Path, reference: tuple[bytes, bytes], capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    trained: list[object] = []
    real_run = runner.run

    def counting_run(spec: runner.RunSpec) -> runner.RunResult:
        trained.append(spec)
        return real_run(spec)

    monkeypatch.setattr(runner, "run", counting_run)
    out = tmp_path / "grow"
    one_seed = [*ARGS[:9], "1", *ARGS[10:], "--workers", "1", "--out", str(out)]
    assert main(one_seed) == 0 and len(trained) == TOTAL // 2
    first = _tables(out)
    capsys.readouterr()

    # Without runs.csv (as after a kill), the same command says what to do.
    (out / "runs.csv").unlink()
    with pytest.raises(SystemExit) as info:
        main(one_seed)
    assert info.value.code == 2
    assert capsys.readouterr().err == (
        f"minnet sweep: error: {out} holds 16 finished runs of an unfinished sweep; pass "
        "--resume to keep them and train the rest, --overwrite to start over, or another --out "
        "(see 'minnet sweep --help')\n"
    )
    assert main([*one_seed, "--resume"]) == 0
    assert len(trained) == TOTAL // 2 and _tables(out) == first  # nothing trained again
    assert (f"minnet sweep: resuming: 16 of 16 runs already finished in {out}, training the "
            "other 0") in capsys.readouterr().out  # fmt: skip

    # The same sweep with a second seed: only the new runs train, and the tables are those of
    # the uninterrupted two-seed sweep, row for row.
    assert main([*ARGS, "--workers", "1", "--out", str(out), "--resume"]) == 0
    assert len(trained) == TOTAL and _tables(out) == reference

    # A damaged saved run is trained again (with a warning), never used.
    victim = sorted((out / FINISHED_DIR).iterdir())[3]
    victim.write_bytes(victim.read_bytes()[:100])
    (out / "runs.csv").unlink()
    with pytest.warns(RuntimeWarning, match="cannot use the saved run .* training it again"):
        assert main([*ARGS, "--workers", "1", "--out", str(out), "--resume"]) == 0
    assert len(trained) == TOTAL + 1 and _tables(out) == reference

    # --overwrite trains everything again; --resume with it is refused.
    assert main([*ARGS, "--workers", "1", "--out", str(out), "--overwrite"]) == 0
    assert len(trained) == 2 * TOTAL + 1 and _tables(out) == reference
    with pytest.raises(SystemExit) as info:
        main([*ARGS, "--out", str(out), "--overwrite", "--resume"])
    assert info.value.code == 2


def test_python_resume_gives_the_tables_of_one_uninterrupted_sweep(tmp_path: Path) -> None:
    specs = grid(eps=[0.0, 1e-8], amsgrad=[False, True], seeds=[0, 1], steps=5,
                 scenarios=["seed", "zero_features=20"])  # fmt: skip
    straight = sweep(specs, workers=1, progress=False)
    sweep(specs[::3], workers=1, progress=False, out=tmp_path)  # as if killed: some runs done
    with pytest.raises(SweepOutputError, match="already exists; pass overwrite=True"):
        sweep(specs, workers=1, out=tmp_path)
    resumed = sweep(specs, workers=2, progress=False, out=tmp_path, resume=True)
    _same(resumed, straight)
    _same(SweepResult.read(tmp_path), straight)


def _same(a: SweepResult, b: SweepResult) -> None:
    for x, y in ((a.runs, b.runs), (a.multipliers, b.multipliers)):
        assert x.names == y.names
        for name in x.names:
            if x[name].dtype.kind == "f":
                np.testing.assert_array_equal(x[name], y[name])
            else:
                assert x[name].tolist() == y[name].tolist(), name


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")
def test_sweep_killed_at_random_moments_resumes_to_the_same_tables(
    tmp_path: Path, reference: tuple[bytes, bytes]
) -> None:
    out = tmp_path / "killed"
    rng = np.random.default_rng(2020)
    kills, mid_sweep = 0, 0
    for round_ in range(10):
        proc = _start([*ARGS, "--workers", "2", "--out", str(out)]
                      + (["--resume"] if round_ else []))  # fmt: skip
        try:
            before = _finished(out)
            if kills < 4 and before + 1 < TOTAL:
                # A random moment: once a random number of runs has finished (at most half of
                # those left, so that the kill comes before the end), plus up to 0.15 s.
                target = int(rng.integers(before + 1, before + 1 + max(1, (TOTAL - before) // 2)))
                if _wait_for(partial(_reached, out, target, proc), 240):
                    time.sleep(float(rng.uniform(0.0, 0.15)))
                    os.kill(proc.pid, signal.SIGKILL)  # the main process only
            code = proc.wait(timeout=300)
        finally:
            _, err = _end(proc)
        if code == -signal.SIGKILL:
            kills += 1
            mid_sweep += 0 < _finished(out) < TOTAL
            continue
        assert code == 0, err
        break
    else:
        pytest.fail("the sweep never finished")
    assert kills >= 2 and mid_sweep >= 2, (kills, mid_sweep)
    assert _finished(out) == TOTAL
    assert _tables(out) == reference  # row for row, nothing lost, nothing twice
    # Temporary files of saves the kills cut short were removed by the next sweep.
    assert not [p.name for d in (out, out / FINISHED_DIR) for p in d.glob("*.tmp")]


# -- worker processes -----------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(not (PROC / "self" / "stat").exists(), reason="needs Linux /proc")
def test_workers_exit_when_the_main_process_is_killed(tmp_path: Path) -> None:
    out = tmp_path / "orphans"
    proc = _start([*LONG, "--workers", "2", "--out", str(out)])
    try:
        assert _wait_for(lambda: _finished(out) >= 1 or proc.poll() is not None, 240)
        assert proc.poll() is None, _end(proc)[1]
        workers = _descendants(proc.pid)  # two workers and multiprocessing's resource tracker
        assert len(workers) >= 2, workers
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        gone = _wait_for(lambda: not any(_stat(p) for p in workers), 5.0, every=0.05)
        alive = {p: _stat(p) for p in workers if _stat(p)}
    finally:
        _end(proc)
    assert gone, f"still alive 5 s after the main process was killed: {alive}"


@pytest.mark.slow
@pytest.mark.skipif(not (PROC / "self" / "stat").exists(), reason="needs Linux /proc")
def test_ctrl_c_stops_cleanly_keeps_finished_runs_and_says_how_to_resume(
    tmp_path: Path, reference: tuple[bytes, bytes]
) -> None:
    out = tmp_path / "interrupted"
    proc = _start([*ARGS, "--workers", "2", "--out", str(out)])
    try:
        assert _wait_for(lambda: _finished(out) >= 1 or proc.poll() is not None, 240)
        assert proc.poll() is None, _end(proc)[1]
        workers = _descendants(proc.pid)
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in a terminal: the whole process group
        code = proc.wait(timeout=120)
        gone = _wait_for(lambda: not any(_stat(p) for p in workers), 5.0, every=0.05)
    finally:
        _, err = _end(proc)
    assert code == 130, err
    assert gone
    done = _finished(out)
    assert 1 <= done < TOTAL
    assert err.splitlines()[-1] == (
        f"minnet sweep: interrupted: {done} of {TOTAL} runs finished and kept in {out}; to "
        f"train the other {TOTAL - done}, run the same command with --resume"
    )
    assert "Traceback" not in err
    assert main([*ARGS, "--workers", "1", "--out", str(out), "--resume"]) == 0
    assert _tables(out) == reference


@pytest.mark.slow
@pytest.mark.skipif(not (PROC / "self" / "stat").exists(), reason="needs Linux /proc")
def test_a_killed_worker_stops_the_sweep_and_keeps_what_finished(
    tmp_path: Path, reference: tuple[bytes, bytes]
) -> None:
    out = tmp_path / "oom"
    proc = _start([*ARGS, "--workers", "2", "--out", str(out)])
    try:
        assert _wait_for(lambda: _finished(out) >= 1 or proc.poll() is not None, 240)
        workers = _descendants(proc.pid)
        assert proc.poll() is None and len(workers) >= 2, _end(proc)[1]
        # As the kernel's OOM killer would: one worker (not the resource tracker).
        pool = [p for p in workers if b"spawn_main" in (PROC / str(p) / "cmdline").read_bytes()]
        assert len(pool) == 2, workers
        os.kill(pool[0], signal.SIGKILL)
        code = proc.wait(timeout=120)
        gone = _wait_for(lambda: not any(_stat(p) for p in workers), 5.0, every=0.05)
    finally:
        _, err = _end(proc)
    assert code == 1 and gone, err
    done = _finished(out)
    assert err.splitlines()[-1].startswith("minnet sweep: error: a worker process died")
    assert err.splitlines()[-1].endswith(
        f"; the runs finished so far are kept in {out}: --resume trains the others"
    )
    assert "Traceback" not in err and done >= 1
    assert main([*ARGS, "--workers", "1", "--out", str(out), "--resume"]) == 0
    assert _tables(out) == reference


# -- progress and the summary ---------------------------------------------------------------------


def test_progress_bar_counts_each_run_with_elapsed_and_eta(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_run = runner.run

    def slow_run(spec: runner.RunSpec) -> runner.RunResult:
        time.sleep(0.15)  # longer than tqdm's refresh interval, as a real run is
        return real_run(spec)

    monkeypatch.setattr(runner, "run", slow_run)
    specs = grid(eps=[1e-8, 1.0], amsgrad=[False, True], seeds=[0, 1], steps=2)  # 8 runs
    sweep(specs, workers=1, progress=True)
    err = capsys.readouterr().err
    for k in range(1, 9):
        assert f"| {k}/8 [" in err, err
    assert "<" in err and ("run/s" in err or "s/run" in err)  # elapsed<remaining, rate
    # A resumed sweep's bar starts at what was finished.
    sweep(specs[:3], workers=1, progress=False, out=tmp_path)
    sweep(specs, workers=1, progress=True, out=tmp_path, resume=True)
    err = capsys.readouterr().err
    assert "| 3/8 [" in err and "| 2/8 [" not in err and "| 8/8 [" in err


def test_sweep_ends_with_a_one_line_summary_of_the_diverged_runs(
    reference: tuple[bytes, bytes], tmp_path: Path, capsys
) -> None:
    assert main([*ARGS, "--eps", "1e-8", "--workers", "1", "--out", str(tmp_path / "a")]) == 0
    assert "minnet sweep: none of 8 runs diverged\n" in capsys.readouterr().out
    result = SweepResult.read(tmp_path / "a")
    assert result.diverged_summary() == "none of 8 runs diverged"
    out = tmp_path / "b"
    (out).mkdir()
    (out / "runs.csv").write_bytes(reference[0])
    assert SweepResult.read(out).diverged_summary() == (
        "4 of 32 runs diverged (NaN/inf, kept): zero_features=20 no AMSGrad eps=0 (2 runs); "
        "zero_features=20 AMSGrad eps=0 (2 runs)"
    )


def test_ctrl_c_while_drawing_keeps_the_complete_csv(
    tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    import minnet.lab.plots as plots

    def interrupted(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(plots, "plot_all", interrupted)
    argv = ["sweep", "--eps", "1e-8", "--amsgrad", "off", "--seeds", "1", "--steps", "2",
            "--workers", "1", "--no-progress", "--out", str(tmp_path)]  # fmt: skip
    assert main(argv) == 130
    assert capsys.readouterr().err == (
        f"minnet sweep: interrupted while drawing the plots; {tmp_path / 'runs.csv'} is "
        f"complete, and 'minnet plot {tmp_path}' draws them\n"
    )
    assert len(SweepResult.read(tmp_path).runs) == 2
