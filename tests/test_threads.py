"""The thread policy: a fixed count, MINNET_NUM_THREADS, and the default that reads the machine
(driven here by a fake sampler, clock and BLAS so every decision is deterministic)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import minnet
from minnet import threads
from minnet.threads import CpuSample, ThreadPolicy


class FakeBlas:
    def __init__(self, n: int = 2) -> None:
        self.n = n
        self.calls: list[int] = []

    def get(self) -> int:
        return self.n

    def set(self, n: int) -> None:
        self.n = n
        self.calls.append(n)


class FakeMachine:
    """Two cores; ``others`` cores busy with other processes, this process using ``own``."""

    def __init__(self) -> None:
        self.now = 0.0
        self.busy = 0.0
        self.own = 0.0
        self.others = 0.0
        self.mine = 1.0

    def advance(self, dt: float) -> None:
        self.now += dt
        self.busy += (self.others + self.mine) * dt
        self.own += self.mine * dt

    def sample(self) -> CpuSample:
        return CpuSample(self.now, self.busy, self.own)


def policy(blas: FakeBlas, machine: FakeMachine) -> ThreadPolicy:
    return ThreadPolicy(sampler=machine.sample, blas=blas, cpu_count=2, clock=lambda: machine.now)


def run(p: ThreadPolicy, machine: FakeMachine, seconds: float, dt: float = 0.01) -> None:
    for _ in range(round(seconds / dt)):
        machine.advance(dt)
        p.tick()


def test_drops_to_one_thread_when_another_process_takes_a_core_and_goes_back() -> None:
    blas, machine = FakeBlas(2), FakeMachine()
    p = policy(blas, machine)
    run(p, machine, 0.5)
    assert blas.calls == [] and blas.n == 2  # idle machine: BLAS's own count
    machine.others = 1.0
    run(p, machine, 0.25)
    assert blas.n == 1 and blas.calls == [1]
    run(p, machine, 1.0)
    assert blas.calls == [1]  # steady under load: no flapping
    machine.others = 0.0
    run(p, machine, 0.25)
    assert blas.n == 2 and blas.calls == [1, 2]


def test_hysteresis_between_the_margins() -> None:
    blas, machine = FakeBlas(2), FakeMachine()
    p = policy(blas, machine)
    machine.others = 0.4  # free 1.6 >= 2 - DROP_MARGIN: keep two threads
    run(p, machine, 1.0)
    assert blas.calls == []
    machine.others = 1.0
    run(p, machine, 0.3)
    assert blas.n == 1
    machine.others = 0.4  # free 1.6 < 1 + RISE_MARGIN: stay at one
    run(p, machine, 1.0)
    assert blas.calls == [1]


def test_samples_at_most_every_interval() -> None:
    blas, machine = FakeBlas(2), FakeMachine()
    count = 0

    def sampler() -> CpuSample:
        nonlocal count
        count += 1
        return machine.sample()

    p = ThreadPolicy(sampler=sampler, blas=blas, cpu_count=2, clock=lambda: machine.now)
    run(p, machine, 1.0, dt=0.001)  # 1000 ticks
    assert 9 <= count <= 11


def test_never_goes_above_the_count_found_first() -> None:
    blas, machine = FakeBlas(1), FakeMachine()  # e.g. OPENBLAS_NUM_THREADS=1
    p = policy(blas, machine)
    run(p, machine, 1.0)
    assert blas.calls == []


def test_stands_aside_when_someone_else_sets_blas() -> None:
    blas, machine = FakeBlas(2), FakeMachine()
    p = policy(blas, machine)
    run(p, machine, 0.3)
    blas.n = 1  # a threadpoolctl limit entered by the caller
    machine.others = 0.0
    run(p, machine, 1.0)
    assert blas.n == 1 and blas.calls == []


def test_hold_and_fixed_leave_blas_alone() -> None:
    blas, machine = FakeBlas(2), FakeMachine()
    p = policy(blas, machine)
    run(p, machine, 0.3)
    machine.others = 1.0
    with p.hold():
        run(p, machine, 1.0)
    assert blas.calls == []
    run(p, machine, 0.3)
    assert blas.calls == [1]
    p.set_fixed(2)
    run(p, machine, 1.0)
    assert blas.calls == [1, 2]
    p.set_fixed(None)  # back to reading the machine, from BLAS's first count
    run(p, machine, 0.3)
    assert blas.calls == [1, 2, 2, 1]


def test_without_proc_the_default_keeps_blas_as_it_is() -> None:
    blas, machine = FakeBlas(2), FakeMachine()
    calls = 0

    def missing() -> None:
        nonlocal calls
        calls += 1
        return None

    p = ThreadPolicy(sampler=missing, blas=blas, cpu_count=2, clock=lambda: machine.now)
    run(p, machine, 1.0)
    assert blas.calls == [] and calls == 1


def test_the_real_sampler_reads_proc_stat() -> None:
    s = threads.proc_stat_sampler()
    if s is None:
        pytest.skip("no /proc/stat")
    np.ones(10**6).sum()
    t = threads.proc_stat_sampler()
    assert t.wall > s.wall and t.system_busy >= s.system_busy and t.own >= s.own


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_set_num_threads_rejects_bad_counts(bad: object) -> None:
    with pytest.raises(ValueError, match=r"set_num_threads: n must be an int >= 1 or None"):
        minnet.set_num_threads(bad)  # type: ignore[arg-type]


def test_set_num_threads_sets_blas() -> None:
    from threadpoolctl import threadpool_info

    before = minnet.get_num_threads()
    try:
        minnet.set_num_threads(1)
        assert minnet.get_num_threads() == 1
        assert {i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"} == {1}
    finally:
        minnet.set_num_threads(before)
        minnet.set_num_threads(None)


def _child(env: str) -> subprocess.CompletedProcess:
    code = "import minnet; print(minnet.get_num_threads())"
    return subprocess.run(
        [sys.executable, "-c", code],
        env={"MINNET_NUM_THREADS": env, "PATH": ""},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_environment_variable() -> None:
    out = _child("1")
    assert out.returncode == 0 and out.stdout.strip() == "1", out.stderr
    bad = _child("lots")
    assert bad.returncode != 0
    assert "MINNET_NUM_THREADS must be an integer >= 1 or 'auto', got 'lots'" in bad.stderr


def test_optimizer_step_lets_the_policy_sample(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    monkeypatch.setattr(threads._policy, "tick", lambda: calls.append(1))
    p = minnet.nn.Parameter(np.ones(3, np.float32))
    p.grad = np.ones(3, np.float32)
    opt = minnet.optim.Adam([p])
    for _ in range(3):
        opt.step()
    assert len(calls) == 3


def test_lab_runs_hold_the_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    from minnet.lab import runner

    with runner._one_blas_thread():
        assert threads._policy._holds == 1
        assert minnet.get_num_threads() == 1
    assert threads._policy._holds == 0


def test_an_interval_without_steps_decides_nothing() -> None:
    """Other processes' load while this one was not stepping (a pause longer than STALE_AFTER)
    changes nothing; the policy decides again from the intervals after the pause."""
    blas, machine = FakeBlas(2), FakeMachine()
    p = policy(blas, machine)
    run(p, machine, 0.5)
    machine.others, machine.mine = 2.0, 0.0
    machine.advance(1.0)  # paused for a second while others used both cores
    machine.others, machine.mine = 0.0, 1.0
    run(p, machine, 0.5)
    assert blas.calls == []  # the busy second was not counted against the steps
    machine.others = 1.0
    run(p, machine, 0.25)
    assert blas.calls == [1]  # load during the steps still drops a thread
