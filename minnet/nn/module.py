"""``Module``: the base class of every layer, with PyTorch's attribute registration."""

from __future__ import annotations

import functools
import warnings
import weakref
from collections.abc import Iterator
from typing import Any, NamedTuple

import numpy as np

from minnet.dtypes import load_bfloat16
from minnet.nn import graph as _graph
from minnet.nn._util import _asarray, _float_dtype, _is_float
from minnet.nn.grad_mode import _mode, is_grad_enabled
from minnet.nn.graph import Call, Output
from minnet.nn.parameter import Parameter, _revive_grads

_PLAIN = (bool, np.ndarray)

# How a module's calls are recorded (see Module.__call__): a built-in layer keeps its saved state
# in the call; a module with a hand-written backward keeps the calls of the modules its forward
# calls; a module with only a forward (PyTorch style) records nothing itself, the calls of the
# modules inside it form the chain.
_STATE, _USER, _COMPOSITE = 0, 1, 2
_thread = _graph._thread
#: Attributes that refer to recorded calls or to the state of a backward in progress.
_GRAPH_KEYS = ("_last", "_owner", "_claim", "_queue", "_in_backward")
_ATTRS: Any = object()  # _pick_call: the module's attributes hold a direct forward's state


def _pending(c: Any) -> bool:
    """Whether the call ``c`` still waits for its backward."""
    return c.state is not None or c.children is not None


def _install(calls: list[Call]) -> None:
    """Queue each recorded call on its module, in call order, so that a hand-written backward's
    ``child.backward(g)`` takes the state of its own call (last call first, the order backward
    visits them); a child with a hand-written backward queues its own calls in turn."""
    for c in calls:
        if _pending(c):
            d = c.module.__dict__
            q = d.get("_queue")
            if q is None:
                q = d["_queue"] = []
            q.append(c)


def _uninstall(calls: list[Call], retain: bool, unused: list[Call]) -> None:
    """Undo :func:`_install`; collect the calls whose state no backward used into ``unused``;
    free every state unless ``retain``."""
    for c in calls:
        if _pending(c):
            q = c.module.__dict__.get("_queue")
            if q and c in q:
                q.remove(c)
                unused.append(c)
            if not retain:
                c.state = c.children = None


class _IncompatibleKeys(NamedTuple):
    """What :meth:`Module.load_state_dict` returns, as PyTorch's ``_IncompatibleKeys``."""

    missing_keys: list[str]
    unexpected_keys: list[str]


def _registry(module: Module, kind: str) -> dict[str, Any]:
    """``module._parameters`` or ``module._modules``, created if ``__init__`` never ran."""
    d = module.__dict__.get(kind)
    if d is None:
        d = {}
        object.__setattr__(module, kind, d)
    return d


def _user_backward(fn: Any) -> Any:
    """Wrap a hand-written ``backward`` so that ``module.backward(g)`` runs on one recorded call:
    the calls its forward made are queued on their modules first (see :func:`_install`)."""

    @functools.wraps(fn)
    def backward(self: Module, *args: Any, **kwargs: Any) -> Any:
        d = self.__dict__
        _revive_grads(self._grad_params())  # so that ``p.grad += g`` works after zero_grad()
        if d.get("_in_backward"):  # super().backward(), or a run that queued the calls already
            return fn(self, *args, **kwargs)
        call = self._pick_call()
        d["_in_backward"] = True
        if call is None or call is _ATTRS:
            try:
                return fn(self, *args, **kwargs)
            finally:
                d["_in_backward"] = False
        calls = call.children or []
        _install(calls)
        unused: list[Call] = []
        failed = True
        try:
            out = fn(self, *args, **kwargs)
            failed = False
        finally:
            d["_in_backward"] = False
            _uninstall(calls, failed, unused)
        call.state = call.children = None
        _thread.next = call.parent if type(call.parent) is Call else None
        if unused:
            _warn_unused(self, unused, 3)
        return out

    backward.__wrapped__ = fn  # type: ignore[attr-defined]
    return backward


def _warn_unused(module: Module, unused: list[Call], stacklevel: int) -> None:
    names = ", ".join(sorted({c.module._label() for c in unused}))
    warnings.warn(
        f"{module._label()}: its backward() did not call the backward of {names} for the "
        "call(s) its forward made, so their parameters got no gradient from this loss",
        RuntimeWarning,
        stacklevel=stacklevel + 1,
    )


class Module:
    """Base class of layers and models, as ``torch.nn.Module`` without autograd.

    A subclass defines ``forward(x)`` (keeping what its backward needs) and ``backward(grad_out)``
    (returning dLoss/d(input) and *adding* into its parameters' ``.grad``). Assigning a
    :class:`Parameter` or a ``Module`` to an attribute registers it, as in PyTorch::

        class Net(minnet.nn.Module):
            def __init__(self):
                super().__init__()
                self.fc1 = minnet.nn.Linear(64, 128)
                self.act = minnet.nn.Tanh()
                self.fc2 = minnet.nn.Linear(128, 10)

            def forward(self, x):
                return self.fc2(self.act(self.fc1(x)))

            def backward(self, grad):
                return self.fc1.backward(self.act.backward(self.fc2.backward(grad)))

    so ``parameters()``, ``named_parameters()`` (``"fc1.weight"``, ...), ``modules()``,
    ``children()``, ``state_dict()``, ``load_state_dict()``, ``train()``/``eval()``,
    ``requires_grad_()``, ``float()``/``double()``/``half()``/``bfloat16()``/``to(dtype)`` and
    ``zero_grad()`` see them. Each registered
    parameter's ``name`` is kept equal to its dotted ``state_dict`` key.

    Saved state: every call outside :class:`~minnet.no_grad` keeps its own (see
    :meth:`__call__` and :mod:`minnet.nn.graph`), so ``loss.backward()`` differentiates exactly
    the calls that produced the loss, whatever ran in between. ``module.backward(g)`` (the
    hand-written chain) takes the call of the loss whose ``loss_fn.backward()`` ran last, else
    the module's latest call. Backward frees the state, so a second ``backward`` for the same
    call raises ``RuntimeError`` ("Trying to backward through the graph a second time").

    A module with only a ``forward`` that calls other modules (PyTorch style) needs no
    ``backward``: ``loss.backward()`` runs through the calls its forward made.
    """

    #: Where this module sits, for error messages ("layer 0 of Sequential", "fc1 of Net").
    _where: str = ""
    #: Training mode (``True``) or evaluation mode; :meth:`train` / :meth:`eval` set it.
    training: bool = True
    #: Set by a backward that used (and freed) the values a forward kept.
    _freed: bool = False
    #: Names of the attributes a built-in layer's forward keeps for its backward; a call moves
    #: them into its :class:`~minnet.nn.graph.Call` (see :meth:`__call__`).
    _state_attrs: tuple[str, ...] = ()
    _kind: int = _COMPOSITE
    #: Whether this module's forward calls modules whose calls must be recorded in its own.
    _records: bool = False
    _is_loss: bool = False
    #: Names of the array arguments a built-in layer with several inputs differentiates
    #: (attention's ``("query", "key", "value")``): its calls record the producer of each
    #: (see :meth:`_call_inputs`). Empty for the usual one-input layer.
    _inputs: tuple[str, ...] = ()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = cls.__dict__
        if "backward" in own or "_backward" in own:
            # A built-in layer (its ``_backward`` and ``_state_attrs``, its own or a base's, as
            # the pooling layers share theirs) keeps its saved state per call.
            state = "_state_attrs" in own or ("backward" not in own and bool(cls._state_attrs))
            cls._kind = _STATE if state else _USER
            if cls._kind == _USER and "backward" in own:
                cls.backward = _user_backward(own["backward"])  # type: ignore[method-assign]
        elif "forward" in own or "_forward" in own:
            cls._kind = _COMPOSITE

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", {})
        object.__setattr__(self, "_modules", {})
        object.__setattr__(self, "_buffers", {})
        object.__setattr__(self, "_non_persistent_buffers_set", set())
        object.__setattr__(self, "training", True)

    def __setattr__(self, name: str, value: Any) -> None:
        if name[0] == "_" and (value is None or type(value) in _PLAIN):
            object.__setattr__(self, name, value)  # fast path: a layer's own saved state
            return
        if isinstance(value, (Parameter, Module)):
            self._register(name, value)
        elif name[0] != "_":
            if isinstance(value, (list, tuple, dict)) and any(
                isinstance(v, (Module, Parameter))
                for v in (value.values() if isinstance(value, dict) else value)
            ):
                kind = "dict" if isinstance(value, dict) else type(value).__name__
                holder = "ModuleDict" if isinstance(value, dict) else "ModuleList"
                warnings.warn(
                    f"{type(self).__name__}.{name} is a plain {kind} of modules or parameters: "
                    "nothing in it is registered, so parameters(), state_dict(), to()/float() "
                    "and the optimizer do not see it; use minnet.nn." + holder + " (or "
                    "ParameterList-style attributes) instead",
                    UserWarning,
                    stacklevel=2,
                )
            params = self.__dict__.get("_parameters")
            modules = self.__dict__.get("_modules")
            buffers = self.__dict__.get("_buffers")
            if buffers and name in buffers:
                if value is not None and not isinstance(value, np.ndarray):
                    raise TypeError(
                        f"cannot assign '{type(value).__name__}' as buffer '{name}' "
                        "(np.ndarray or None expected)"
                    )
                buffers[name] = value
            elif params and name in params:
                if value is not None:
                    raise TypeError(
                        f"cannot assign '{type(value).__name__}' as parameter '{name}' "
                        "(minnet.nn.Parameter or None expected)"
                    )
                params[name] = None
            elif modules and name in modules:
                if value is not None:
                    raise TypeError(
                        f"cannot assign '{type(value).__name__}' as child module '{name}' "
                        "(minnet.nn.Module or None expected)"
                    )
                modules[name] = None
        object.__setattr__(self, name, value)

    def __getstate__(self) -> dict[str, Any]:
        """The module without its recorded calls (a copy or a pickle starts with none)."""
        state = self.__dict__.copy()
        for key in _GRAPH_KEYS:
            state.pop(key, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def __delattr__(self, name: str) -> None:
        for kind in ("_parameters", "_modules", "_buffers"):
            d = self.__dict__.get(kind)
            if d and name in d:
                del d[name]
        object.__delattr__(self, name)

    def _register(self, name: str, value: Parameter | Module) -> None:
        params = _registry(self, "_parameters")
        modules = _registry(self, "_modules")
        params.pop(name, None)
        modules.pop(name, None)
        buffers = self.__dict__.get("_buffers")
        if buffers:
            buffers.pop(name, None)
        if isinstance(value, Parameter):
            params[name] = value
        else:
            modules[name] = value
            value._where = f"{name} of {type(self).__name__}"
        for full, p in self.named_parameters():
            p.name = full

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        """Register ``param`` (or ``None``) under ``name``, as ``setattr`` does."""
        if param is None:
            _registry(self, "_parameters")[name] = None
            object.__setattr__(self, name, None)
        else:
            self._register(name, param)
            object.__setattr__(self, name, param)

    def register_buffer(
        self, name: str, tensor: np.ndarray | None, persistent: bool = True
    ) -> None:
        """Register ``tensor`` (a NumPy array, or ``None``) as the buffer ``name``, as PyTorch's
        ``register_buffer``: state that is not a parameter (BatchNorm's ``running_mean``).

        A buffer is an attribute (``self.name``), is listed by :meth:`buffers` /
        :meth:`named_buffers`, is cast by ``float()``/``double()``/``half()``/``to(dtype)``
        (floating-point buffers only, as PyTorch), and, when ``persistent`` (the default), is
        saved by :meth:`state_dict` and loaded by :meth:`load_state_dict` under its dotted name
        (``"bn.running_mean"``). It is not in :meth:`parameters`: no optimizer sees it, and it
        gets no gradient. Assigning an array to ``self.name`` later replaces the buffer.
        """
        if not isinstance(name, str):
            raise TypeError(f"buffer name should be a string. Got {type(name).__name__}")
        if "." in name:
            raise KeyError('buffer name can\'t contain "."')
        if name == "":
            raise KeyError('buffer name can\'t be empty string ""')
        buffers = _registry(self, "_buffers")
        if hasattr(self, name) and name not in buffers:
            raise KeyError(f"attribute '{name}' already exists")
        if tensor is not None and not isinstance(tensor, np.ndarray):
            raise TypeError(
                f"cannot assign '{type(tensor).__name__}' object to buffer '{name}' "
                "(np.ndarray or None required)"
            )
        if tensor is not None and type(tensor) is not np.ndarray:
            tensor = tensor.view(np.ndarray)  # a module's Output: its plain array
        buffers[name] = tensor
        non_persistent = self.__dict__.get("_non_persistent_buffers_set")
        if non_persistent is None:
            non_persistent = set()
            object.__setattr__(self, "_non_persistent_buffers_set", non_persistent)
        if persistent:
            non_persistent.discard(name)
        else:
            non_persistent.add(name)
        object.__setattr__(self, name, tensor)

    def add_module(self, name: str, module: Module | None) -> None:
        """Register the child ``module`` (or ``None``) under ``name``, as ``setattr`` does."""
        if module is None:
            _registry(self, "_modules")[name] = None
            object.__setattr__(self, name, None)
        else:
            self._register(name, module)
            object.__setattr__(self, name, module)

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Compute the output for input ``x``, keeping what :meth:`backward` needs."""
        raise NotImplementedError(f"{type(self).__name__} defines no forward()")

    def backward(self, grad_out: np.ndarray) -> Any:
        """Return dLoss/d(input) for dLoss/d(output) ``grad_out``; add into parameter grads.

        A module that defines only ``forward`` (calling other modules) backpropagates through
        the calls its latest forward made (or those of the loss whose ``loss_fn.backward()``
        ran last); the input gradient is ``None`` when the input was data."""
        inside = {id(m) for m in self.modules()}
        root = _thread.next
        if not (type(root) is Call and id(root.module) in inside and _pending(root)):
            root = self.__dict__.get("_last")
        if root is None:
            raise NotImplementedError(
                f"{type(self).__name__} defines no backward() and has no recorded call to "
                "backpropagate: call it as module(x) outside no_grad() with a forward that calls "
                "registered modules (loss.backward() then runs through their calls), or write "
                "`def backward(self, grad_out):` returning dLoss/d(input) for dLoss/d(output) "
                "`grad_out` and adding into its parameters' .grad (call each sub-module's "
                "backward in reverse order of the forward)"
            )
        _thread.next = None
        return _graph.run_backward(root, grad_out, False, inside)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run :meth:`forward`; outside ``no_grad`` record the call (see :mod:`minnet.nn.graph`).

        The result is an :class:`~minnet.nn.graph.Output` that knows this call: a built-in
        layer's call keeps the layer's saved state (so the next call of the layer leaves it
        alone), a module with a hand-written ``backward`` keeps the calls its forward made, and
        a module with only a ``forward`` records nothing itself (the calls inside it form the
        chain that ``loss.backward()`` walks).
        """
        if not _mode.enabled:
            return self.forward(*args, **kwargs)
        kind = self._kind
        if kind == _COMPOSITE:
            out = self.forward(*args, **kwargs)
            node = getattr(out, "_node", None)
            if node is None and type(out) is Output:
                # NumPy computed the output from module outputs: backward must say what to write
                node = out._node = _graph.NeedsBackward(self)
            self.__dict__["_last"] = node  # for module.backward(g)
            return out
        thread = _thread
        if thread.next is not None:
            thread.next = None
        if self._inputs and kind == _STATE:
            return self._call_inputs(args, kwargs)
        parent = None
        if args and type(args[0]) is Output:
            x = args[0]
            parent = x._node
            if parent is None:
                parent = _graph.DERIVED
            if kind == _STATE:  # the layer computes on the plain array
                args = (x.view(np.ndarray), *args[1:])
        d = self.__dict__
        if kind == _STATE and not self._records:  # a built-in layer: the usual call
            out = self.forward(*args, **kwargs)
            node = Call(self, self._take(), parent)
            d["_last"] = node
            if d.get("_claim"):  # the forward wrote into this module's reusable buffers
                d["_claim"] = False
                d["_owner"] = weakref.ref(node)
            if thread.recording is not None:
                thread.recording.append(node)
            if type(out) is tuple:  # (output, indices): the first is what backward takes
                return (_graph.wrap(out[0], node), *out[1:])
            return _graph.wrap(out, node)
        else:
            outer = thread.recording
            thread.recording = calls = []
            try:
                out = self.forward(*args, **kwargs)
            finally:
                thread.recording = outer
            node = Call(self, self._take() if kind == _STATE else None, parent, calls)
        if thread.recording is not None:
            thread.recording.append(node)
        d["_last"] = node
        if d.get("_claim"):  # the forward wrote into this module's reusable buffers
            d["_claim"] = False
            d["_owner"] = weakref.ref(node)
        if type(out) is np.ndarray:
            out = out.view(Output)
            out._node = node
            return out
        return _graph.wrap(out, node)

    def _call_inputs(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """:meth:`__call__` of a built-in layer with several inputs (:attr:`_inputs`).

        Each input is passed to ``forward`` as a plain array (one array object for arguments
        that were the same object, so ``forward`` can tell self-attention by ``is``); the call
        records each input's producer (:class:`~minnet.nn.graph.Call`'s ``parent`` and
        ``others``), or only the first when every input is the same array. A tuple result (an
        output and attention weights) gets its first array recorded; the other arrays are
        returned as outputs that no call produced, so a loss computed from them refuses to
        backpropagate instead of missing their gradient."""
        args = list(args)
        plain: dict[int, Any] = {}
        parents: list[Any] = []
        seen: list[int] = []
        for i, name in enumerate(self._inputs):
            if i < len(args):
                value, put = args[i], functools.partial(args.__setitem__, i)
            elif name in kwargs:
                value, put = kwargs[name], functools.partial(kwargs.__setitem__, name)
            else:
                continue
            key = id(value)
            seen.append(key)
            if key not in plain:
                plain[key] = _graph.unwrap(value)
            arr, parent = plain[key]
            put(arr)
            parents.append(parent)
        out = self.forward(*args, **kwargs)
        others = None if len(set(seen)) <= 1 else tuple(parents[1:])
        node = Call(self, self._take(), parents[0] if parents else None, None, others)
        if _thread.recording is not None:
            _thread.recording.append(node)
        self.__dict__["_last"] = node
        if type(out) is tuple:
            rest = tuple(_graph.wrap(v, None) if isinstance(v, np.ndarray) else v for v in out[1:])
            return (_graph.wrap(out[0], node), *rest)
        return _graph.wrap(out, node)

    # ------------------------------------------------------------------- per-call state

    def _take(self) -> Any:
        """Move the saved state out of this module (into a call); leave ``None`` behind."""
        d = self.__dict__
        state = []
        for n in self._state_attrs:
            state.append(d.get(n))
            d[n] = None
        return state

    def _put(self, state: Any) -> None:
        """Put a call's saved state back for the module's backward."""
        d = self.__dict__
        for n, v in zip(self._state_attrs, state):
            d[n] = v

    def _clear(self) -> None:
        d = self.__dict__
        for n in self._state_attrs:
            d[n] = None

    def _holds_state(self) -> bool:
        """Whether the module's attributes hold a forward's state (a ``forward()`` called
        directly, without recording a call)."""
        names = self._state_attrs
        return bool(names) and self.__dict__.get(names[0]) is not None

    def _buffers_free(self) -> bool:
        """Whether this module's reusable buffers hold no state of a call still waiting for
        its backward (else the forward must write into new arrays)."""
        owner = self.__dict__.get("_owner")
        if owner is None:
            return True
        call = owner()
        return call is None or (call.state is None and call.children is None)

    def _run_call(self, call: Call, grad: Any, input_grad: bool, retain: bool) -> Any:
        """Backward of one recorded call: its state put back, the module's backward run, the
        state freed (kept with ``retain``)."""
        calls, state = call.children, call.state
        _revive_grads(self._grad_params())  # a cleared (None) .grad: zeros to add into
        if calls is None and self._kind == _STATE:  # a layer's call: the usual case
            self._put(state)
            try:
                out = self._backward(grad, False, input_grad)
            finally:
                self._clear()
            if not retain:
                call.state = None
            return out
        if calls is not None:
            _install(calls)
        if state is not None:
            self._put(state)
        failed = True
        unused: list[Call] = []
        try:
            if self._kind == _USER:
                self.__dict__["_in_backward"] = True
                try:
                    out = self.backward(grad)
                finally:
                    self.__dict__["_in_backward"] = False
            else:
                out = self._backward(grad, False, input_grad)
            failed = False
        finally:
            if state is not None:
                self._clear()
            if calls is not None:
                _uninstall(calls, retain or failed, unused)
        if not retain:
            call.state = call.children = None
        if unused:
            _warn_unused(self, unused, 4)
        return out

    def _pick_call(self) -> Any:
        """The recorded call that ``module.backward(g)`` backpropagates: one queued by a
        hand-written backward's call, else the input call of the loss whose
        ``loss_fn.backward()`` ran last, else (``_ATTRS``) the state a direct ``forward()``
        left in the attributes, else the latest call (``None``: no call waits)."""
        d = self.__dict__
        q = d.get("_queue")
        if q:
            return q.pop()
        n = _thread.next
        if n is not None and type(n) is Call and n.module is self and _pending(n):
            return n
        if self._holds_state():
            return _ATTRS
        n = d.get("_last")
        if n is not None and type(n) is Call and _pending(n):
            return n
        return None

    def _grad_params(self) -> Any:
        """The parameters whose ``.grad`` this module's backward adds into: its own (a
        container whose backward runs every module inside it returns theirs). Before the
        backward runs, those whose gradient was cleared (``None``) get zeros, so a backward
        may add into ``.grad`` whatever ``zero_grad`` did."""
        params = self.__dict__.get("_parameters")
        return params.values() if params else ()

    def _children_calls(self) -> list[Call]:
        """For a container: the pending latest call of each layer inside (none by default)."""
        return []

    def _legacy(self, impl: Any, *args: Any) -> Any:
        """``module.backward(g)``: run the backward ``impl`` on the state of :meth:`_pick_call`'s
        call (or on what a direct ``forward()`` kept)."""
        call = self._pick_call()
        _revive_grads(self._grad_params())  # a cleared (None) .grad: zeros to add into
        if call is None or call is _ATTRS:
            if _thread.next is not None:
                _thread.next = None
            calls = None if call is _ATTRS else self._children_calls()
            if not calls:
                return impl(*args)
            # The layers inside were called one by one (not through this module): each one's
            # latest call, as their own backward(g) would take.
            for c in calls:
                c.module._put(c.state)
            out = impl(*args)
            for c in calls:
                c.state = None
            return out
        self._put(call.state)
        calls = call.children
        if calls is not None:
            _install(calls)
        try:
            out = impl(*args)
        finally:
            if calls is not None:
                _uninstall(calls, True, [])
        call.state = call.children = None
        _thread.next = call.parent if type(call.parent) is Call else None
        return out

    # Sequential calls these two. ``internal=True`` means the result goes only to the neighbouring
    # module of the same Sequential, so it may live in a buffer that the next call overwrites;
    # ``input_grad=False`` means dLoss/d(input) is not wanted. Subclasses may ignore both.
    def _forward(self, x: np.ndarray, internal: bool) -> np.ndarray:
        return self.forward(x)

    def _backward(self, grad_out: np.ndarray, internal: bool, input_grad: bool) -> Any:
        return self.backward(grad_out)

    # A module may run its predecessor in a Sequential inside its own calls (one compiled call
    # for both): Sequential asks _pairs_with(prev) once, then calls _forward_pair /
    # _backward_pair, which must do what the two modules' own calls in turn would do.
    def _pairs_with(self, prev: Module) -> bool:
        return False

    def _forward_pair(
        self, prev: Module, x: np.ndarray, prev_internal: bool, internal: bool
    ) -> np.ndarray:
        return self._forward(prev._forward(x, prev_internal), internal)

    def _backward_pair(self, prev: Module, grad_out: np.ndarray) -> Any:
        return prev._backward(self._backward(grad_out, True, True), True, True)

    def _label(self) -> str:
        name = type(self).__name__
        return f"{name} ({self._where})" if self._where else name

    def _keep(self) -> bool:
        """Whether this forward keeps values for backward (outside ``no_grad``)."""
        if is_grad_enabled():
            self._freed = False
            return True
        return False

    def _nothing_saved(self) -> Exception:
        """The error for a backward with no kept forward values: a second backward, or none."""
        if self._freed:
            return RuntimeError(
                f"{self._label()}: Trying to backward through the graph a second time: the "
                "values kept by its forward were freed by the previous backward; run forward "
                "again before calling backward again"
            )
        return ValueError(
            f"{self._label()}: backward called before forward (or its forward ran under "
            "no_grad(), which keeps nothing for backward)"
        )

    def _reset(self) -> None:
        """Drop kept forward values and reusable buffers (after a dtype change)."""

    # ----------------------------------------------------------------------------- traversal

    def named_children(self) -> Iterator[tuple[str, Module]]:
        """Yield ``(name, child)`` for the directly registered sub-modules."""
        for name, m in _registry(self, "_modules").items():
            if m is not None:
                yield name, m

    def children(self) -> Iterator[Module]:
        """Yield the directly registered sub-modules."""
        for _, m in self.named_children():
            yield m

    def named_modules(
        self, memo: set[int] | None = None, prefix: str = "", remove_duplicate: bool = True
    ) -> Iterator[tuple[str, Module]]:
        """Yield ``(dotted name, module)`` for this module (name ``prefix``) and every
        descendant, depth first in registration order; a module reachable twice comes once."""
        if memo is None:
            memo = set()
        if remove_duplicate:
            if id(self) in memo:
                return
            memo.add(id(self))
        yield prefix, self
        for name, m in self.named_children():
            child_prefix = f"{prefix}.{name}" if prefix else name
            yield from m.named_modules(memo, child_prefix, remove_duplicate)

    def modules(self) -> Iterator[Module]:
        """Yield this module and every descendant (see :meth:`named_modules`)."""
        for _, m in self.named_modules():
            yield m

    def named_parameters(
        self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True
    ) -> Iterator[tuple[str, Parameter]]:
        """Yield ``(name, parameter)``, names as in :meth:`state_dict` (``"fc1.weight"``): each
        module's own parameters in registration order, then its children's; a shared parameter
        comes once."""
        seen: set[int] = set()
        mods = self.named_modules(prefix=prefix) if recurse else iter([(prefix, self)])
        for mod_prefix, m in mods:
            for name, p in _registry(m, "_parameters").items():
                if p is None or (remove_duplicate and id(p) in seen):
                    continue
                seen.add(id(p))
                yield (f"{mod_prefix}.{name}" if mod_prefix else name), p

    def parameters(self, recurse: bool = True) -> list[Parameter]:
        """All parameters, in ``state_dict`` order (a list; PyTorch returns an iterator).

        Frozen parameters (``requires_grad=False``) are included, as in PyTorch.
        """
        return [p for _, p in self.named_parameters(recurse=recurse)]

    def named_buffers(
        self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True
    ) -> Iterator[tuple[str, np.ndarray]]:
        """Yield ``(dotted name, array)`` for every buffer (see :meth:`register_buffer`), in
        :meth:`state_dict` order; non-persistent buffers included, ``None`` ones skipped."""
        seen: set[int] = set()
        mods = self.named_modules(prefix=prefix) if recurse else iter([(prefix, self)])
        for mod_prefix, m in mods:
            for name, b in _registry(m, "_buffers").items():
                if b is None or (remove_duplicate and id(b) in seen):
                    continue
                seen.add(id(b))
                yield (f"{mod_prefix}.{name}" if mod_prefix else name), b

    def buffers(self, recurse: bool = True) -> list[np.ndarray]:
        """Every buffer's array (a list; PyTorch returns an iterator)."""
        return [b for _, b in self.named_buffers(recurse=recurse)]

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear every parameter gradient, as PyTorch's ``Module.zero_grad``: set it to ``None``
        (the default; the next backward writes it, and ``optimizer.step()`` skips a parameter
        that got none), or with ``set_to_none=False`` fill it with zeros in place. A parameter
        that records which rows received a gradient (``grad_rows``, a sparse ``Embedding``'s
        weight) records none afterwards."""
        for p in self.parameters():
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.fill(0)
            if getattr(p, "grad_rows", None) is not None:
                p.grad_rows = np.empty(0, np.int64)

    # ---------------------------------------------------------------------------- modes

    def train(self, mode: bool = True) -> Module:
        """Set training mode (``mode=True``) or evaluation mode on this module and every
        descendant; returns ``self``. ``Dropout`` and ``BatchNorm1d``/``BatchNorm2d`` behave
        differently in the two modes."""
        if not isinstance(mode, (bool, np.bool_)):
            raise ValueError("training mode is expected to be boolean")
        for m in self.modules():
            m.training = bool(mode)
        return self

    def eval(self) -> Module:
        """``train(False)``: evaluation mode (``Dropout`` passes its input through, BatchNorm
        uses its running statistics)."""
        return self.train(False)

    def requires_grad_(self, requires_grad: bool = True) -> Module:
        """Set ``requires_grad`` on every parameter; returns ``self``.

        Frozen parameters (``False``) receive no gradient in backward (their ``.grad`` is left
        as it is) and the optimizer skips them; ``parameters()`` still lists them.
        """
        if not isinstance(requires_grad, (bool, np.bool_)):
            raise TypeError(f"requires_grad_ expects a bool, got {requires_grad!r}")
        for p in self.parameters():
            p.requires_grad = bool(requires_grad)
        return self

    def _cast(self, dtype: Any) -> Module:
        dt = _float_dtype(dtype, type(self).__name__)
        for m in self.modules():
            changed = False
            for p in _registry(m, "_parameters").values():
                if p is not None and p.data.dtype != dt:
                    p.data = p.data.astype(dt)
                    p.grad = None if p.grad is None else p.grad.astype(dt)
                    changed = True
            buffers = _registry(m, "_buffers")
            for name, b in list(buffers.items()):
                if b is not None and _is_float(b.dtype) and b.dtype != dt:
                    buffers[name] = b.astype(dt)
                    object.__setattr__(m, name, buffers[name])
                    changed = True
            if "dtype" in m.__dict__ and m.__dict__["dtype"] != dt:
                m.dtype = dt
                changed = True
            if changed:
                m._reset()
        return self

    def float(self) -> Module:
        """Cast every parameter (and gradient) to float32; returns ``self``.

        A parameter that changes dtype gets a new array, so an optimizer built before holds the
        old ones: create the optimizer after ``float()``/``double()``/``half()``/
        ``bfloat16()``. Modules already of the dtype are left untouched. Casts round to nearest
        even (NumPy's and ml_dtypes' casts).
        """
        return self._cast(np.float32)

    def double(self) -> Module:
        """Cast every parameter (and gradient) to float64; returns ``self`` (see :meth:`float`)."""
        return self._cast(np.float64)

    def half(self) -> Module:
        """Cast every parameter (and gradient) to float16; returns ``self`` (see :meth:`float`).

        A 16-bit model stores parameters, gradients and activations in 16 bits and computes in
        float32: each layer widens its 16-bit operands to float32, computes (matrix products
        accumulate in float32), and rounds the result once to the model's dtype.
        """
        return self._cast(np.float16)

    def bfloat16(self) -> Module:
        """Cast every parameter (and gradient) to bfloat16 (``ml_dtypes.bfloat16``); returns
        ``self`` (see :meth:`half` for how 16-bit models compute)."""
        return self._cast(load_bfloat16())

    def to(self, *args: Any, **kwargs: Any) -> Module:
        """Cast every parameter (and gradient) to a dtype: float16, bfloat16 (or the string
        ``"bfloat16"``), float32 or float64; returns ``self``.

        minnet runs on the CPU only: a device (``"cpu"``, ``device="cpu"``) is accepted and
        changes nothing, as PyTorch's ``module.to("cpu")`` on a CPU model; any other device
        raises ``ValueError``. ``to("cpu", np.float64)`` and ``to(dtype=...)`` also work.
        """
        dtype = kwargs.pop("dtype", None)
        device = kwargs.pop("device", None)
        kwargs.pop("non_blocking", None)
        if kwargs:
            raise TypeError(f"to() got unexpected keyword arguments {sorted(kwargs)}")
        for a in args:
            if isinstance(a, str) and a.split(":")[0].lower() in ("cpu", "cuda", "mps", "xpu"):
                device = a
            elif dtype is None:
                dtype = a
            else:
                raise TypeError(f"to() got more than one dtype: {dtype!r} and {a!r}")
        if device is not None and str(device).split(":")[0].lower() != "cpu":
            raise ValueError(f"minnet runs on the CPU only; cannot move a module to {device!r}")
        return self if dtype is None else self._cast(dtype)

    def cpu(self) -> Module:
        """``self``: minnet's modules are always on the CPU (PyTorch's ``module.cpu()``)."""
        return self

    def apply(self, fn: Any) -> Module:
        """Call ``fn(m)`` on every sub-module (children first, depth first) and then on this
        module; returns ``self``. PyTorch's idiom for initialisation::

            def init(m):
                if isinstance(m, nn.Linear):
                    nn.init.xavier_uniform_(m.weight)
                    nn.init.zeros_(m.bias)
            model.apply(init)
        """
        for m in self.children():
            m.apply(fn)
        fn(self)
        return self

    # ------------------------------------------------------------------------- state

    def _state_entries(self) -> dict[str, tuple[str, Any, Any]]:
        """``{key: (kind, owner, name)}`` for every entry of :meth:`state_dict`, in PyTorch's
        order: each module's parameters (as :meth:`named_parameters` lists them), then its
        persistent buffers, then its children's."""
        params = list(self.named_parameters())
        buffers: list[tuple[str, Module, str]] = []
        for prefix, m in self.named_modules():
            skip = m.__dict__.get("_non_persistent_buffers_set") or ()
            for name, b in _registry(m, "_buffers").items():
                if b is not None and name not in skip:
                    buffers.append((prefix, m, name))
        if not buffers:
            return {k: ("param", p, k) for k, p in params}
        by_prefix: dict[str, list[tuple[str, Parameter]]] = {}
        for key, p in params:
            by_prefix.setdefault(key.rpartition(".")[0], []).append((key, p))
        entries: dict[str, tuple[str, Any, Any]] = {}
        for prefix, _ in self.named_modules():
            for key, p in by_prefix.pop(prefix, []):
                entries[key] = ("param", p, key)
            for bprefix, m, name in buffers:
                if bprefix == prefix:
                    entries[f"{prefix}.{name}" if prefix else name] = ("buffer", m, name)
        for rest in by_prefix.values():  # parameters declared outside the module tree
            for key, p in rest:
                entries[key] = ("param", p, key)
        return entries

    def state_dict(self) -> dict[str, np.ndarray]:
        """``{name: copy of values}``, names as PyTorch's: ``"0.weight"``, ``"fc1.bias"``, ...,
        and the persistent buffers (``"bn.running_mean"``, ``"bn.num_batches_tracked"``)."""
        out = {}
        for key, (kind, owner, name) in self._state_entries().items():
            arr = owner.data if kind == "param" else _registry(owner, "_buffers")[name]
            out[key] = arr.copy()
        return out

    def extra_repr(self) -> str:
        """The text inside this module's parentheses in ``repr`` (empty by default)."""
        return ""

    def __repr__(self) -> str:
        children = list(self.named_children())
        if not children:
            return f"{type(self).__name__}({self.extra_repr()})"
        lines = [f"  {extra}"] if (extra := self.extra_repr()) else []
        lines += [f"  ({name}): " + repr(m).replace("\n", "\n  ") for name, m in children]
        body = "\n".join(lines)
        return f"{type(self).__name__}(\n{body}\n)"

    def load_state_dict(self, state_dict: dict[str, Any], strict: bool = True) -> _IncompatibleKeys:
        """Copy values in, cast to each parameter's dtype; return ``(missing_keys,
        unexpected_keys)`` as a named tuple, as PyTorch does.

        Every key and shape is checked first; on any wrong shape or value, and with
        ``strict=True`` (the default) on any missing or unexpected key, a ``ValueError`` lists
        them all and no parameter is changed. With ``strict=False`` missing and unexpected keys
        are only reported in the returned tuple; the matching parameters are loaded.
        """
        if not isinstance(state_dict, dict):
            raise TypeError(f"load_state_dict expects a dict, got {type(state_dict).__name__}")
        entries = self._state_entries()
        params = {
            k: (owner if kind == "param" else _BufferRef(owner, name))
            for k, (kind, owner, name) in entries.items()
        }
        missing = [k for k in params if k not in state_dict]
        unexpected = [k for k in state_dict if k not in params]
        errors = []
        if strict and missing:
            errors.append("Missing key(s) in state_dict: " + ", ".join(f'"{k}"' for k in missing))
        if strict and unexpected:
            errors.append(
                "Unexpected key(s) in state_dict: " + ", ".join(f'"{k}"' for k in unexpected)
            )
        arrays = {}
        for name, p in params.items():
            if name not in state_dict:
                continue
            value = state_dict[name]
            try:
                arr = _asarray(value, name, "value")
            except (ValueError, TypeError) as exc:
                errors.append(str(exc))
                continue
            if arr.dtype.kind not in "iu" and not _is_float(arr.dtype):
                errors.append(
                    f"{name}: dtype {arr.dtype} cannot be loaded into a {p.dtype} parameter"
                )
            elif arr.shape != p.data.shape:
                errors.append(
                    f"size mismatch for {name}: copying a param with shape {arr.shape} from "
                    f"checkpoint, the shape in current model is {p.data.shape}"
                )
            else:
                arrays[name] = arr
        if errors:
            raise ValueError(
                f"Error(s) in loading state_dict for {type(self).__name__}:\n\t"
                + "\n\t".join(errors)
            )
        for name, arr in arrays.items():
            params[name].data[...] = arr
        return _IncompatibleKeys(missing, unexpected)


class _BufferRef:
    """A registered buffer seen as :meth:`Module.load_state_dict` sees a parameter (``data``,
    ``dtype``, ``shape``), so both are checked and written by the same code."""

    __slots__ = ("data",)

    def __init__(self, module: Module, name: str) -> None:
        self.data = _registry(module, "_buffers")[name]

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape
