"""Per-call graphs without autograd: every module call records what its backward needs.

A module called outside :class:`~minnet.no_grad` returns an :class:`Output`: a NumPy array (a
view of the result, nothing copied) that knows the :class:`Call` which produced it. A call keeps
its module's saved state (the input of a ``Linear``, the output of a ``ReLU``, a loss's
difference, ...) and the call that produced its own input, so the calls form a chain; the loss
value is a 0-d :class:`Output` at its end. ``loss.backward()`` walks the chain from the loss and
runs each module's hand-written backward on the state of *its own* call, so another forward of
the same module between the loss and ``backward`` (an accuracy on another batch without
``no_grad``) changes nothing; backward frees each call's state, and a call nobody refers to any
more (a dropped loss) is freed by Python at once.

Only module calls are recorded: NumPy arithmetic on an :class:`Output` returns an array that no
call produced, and ``loss.backward()`` refuses to backpropagate through it (a module whose
``forward`` does such arithmetic defines its own ``backward``). A few operations on losses are
recorded so that PyTorch's idioms work: a loss times or divided by a number, the sum of losses,
and ``sum()`` / ``mean()`` of an unreduced loss (``reduction="none"``).
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

import numpy as np

__all__ = ["Output", "Call"]

_SECOND = (
    "Trying to backward through the graph a second time (or directly access saved tensors after "
    "they have already been freed). Saved intermediate values of the graph are freed when you "
    "call .backward() or autograd.grad(). Specify retain_graph=True if you need to backward "
    "through the graph a second time or if you need to access saved tensors after calling "
    "backward."
)


class _Thread(threading.local):
    #: The list that the calls made inside a module with a hand-written backward are added to.
    recording: list[Any] | None = None
    #: The call a ``module.backward(g)`` most likely means: the input call of the loss whose
    #: ``loss_fn.backward()`` ran last (cleared by the next module call).
    next: Call | None = None
    #: Set while a Sequential whose buffers are taken runs: nested Sequentials take none either.
    fresh: bool = False


_thread = _Thread()


class _DerivedMarker:
    """The parent of a call whose input was computed from an :class:`Output` outside modules."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<computed outside modules>"


DERIVED: Any = _DerivedMarker()


class NeedsBackward:
    """The producer of an output that a module with only a ``forward`` computed by NumPy from
    its sub-modules' outputs: backward cannot run through it, and says what to write."""

    __slots__ = ("module",)

    def __init__(self, module: Any) -> None:
        self.module = module

    def parents(self) -> tuple[Any, ...]:
        return ()

    def error(self) -> NotImplementedError:
        name = type(self.module).__name__
        return NotImplementedError(
            f"{self.module._label()} defines no backward(), and its forward computed its output "
            "from its sub-modules' outputs with operations minnet does not record (NumPy "
            "arithmetic, indexing, reshapes, concatenation, ...), so backward cannot run through "
            f"it. Give {name} a method `def backward(self, grad_out):` that returns dLoss/d(input) "
            "for dLoss/d(output) `grad_out`: call each sub-module's backward in reverse order of "
            "the forward's calls (`g = self.fc2.backward(g)`; it adds into their parameters' "
            ".grad) and write the derivative of the NumPy steps in between; or make the forward "
            "call modules only (nn.functional, nn.Flatten, ...)."
        )

    def __repr__(self) -> str:
        return f"<needs a backward(): {self.module._label()}>"


class Call:
    """One call of a module outside ``no_grad``: the module, its saved state and the call that
    produced its input (``parent``; ``None`` for data, :data:`DERIVED` for an array computed
    from a module's output by NumPy).

    A module with several array inputs (attention's query, key and value) records the producer
    of its first input in ``parent`` and those of the others in ``others`` (a tuple; ``None``
    for the usual one-input call); its backward then returns one gradient per input, in order.
    When every input is the same array (self-attention), the call has that one input and its
    backward returns one gradient (the sum over the roles the array played).

    ``state`` is ``None`` once backward has used it. A module with a hand-written ``backward``
    that calls other modules keeps their calls in ``children`` instead of a state of its own.
    """

    __slots__ = ("module", "state", "parent", "children", "others", "__weakref__")

    def __init__(self, module: Any, state: Any, parent: Any, children: list[Any] | None = None,
                 others: tuple[Any, ...] | None = None) -> None:  # fmt: skip
        self.module = module
        self.state = state
        self.parent = parent
        self.children = children
        self.others = others

    def parents(self) -> tuple[Any, ...]:
        """The calls whose outputs this call's inputs came from."""
        if self.others is None:
            return (self.parent,)
        return (self.parent, *self.others)

    def name(self) -> str:
        """``"LinearBackward"``, ... (PyTorch's ``grad_fn`` names end in ``Backward0``)."""
        return f"{type(self.module).__name__}Backward"

    def apply(self, grad: Any, retain: bool) -> tuple[Any, ...]:
        """Run the module's backward on this call's state: ``(dLoss/d(input),)``, or one
        gradient per input for a call with several inputs."""
        if self.state is None and self.children is None:
            raise RuntimeError(_SECOND)
        if self.others is None:
            return (self.module._run_call(self, grad, self.parent is not None, retain),)
        wanted = any(p is not None for p in self.parents())
        return tuple(self.module._run_call(self, grad, wanted, retain))

    def __repr__(self) -> str:
        return f"<{self.name()} of {self.module._label()}>"


class _Combine:
    """A recorded operation on losses: ``out = sum_i coef_i * input_i`` (a scaled loss, a sum of
    losses) or a reduction of an unreduced loss (``kind`` "sum" / "mean")."""

    __slots__ = ("inputs", "coefs", "kind", "shape", "done")

    def __init__(self, inputs: tuple[Any, ...], coefs: tuple[float, ...], kind: str = "linear",
                 shape: tuple[int, ...] = ()) -> None:  # fmt: skip
        self.inputs = inputs
        self.coefs = coefs
        self.kind = kind
        self.shape = shape
        self.done = False

    def parents(self) -> tuple[Any, ...]:
        return self.inputs

    def name(self) -> str:
        return {"linear": "AddBackward", "sum": "SumBackward", "mean": "MeanBackward"}[self.kind]

    def apply(self, grad: Any, retain: bool) -> tuple[Any, ...]:
        if self.done:
            raise RuntimeError(_SECOND)
        if not retain:
            self.done = True
        g = np.asarray(grad)
        if self.kind == "linear":
            return tuple(g * c if c != 1 else g for c in self.coefs)
        n = int(np.prod(self.shape))
        full = np.broadcast_to(g, self.shape)
        return (full / g.dtype.type(n) if self.kind == "mean" else np.array(full),)

    def __repr__(self) -> str:
        return f"<{self.name()}>"


def _check(node: Any) -> None:
    """Raise, before anything is computed, if ``node`` cannot run."""
    if type(node) is Call:
        if node.state is None and node.children is None:
            raise RuntimeError(f"{node.module._label()}: {_SECOND}")
        if node.parent is DERIVED or (node.others is not None and DERIVED in node.others):
            raise RuntimeError(
                f"{node.module._label()}: its input was computed from a module's output by an "
                "operation minnet does not record (NumPy arithmetic, indexing, concatenation, "
                "...), so backward cannot reach the modules before it. Give the module whose "
                "forward does this a backward() method, or pass .detach() of the array if no "
                "gradient should flow there."
            )
    elif type(node) is NeedsBackward:
        raise node.error()
    elif node.done:
        raise RuntimeError(_SECOND)


def run_backward(root: Any, grad: Any, retain: bool = False, inside: Any = None) -> Any:
    """Backpropagate ``grad`` from the call ``root`` through every call it depends on, each
    once (gradients of a call used twice are added first), adding into parameters' ``.grad``.

    With ``inside`` (a set of module ids), only calls of those modules run: the gradient that
    reaches a call of another module (or the data) is returned instead (``None`` if none
    was computed)."""
    if inside is not None:
        return _run_inside(root, grad, retain, inside)
    # The usual graph is a chain of module calls (a loss after a model): checked, then run.
    chain = []
    node = root
    while type(node) is Call and node.others is None:
        if node.parent is DERIVED or (node.state is None and node.children is None):
            _check(node)
        chain.append(node)
        node = node.parent
        if node is None:
            g = grad
            for call in chain:
                g = call.module._run_call(call, g, call.parent is not None, retain)
                if not retain:
                    call.parent = None
            return None
    # Collect the calls first (depth first, parents after their consumers), so that a graph
    # that cannot run raises before any gradient is added.
    order: list[Any] = []
    pending: dict[int, int] = {}
    stack = [root]
    seen = {id(root)}
    chain = True
    while stack:
        node = stack.pop()
        _check(node)
        order.append(node)
        for p in node.parents():
            if p is None:
                continue
            pending[id(p)] = pending.get(id(p), 0) + 1
            if id(p) not in seen:
                seen.add(id(p))
                stack.append(p)
            else:
                chain = False
    if chain and all(len(n.parents()) == 1 for n in order):
        g = grad
        for node in order:  # a chain: each call's input gradient goes to the next one
            g = node.apply(g, retain)[0]
            if not retain and type(node) is Call:
                node.parent = node.others = None
        return
    # A graph with shared calls: run a call once every consumer has added its gradient.
    grads: dict[int, Any] = {id(root): grad}
    ready = [root]
    while ready:
        node = ready.pop()
        g = grads.pop(id(node))
        parents = node.parents()
        outs = node.apply(g, retain)
        for p, gp in zip(parents, outs):
            if p is None or gp is None:
                continue
            k = id(p)
            grads[k] = gp if k not in grads else grads[k] + gp
            pending[k] -= 1
            if pending[k] == 0:
                ready.append(p)
        if not retain and type(node) is Call:
            node.parent = node.others = None


def _run_inside(root: Any, grad: Any, retain: bool, inside: set[int]) -> Any:
    """:func:`run_backward` restricted to the calls of the modules in ``inside``."""

    def within(node: Any) -> bool:
        return node is not None and node is not DERIVED and (
            type(node) is not Call or id(node.module) in inside
        )

    order: list[Any] = []
    pending: dict[int, int] = {}
    stack, seen = [root], {id(root)}
    while stack:
        node = stack.pop()
        if type(node) is not Call or DERIVED not in node.parents():  # DERIVED: a boundary
            _check(node)
        order.append(node)
        for p in node.parents():
            if not within(p):
                continue
            pending[id(p)] = pending.get(id(p), 0) + 1
            if id(p) not in seen:
                seen.add(id(p))
                stack.append(p)
    grads: dict[int, Any] = {id(root): grad}
    ready, result = [root], None
    while ready:
        node = ready.pop()
        g = grads.pop(id(node))
        parents = node.parents()
        outs = node.apply(g, retain)
        for p, gp in zip(parents, outs):
            if gp is None:
                continue
            if not within(p):
                result = gp if result is None else result + gp
                continue
            k = id(p)
            grads[k] = gp if k not in grads else grads[k] + gp
            pending[k] -= 1
            if pending[k] == 0:
                ready.append(p)
    return result


class Output(np.ndarray):
    """What a module call outside ``no_grad`` returns: a NumPy array (a view of the result) that
    knows the call that produced it (``grad_fn``), so the next module call, or a loss, links to
    it. Everything NumPy does works on it; the results of NumPy operations are arrays that no
    call produced (``grad_fn is None``).

    The loss value is a 0-d :class:`Output`: ``loss.item()``, ``float(loss)``, formatting and
    comparisons work as on a NumPy scalar, and ``loss.backward()`` backpropagates through every
    module call that produced it, as in PyTorch.
    """

    #: The producing call; ``None`` (the class default) on arrays NumPy derived from an Output.
    _node: Any = None

    @property
    def grad_fn(self) -> Any:
        """The :class:`Call` that produced this array, or ``None``."""
        return self._node

    @property
    def requires_grad(self) -> bool:
        """Whether ``backward()`` can start here (a module call produced this array)."""
        return self._node is not None

    def backward(self, gradient: Any = None, retain_graph: bool = False) -> None:
        """Backpropagate from this array through the module calls that produced it, adding into
        every parameter's ``.grad``, as PyTorch's ``tensor.backward()``.

        ``gradient`` is dLoss/d(self): omitted (ones) for a scalar loss, required otherwise.
        The saved state of every call is freed unless ``retain_graph=True``; a second backward
        through freed calls raises PyTorch's ``RuntimeError``.
        """
        node = self._node
        if node is None:
            raise RuntimeError(
                "element 0 of tensors does not require grad and does not have a grad_fn: this "
                "array was not returned by a module call outside no_grad() (NumPy operations on "
                "a module's output are not recorded)"
            )
        if gradient is None:
            if self.ndim != 0 and self.size != 1:
                raise RuntimeError(
                    f"grad can be implicitly created only for scalar outputs (this output has "
                    f"shape {self.shape}; pass backward(gradient) or reduce it with .sum() or "
                    ".mean() first)"
                )
            if type(node) is Call and node.module._is_loss:
                if node.parent is None and node.state is not None:
                    raise RuntimeError(
                        f"element 0 of tensors does not require grad and does not have a "
                        f"grad_fn: the input of {node.module._label()} was not returned by a "
                        "module call outside no_grad(), so no parameter gets a gradient"
                    )
                gradient = None  # the loss's own default: 1
            else:
                gradient = np.ones(self.shape, self.dtype)
        else:
            g = np.asarray(gradient)
            if g.shape != self.shape and g.size != 1:
                raise RuntimeError(
                    f"Mismatch in shape: grad_output[0] has a shape of {g.shape} and output[0] "
                    f"has a shape of {self.shape}."
                )
            gradient = g.reshape(()) if self.ndim == 0 or g.shape != self.shape else g
        _thread.next = None
        run_backward(node, gradient, retain_graph)

    def detach(self) -> np.ndarray:
        """This array as a plain ``np.ndarray`` (same memory), cut from the graph."""
        return self.view(np.ndarray)

    def numpy(self) -> np.ndarray:
        """:meth:`detach` (PyTorch's ``tensor.detach().numpy()`` ports unchanged)."""
        return self.view(np.ndarray)

    def cpu(self) -> Output:
        """``self``: minnet has no devices."""
        return self

    # --- recorded operations on losses --------------------------------------------------

    def _scaled(self, c: Any) -> Any:
        node = self._node
        if node is None or not isinstance(c, (int, float, np.integer, np.floating)):
            return None
        out = np.asarray(np.multiply(self.view(np.ndarray), c)).view(Output)
        out._node = _Combine((node,), (float(c),))
        return out

    def __mul__(self, other: Any) -> Any:
        r = self._scaled(other)
        return super().__mul__(other) if r is None else r

    __rmul__ = __mul__

    def __truediv__(self, other: Any) -> Any:
        r = self._scaled(1.0 / other) if isinstance(other, (int, float, np.number)) else None
        return super().__truediv__(other) if r is None else r

    def __neg__(self) -> Any:
        r = self._scaled(-1.0)
        return super().__neg__() if r is None else r

    def _combined(self, other: Any, sign: float) -> Any:
        a, b = self._node, getattr(other, "_node", None)
        if a is None or not isinstance(other, np.ndarray):
            return None
        plain = np.ndarray.__add__ if sign > 0 else np.ndarray.__sub__
        value = np.asarray(plain(self.view(np.ndarray), other.view(np.ndarray))).view(Output)
        if other.shape != self.shape:
            return None
        if b is None:  # a constant added: the gradient goes to self only
            value._node = _Combine((a,), (1.0,))
        else:
            value._node = _Combine((a, b), (1.0, sign))
        return value

    def __add__(self, other: Any) -> Any:
        if isinstance(other, (int, float, np.number)) and self._node is not None:
            out = np.asarray(np.add(self.view(np.ndarray), other)).view(Output)
            out._node = _Combine((self._node,), (1.0,))
            return out
        r = self._combined(other, 1.0)
        return super().__add__(other) if r is None else r

    __radd__ = __add__

    def __sub__(self, other: Any) -> Any:
        if isinstance(other, (int, float, np.number)) and self._node is not None:
            return self.__add__(-other)
        r = self._combined(other, -1.0)
        return super().__sub__(other) if r is None else r

    def _reduced(self, kind: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        node = self._node
        if node is None or args or kwargs:
            return None
        plain = self.view(np.ndarray)
        value = np.asarray(plain.sum() if kind == "sum" else plain.mean(), plain.dtype)
        out = value.view(Output)
        out._node = _Combine((node,), (1.0,), kind, self.shape)
        return out

    def sum(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        """NumPy's ``sum``; ``sum()`` of a module's output (no arguments) is recorded."""
        r = self._reduced("sum", args, kwargs)
        return super().sum(*args, **kwargs) if r is None else r

    def mean(self, *args: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        """NumPy's ``mean``; ``mean()`` of a module's output (no arguments) is recorded."""
        r = self._reduced("mean", args, kwargs)
        return super().mean(*args, **kwargs) if r is None else r


def unwrap(x: Any) -> tuple[Any, Any]:
    """``(plain array, the call that produced it)`` of a module's input: ``x`` and ``None`` for
    anything but an :class:`Output`, :data:`DERIVED` for an Output that NumPy computed."""
    if type(x) is not Output:
        return x, None
    parent = x._node
    return x.view(np.ndarray), DERIVED if parent is None else parent


def wrap(value: Any, node: Any) -> Any:
    """``value`` (an array or a NumPy scalar) as an :class:`Output` produced by ``node``."""
    if type(value) is np.ndarray:
        out = value.view(Output)
    elif isinstance(value, np.ndarray):  # another subclass: its data, as an Output
        out = value.view(np.ndarray).view(Output)
    elif isinstance(value, np.generic):
        out = np.asarray(value).view(Output)
    else:
        return value  # not an array (a module returning a tuple, ...): nothing to attach
    out._node = node
    return out


def weak(node: Call) -> weakref.ref[Call]:
    """A weak reference to ``node`` (a buffer owner that must not keep the call alive)."""
    return weakref.ref(node)
