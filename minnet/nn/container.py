"""``Sequential``: modules applied in order."""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from typing import Any

import numpy as np

from minnet.nn import graph as _graph
from minnet.nn.grad_mode import _mode
from minnet.nn.graph import Call, _thread
from minnet.nn.module import _STATE, Module


def _state_slots(modules: list[Module]) -> list[tuple[dict[str, Any], str]]:
    """``(module.__dict__, attribute)`` for every saved-state attribute of the built-in layers
    in ``modules`` (nested Sequentials included), in order."""
    slots: list[tuple[dict[str, Any], str]] = []
    for m in modules:
        if isinstance(m, Sequential) and m._kind == _STATE:
            slots += _state_slots(m._layers)
        elif m._kind == _STATE:
            slots += [(m.__dict__, n) for n in m._state_attrs]
    return slots


class Sequential(Module):
    """Modules applied in order; backward runs them in reverse.

    Parameter names are ``"<index>.<name>"`` (``"0.weight"``), as in PyTorch. A call keeps
    the saved state of every layer inside (one :class:`~minnet.nn.graph.Call` for the whole
    Sequential).
    """

    _state_attrs = ()

    def __init__(self, *modules: Module) -> None:
        for i, m in enumerate(modules):
            if not isinstance(m, Module):
                raise TypeError(f"Sequential: argument {i} is {type(m).__name__}, not a Module")
        super().__init__()
        for i, m in enumerate(modules):
            self.add_module(str(i), m)
            m._where = f"layer {i} of Sequential"
        self._layers: list[Module] = list(modules)
        # Indices i where module i runs inside module i + 1's calls (a ReLU before a Linear:
        # one compiled call for both; see Linear._forward_pair).
        self._pairs = frozenset(
            i for i in range(len(modules) - 1) if modules[i + 1]._pairs_with(modules[i])
        )
        self._slots = _state_slots(list(modules))
        # A module with a hand-written backward (or none) inside: record the calls it makes.
        self._records = any(m._kind != _STATE or m._records for m in modules)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """:meth:`Module.__call__`, spelled out for the usual call (one input, layers with
        their own state): the step's hot path."""
        if kwargs or len(args) != 1 or self._records or self._kind != _STATE or not _mode.enabled:
            return Module.__call__(self, *args, **kwargs)
        thread = _thread
        if thread.next is not None:
            thread.next = None
        x, parent = _graph.unwrap(args[0])
        d = self.__dict__
        owner = d.get("_owner")
        if thread.fresh or (
            owner is not None
            and (call := owner()) is not None
            and (call.state is not None or call.children is not None)
        ):
            out = self._run_fresh(x)
            claim = False
        else:
            out = self._run(x, len(self._layers) - 1)
            claim = True
        state = []
        for sd, n in self._slots:
            state.append(sd.get(n))
            sd[n] = None
        node = Call(self, state, parent)
        d["_last"] = node
        if claim:
            d["_owner"] = weakref.ref(node)
        if thread.recording is not None:
            thread.recording.append(node)
        return _graph.wrap(out, node)

    def _run_call(self, call: Any, grad: Any, input_grad: bool, retain: bool) -> Any:
        if call.children is not None:
            return Module._run_call(self, call, grad, input_grad, retain)
        slots = self._slots
        for (d, n), v in zip(slots, call.state):
            d[n] = v
        try:
            out = self._backward_impl(grad, input_grad)
        finally:
            for d, n in slots:
                d[n] = None
        if not retain:
            call.state = None
        return out

    def _take(self) -> Any:
        state = []
        for d, n in self._slots:
            state.append(d[n])
            d[n] = None
        return state

    def _put(self, state: Any) -> None:
        for (d, n), v in zip(self._slots, state):
            d[n] = v

    def _clear(self) -> None:
        for d, n in self._slots:
            d[n] = None

    def _holds_state(self) -> bool:
        for d, n in self._slots:
            if d.get(n) is not None:
                return True
        return False

    def _children_calls(self) -> list[Any]:
        calls = []
        for m in self._layers:
            c = m.__dict__.get("_last")
            if m._kind == _STATE and c is not None and c.state is not None:
                calls.append(c)
        return calls

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Apply each module in turn; the result is a new array.

        Activations passed between the modules live in buffers that each module reuses from
        call to call (no allocation in a steady training loop); only the last module's output,
        which the caller keeps, is freshly allocated.
        """
        # Under no_grad, and while an earlier call that used the buffers waits for its
        # backward, every module returns a fresh array, so the buffers that a pending backward
        # reads are left as they are.
        if not _mode.enabled:
            return self._run(x, 0)
        d = self.__dict__
        owner = d.get("_owner")
        if owner is not None and (call := owner()) is not None and (
            call.state is not None or call.children is not None
        ):
            return self._run_fresh(x)
        if _thread.fresh:
            return self._run(x, 0)
        d["_claim"] = True
        modules, pairs = self._layers, self._pairs
        last = len(modules) - 1
        i = 0
        while i < len(modules):
            if i in pairs:
                x = modules[i + 1]._forward_pair(modules[i], x, i < last, i + 1 < last)
                i += 2
            else:
                x = modules[i]._forward(x, i < last)
                i += 1
        return x

    def _run_fresh(self, x: np.ndarray) -> np.ndarray:
        """:meth:`_run` writing into new arrays only, nested Sequentials included."""
        if _thread.fresh:
            return self._run(x, 0)
        _thread.fresh = True
        try:
            return self._run(x, 0)
        finally:
            _thread.fresh = False

    def _run(self, x: np.ndarray, last: int) -> np.ndarray:
        """The modules in turn; those before index ``last`` may write into their buffers."""
        modules, pairs = self._layers, self._pairs
        i = 0
        while i < len(modules):
            if i in pairs:
                x = modules[i + 1]._forward_pair(modules[i], x, i < last, i + 1 < last)
                i += 2
            else:
                x = modules[i]._forward(x, i < last)
                i += 1
        return x

    def backward(self, grad_out: np.ndarray, *, input_grad: bool = False) -> np.ndarray | None:
        """Backpropagate through the modules in reverse, adding into every parameter's ``.grad``.

        By default the first module's input gradient is not computed and ``None`` is returned,
        as PyTorch's ``loss.backward()`` computes no gradient for an input that does not require
        one: for a first ``Linear`` that skips the ``(N, out) x (out, in)`` product
        ``dx = G @ W``. ``input_grad=True`` computes it and returns dLoss/d(input), a new array;
        a ``Sequential`` inside a hand-written ``Module.backward`` that passes the result on
        asks for it this way. Parameter gradients are the same either way.
        """
        return self._legacy(self._backward_impl, grad_out, input_grad)

    def _backward_impl(self, grad_out: np.ndarray, input_grad: bool) -> np.ndarray | None:
        modules, pairs = self._layers, self._pairs
        i = len(modules) - 1
        while i >= 0:
            if i - 1 in pairs and i > 1:  # a pair whose first module is not the first one
                grad_out = modules[i]._backward_pair(modules[i - 1], grad_out)
                i -= 2
            else:
                grad_out = modules[i]._backward(grad_out, i > 0, i > 0 or input_grad)
                i -= 1
        return grad_out if input_grad else None

    def _forward(self, x: np.ndarray, internal: bool) -> np.ndarray:
        return self.forward(x)

    def _backward(self, grad_out: np.ndarray, internal: bool, input_grad: bool) -> Any:
        return self._backward_impl(grad_out, input_grad)

    def _grad_params(self) -> Any:
        # Its backward runs every module inside it.
        return [p for m in self._layers for p in m._grad_params()]

    def __getitem__(self, index: int) -> Module:
        return self._layers[index]

    def __len__(self) -> int:
        return len(self._layers)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._layers)

    def __repr__(self) -> str:
        inner = "\n".join(f"  ({i}): {m!r}" for i, m in enumerate(self._layers))
        return f"Sequential(\n{inner}\n)"


def _check_module(m: Any, where: str) -> Module:
    if not isinstance(m, Module):
        raise TypeError(f"{where}: {type(m).__name__} is not a Module")
    return m


class ModuleList(Module):
    """A list of modules whose parameters are registered (names ``"0.weight"``, ...), as
    PyTorch's ``ModuleList``: index it, iterate it, ``append``/``extend``/``insert`` into it.

    It has no ``forward``: a module that holds one calls its entries in its own ``forward``
    (``for layer in self.layers: x = layer(x)``), and ``loss.backward()`` runs through those
    calls.
    """

    def __init__(self, modules: Any = None) -> None:
        super().__init__()
        if modules is not None:
            self.extend(modules)

    def _items(self) -> list[Module]:
        return [m for m in self._modules.values() if m is not None]

    def _renumber(self, modules: list[Module]) -> None:
        for k in list(self._modules):
            self.__dict__.pop(k, None)
        self._modules.clear()
        for i, m in enumerate(modules):
            self.add_module(str(i), m)

    def __getitem__(self, index: Any) -> Any:
        items = self._items()
        if isinstance(index, slice):
            return ModuleList(items[index])
        return items[index]

    def __setitem__(self, index: int, module: Module) -> None:
        items = self._items()
        items[index] = _check_module(module, "ModuleList")
        self._renumber(items)

    def __delitem__(self, index: Any) -> None:
        items = self._items()
        del items[index]
        self._renumber(items)

    def __len__(self) -> int:
        return len(self._items())

    def __iter__(self) -> Iterator[Module]:
        return iter(self._items())

    def __iadd__(self, modules: Any) -> ModuleList:
        return self.extend(modules)

    def append(self, module: Module) -> ModuleList:
        """Add ``module`` at the end; returns ``self``."""
        self.add_module(str(len(self)), _check_module(module, "ModuleList.append"))
        return self

    def extend(self, modules: Any) -> ModuleList:
        """Add every module of an iterable at the end; returns ``self``."""
        for m in modules:
            self.append(m)
        return self

    def insert(self, index: int, module: Module) -> None:
        """Insert ``module`` before position ``index``."""
        items = self._items()
        items.insert(index, _check_module(module, "ModuleList.insert"))
        self._renumber(items)

    def forward(self, *args: Any) -> Any:  # pragma: no cover - as PyTorch's, not callable
        raise NotImplementedError(
            "ModuleList has no forward(): call its modules in the forward of the module that "
            "holds it"
        )


class ModuleDict(Module):
    """A dict of modules whose parameters are registered (names ``"<key>.weight"``), as
    PyTorch's ``ModuleDict``: ``d[key]``, ``key in d``, ``keys()``, ``values()``,
    ``items()``, ``update()``, ``pop()``; insertion order is kept. No ``forward``."""

    def __init__(self, modules: Any = None) -> None:
        super().__init__()
        if modules is not None:
            self.update(modules)

    def __getitem__(self, key: str) -> Module:
        return self._modules[key]

    def __setitem__(self, key: str, module: Module) -> None:
        if not isinstance(key, str):
            raise TypeError(f"ModuleDict: keys must be strings, got {type(key).__name__}")
        self.add_module(key, _check_module(module, f"ModuleDict[{key!r}]"))

    def __delitem__(self, key: str) -> None:
        del self._modules[key]
        object.__delattr__(self, key)

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[str]:
        return iter(self._modules)

    def __contains__(self, key: object) -> bool:
        return key in self._modules

    def keys(self) -> Any:
        """The keys, in insertion order."""
        return self._modules.keys()

    def values(self) -> Any:
        """The modules, in insertion order."""
        return self._modules.values()

    def items(self) -> Any:
        """``(key, module)`` pairs, in insertion order."""
        return self._modules.items()

    def update(self, modules: Any) -> None:
        """Add ``(key, module)`` pairs from a mapping or an iterable of pairs."""
        pairs = modules.items() if hasattr(modules, "items") else modules
        for k, m in pairs:
            self[k] = m

    def pop(self, key: str) -> Module:
        """Remove ``key`` and return its module."""
        m = self[key]
        del self[key]
        return m

    def clear(self) -> None:
        """Remove every module."""
        for k in list(self._modules):
            del self[k]

    def forward(self, *args: Any) -> Any:  # pragma: no cover - as PyTorch's, not callable
        raise NotImplementedError(
            "ModuleDict has no forward(): call its modules in the forward of the module that "
            "holds it"
        )


class Identity(Module):
    """Returns its input unchanged (any arguments to the constructor are ignored, as PyTorch's
    ``Identity``); backward passes the gradient through."""

    _state_attrs = ()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()

    def forward(self, x: np.ndarray) -> np.ndarray:
        """``x`` itself (under ``module(x)`` a new view of it that knows this call)."""
        return x

    def _backward(self, grad_out: np.ndarray, internal: bool, input_grad: bool) -> Any:
        return grad_out

    def backward(self, grad_out: np.ndarray) -> np.ndarray:
        """``grad_out`` itself."""
        return grad_out
