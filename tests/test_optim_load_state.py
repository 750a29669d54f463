"""State dicts in PyTorch's layout load as PyTorch's loader takes them, and another optimizer's
state is refused with a message that names the class and the key."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from minnet.nn import Parameter
from minnet.optim import SGD, Adam, AdamW, Lion, RAdam


def _trained(cls: type, steps: int = 3, **kwargs: object) -> tuple[Parameter, object]:
    p = Parameter(np.linspace(-1.0, 1.0, 6))
    opt = cls([p], lr=1e-2, **kwargs)
    for t in range(steps):
        p.grad[...] = np.cos(np.arange(6) + t)
        opt.step()
    return p, opt


def _fresh(cls: type, **kwargs: object) -> tuple[Parameter, object]:
    p = Parameter(np.linspace(-1.0, 1.0, 6))
    return p, cls([p], lr=1e-2, **kwargs)


@pytest.mark.parametrize(("saved", "loading", "key"), [
    (Adam, RAdam, "amsgrad"), (Adam, Lion, "amsgrad"), (RAdam, Lion, "decoupled_weight_decay"),
])  # fmt: skip
def test_another_optimizers_state_is_refused(saved: type, loading: type, key: str) -> None:
    _, src = _trained(saved)
    p, opt = _fresh(loading)
    before = copy.deepcopy(opt.state_dict())
    with pytest.raises(ValueError, match=rf"{key}.*another optimizer") as info:
        opt.load_state_dict(src.state_dict())
    assert loading.__name__ in str(info.value)
    assert opt.state_dict() == before  # nothing written


def test_adam_and_adamw_states_load_into_each_other() -> None:
    _, adam = _trained(Adam, weight_decay=0.0)
    p, adamw = _fresh(AdamW, weight_decay=0.0)
    sd = adam.state_dict()
    sd["param_groups"][0]["decoupled_weight_decay"] = True
    adamw.load_state_dict(sd)
    assert adamw.step_count == 3


def test_an_unknown_state_array_is_refused_by_name() -> None:
    _, src = _trained(Adam)
    sd = src.state_dict()
    sd["state"][0]["max_exp_avg_sq"] = np.zeros(6)  # amsgrad=False keeps no such array
    _, opt = _fresh(Adam)
    with pytest.raises(ValueError, match=r"parameter 0 has \['max_exp_avg_sq'\].*Adam"):
        opt.load_state_dict(sd)


def test_pytorch_sgd_state_without_step_loads_and_continues_as_pytorch() -> None:
    """PyTorch's SGD keeps only ``momentum_buffer`` per parameter (no ``step``): a buffer means
    the next step uses momentum, exactly as the uninterrupted run does."""
    p, src = _trained(SGD, momentum=0.9)
    sd = src.state_dict()
    for entry in sd["state"].values():
        del entry["step"]
    del sd["param_groups"][0]["maximize"]  # saved before the key existed: its default
    q, opt = _fresh(SGD, momentum=0.9)
    q.data[...] = p.data
    opt.load_state_dict(sd)
    for a, o in ((p, src), (q, opt)):
        a.grad[...] = np.sin(np.arange(6.0))
        o.step()
    np.testing.assert_array_equal(q.data, p.data)


def test_keys_no_optimizer_has_are_kept() -> None:
    _, src = _trained(Adam)
    sd = src.state_dict()
    sd["param_groups"][0].update(initial_lr=1e-2, name="decay")  # a scheduler's, a user's
    _, opt = _fresh(Adam)
    opt.load_state_dict(sd)
    assert opt.param_groups[0]["name"] == "decay" and opt.param_groups[0]["initial_lr"] == 1e-2


def test_adagrad_starts_every_group_at_the_constructors_accumulator() -> None:
    """PyTorch's Adagrad fills ``sum`` with the constructor's ``initial_accumulator_value``
    and ignores a group's own (kept in the group)."""
    from minnet.optim import Adagrad

    a, b = Parameter(np.ones(3)), Parameter(np.ones(3))
    opt = Adagrad([{"params": [a]}, {"params": [b], "initial_accumulator_value": 0.5}],
                  lr=0.1, initial_accumulator_value=0.25)  # fmt: skip
    assert opt.param_groups[1]["initial_accumulator_value"] == 0.5
    a.grad[...] = b.grad[...] = 1.0
    opt.step()
    sums = [opt.state_dict()["state"][i]["sum"] for i in (0, 1)]
    np.testing.assert_array_equal(sums[0], 1.25)
    np.testing.assert_array_equal(sums[1], 1.25)


def test_groups_appended_to_param_groups_directly_are_installed() -> None:
    """``param_groups.append`` / ``extend`` (as PyTorch's own tests do) work as
    ``add_param_group``; a removed group is refused with a message that says what to do."""
    a, b, c = (Parameter(np.ones(2)) for _ in range(3))
    opt = Adam([a], lr=0.1)
    opt.param_groups.append({"params": [b], "lr": 0.2})
    opt.param_groups.extend([{"params": [c]}])
    for p in (a, b, c):
        p.grad[...] = 1.0
    opt.step()
    assert [g["lr"] for g in opt.param_groups] == [0.1, 0.2, 0.1]
    assert len(opt.state_dict()["param_groups"]) == 3 and opt.state_dict()["state"][2]["step"] == 1
    assert not np.array_equal(c.data, 1.0)
    opt.param_groups.append({"params": [a]})  # a is in group 0 already: PyTorch's error
    with pytest.raises(ValueError, match="some parameters appear in more than one"):
        opt.step()
    opt.param_groups.pop()
    opt.param_groups.pop()
    with pytest.raises(RuntimeError, match="cannot be removed.*create a new optimizer"):
        opt.step()
