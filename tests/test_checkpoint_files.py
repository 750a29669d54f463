"""Checkpoints and the file system: non-regular files, leftovers of killed saves, file modes."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import minnet

fcntl = pytest.importorskip("fcntl")


def _age(path: Path, seconds: float = 2 * 3600) -> None:
    """Make ``path`` look untouched for two hours (stale by any rule of ``save``)."""
    old = time.time() - seconds
    os.utime(path, (old, old))


# -- non-regular files ----------------------------------------------------------------------------

_LOAD_SPECIAL = """
import sys, minnet
for target in sys.argv[1:]:
    try:
        minnet.load(target)
    except minnet.CheckpointError as exc:
        print("refused", exc)
    else:
        print("loaded", target)
with open("/dev/zero", "rb") as f:
    try:
        minnet.load(f)
    except minnet.CheckpointError as exc:
        print("refused", exc)
"""


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs POSIX FIFOs")
def test_devices_and_fifos_are_refused_before_opening(tmp_path: Path) -> None:
    fifo = tmp_path / "ckpt.npz"
    os.mkfifo(fifo)
    targets = [str(fifo)] + (["/dev/zero"] if Path("/dev/zero").exists() else [])
    # In a subprocess with a timeout: loading one of these used to block (the FIFO waits for a
    # writer) or read forever (/dev/zero), which must fail this test, not hang the suite.
    proc = subprocess.run([sys.executable, "-c", _LOAD_SPECIAL, *targets], capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == (f"refused {fifo}: a FIFO (named pipe), not a regular file; minnet.load "
                        "reads checkpoint files only")  # fmt: skip
    if len(targets) > 1:
        assert lines[1] == ("refused /dev/zero: a character device, not a regular file; "
                            "minnet.load reads checkpoint files only")  # fmt: skip
        assert lines[2].startswith("refused /dev/zero: a character device")
    assert len(lines) == len(targets) + 1


def test_a_directory_is_still_is_a_directory_error(tmp_path: Path) -> None:
    with pytest.raises(IsADirectoryError):
        minnet.load(tmp_path)


def test_symlink_to_a_checkpoint_loads(tmp_path: Path) -> None:
    minnet.save({"w": np.arange(3.0)}, tmp_path / "real.npz")
    (tmp_path / "link.npz").symlink_to(tmp_path / "real.npz")
    np.testing.assert_array_equal(minnet.load(tmp_path / "link.npz")["w"], np.arange(3.0))


# -- leftovers of killed saves --------------------------------------------------------------------


def test_next_save_removes_only_stale_temp_files_of_the_same_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.npz"
    stale = [tmp_path / f".ckpt.npz.{h}.tmp" for h in ("0123456789ab", "deadbeef0042")]
    kept = [
        tmp_path / ".ckpt.npz.a1b2c3d4e5f6.tmp",  # young: may belong to a writer just started
        tmp_path / ".other.npz.0123456789ab.tmp",  # another checkpoint's
        tmp_path / ".ckpt.npz.0123456789.tmp",  # not save's pattern (10 hex digits)
        tmp_path / ".ckpt.npz.0123456789AB.tmp",  # nor upper case
        tmp_path / "ckpt.npz.0123456789ab.tmp",  # nor without the leading dot
        tmp_path / ".ckpt.npz.0123456789ab.tmp.bak",
    ]
    for p in stale + kept:
        p.write_bytes(b"half a checkpoint")
    for p in stale + kept[1:]:
        _age(p)
    locked = tmp_path / ".ckpt.npz.fedcba987654.tmp"  # old, but a live writer holds it
    locked.write_bytes(b"being written")
    _age(locked)
    subdir = tmp_path / ".ckpt.npz.abcdefabcdef.tmp"  # matches, but is not a regular file
    subdir.mkdir()
    os.utime(subdir, (0, 0))
    with open(locked, "rb") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        minnet.save({"v": 1}, path)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted([path.name, locked.name, subdir.name] + [p.name for p in kept])
    assert minnet.load(path) == {"v": 1}
    # Once its writer is gone, the locked one goes too, at the next save.
    minnet.save({"v": 2}, path)
    assert not locked.exists() and subdir.is_dir()


_SLOW_WRITER = """
import sys, numpy as np, minnet
big = {"w": np.ones(40 * 2**20 // 8)}
print("start", flush=True)
while True:
    minnet.save(big, sys.argv[1])
"""


@pytest.mark.skipif(not hasattr(signal, "SIGSTOP"), reason="needs POSIX signals")
def test_killed_saves_leave_nothing_behind_after_the_next_save(tmp_path: Path) -> None:
    """A real writer: stopped mid-save, its temporary file is not touched (it is alive);
    killed, its temporary file is removed by the next save."""
    path = tmp_path / "ckpt.npz"
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_WRITER, str(path)],
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stdout.readline() == "start\n"  # type: ignore[union-attr]
        deadline = time.monotonic() + 120
        while True:  # stop it while a temporary file exists
            assert time.monotonic() < deadline, "never caught the writer mid-save"
            if list(tmp_path.glob(".ckpt.npz.*.tmp")):
                os.kill(proc.pid, signal.SIGSTOP)
                temps = list(tmp_path.glob(".ckpt.npz.*.tmp"))
                if len(temps) == 1:
                    break
                os.kill(proc.pid, signal.SIGCONT)
            time.sleep(0.005)
        (tmp,) = temps
        _age(tmp)
        minnet.save({"v": 1}, path)
        assert tmp.exists(), "a live (stopped) writer's temporary file was removed"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
    finally:
        proc.kill()
        proc.wait(timeout=60)
        proc.stdout.close()  # type: ignore[union-attr]
    assert tmp.exists()
    _age(tmp)
    minnet.save({"v": 2}, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]
    assert minnet.load(path) == {"v": 2}


# -- file modes -----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", [0o600, 0o640, 0o604, 0o444])
def test_saving_over_a_checkpoint_keeps_its_mode(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "ckpt.npz"
    minnet.save({"v": 1}, path)
    path.chmod(mode)
    old = os.umask(0o022)
    try:
        minnet.save({"v": 2}, path)
    finally:
        os.umask(old)
    assert oct(stat.S_IMODE(path.stat().st_mode)) == oct(mode)
    assert minnet.load(path) == {"v": 2}
