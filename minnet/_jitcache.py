"""Numba's on-disk cache for compiled functions built from closures, keyed on their source.

Numba's own cache key for a closure pickles the closure's variables, and a compiled function
(a ``CPUDispatcher``) does not pickle the same way twice, so a kernel built by a factory around
another compiled function would recompile in every process (numba issue #6264).
:func:`cache_on_source` gives such a function a cache whose key describes each closure variable
by value (numbers, strings, tuples) or, for a compiled function, by its module, name, bytecode,
file stamp and own closure; plus the stamps of every minnet source file, because a kernel may
inline code from any of them (``minnet/_lowp.py``'s conversions, the optimizer skeleton). A
second process finds the compiled code on disk; an edit anywhere in minnet recompiles.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from typing import Any

import numba
from numba.core.caching import FunctionCache, IndexDataCacheFile

__all__ = ["Undescribable", "describe", "source_stamps", "cache_on_source", "generated"]


def source_stamps() -> tuple[tuple[str, float, int], ...]:
    """``(file, mtime, size)`` of every minnet module: a kernel may call code in any of them."""
    root = os.path.dirname(os.path.abspath(__file__))
    out = []
    for folder, dirs, files in sorted(os.walk(root)):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in sorted(files):
            if name.endswith(".py"):
                st = os.stat(os.path.join(folder, name))
                out.append((os.path.relpath(os.path.join(folder, name), root), st.st_mtime,
                            st.st_size))  # fmt: skip
    return tuple(out)


class Undescribable(Exception):
    """A closure variable that has no stable description (the function is not cached)."""


def describe(obj: Any) -> Any:
    """A stable description of a closure variable (for the on-disk cache key)."""
    if isinstance(obj, numba.core.registry.CPUDispatcher):
        f = obj.py_func
        try:
            st = os.stat(f.__code__.co_filename)
            stamp: Any = (f.__code__.co_filename, st.st_mtime, st.st_size)
        except OSError:
            raise Undescribable(f.__qualname__) from None
        cells = tuple(describe(c.cell_contents) for c in (f.__closure__ or ()))
        code = hashlib.sha256(f.__code__.co_code).hexdigest()
        return ("jit", f.__module__, f.__qualname__, code, stamp, obj.targetoptions, cells)
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return (type(obj).__name__, obj)
    if isinstance(obj, tuple):
        return (type(obj).__name__, tuple(describe(o) for o in obj))
    raise Undescribable(type(obj).__name__)


class _OwnIndex(IndexDataCacheFile):
    """An index file that reads as empty (a cache miss) when it cannot be read: a key may
    pickle a type from a module that this process cannot import."""

    def _load_index(self) -> dict[Any, Any]:
        try:
            return super()._load_index()
        except Exception:  # noqa: BLE001 - any unreadable index is a miss, never an error
            return {}


class _SourceKeyedCache(FunctionCache):
    """A ``FunctionCache`` whose index key is the function's bytecode plus a description, with
    an index file of its own per description (every specialisation built from one closure
    source shares the closure's file name; one index for all of them would be rewritten by
    every process that compiles any of them)."""

    def __init__(self, py_func: Callable[..., Any], described: Any) -> None:
        super().__init__(py_func)
        self._described = hashlib.sha256(repr(described).encode()).hexdigest()
        self._cache_file = _OwnIndex(
            cache_path=self._cache_path,
            filename_base=f"{self._impl.filename_base}-{self._described[:16]}",
            source_stamp=self._impl.locator.get_source_stamp(),
        )

    def _index_key(self, sig: Any, codegen: Any) -> Any:
        code = hashlib.sha256(self._py_func.__code__.co_code).hexdigest()
        return (sig, codegen.magic_tuple(), (code, self._described))


def cache_on_source(dispatcher: Any, extra: Any = ()) -> bool:
    """Give ``dispatcher`` (a ``numba.njit`` of a closure) an on-disk cache keyed on its closure
    variables (:func:`describe`), minnet's source stamps and ``extra``. Returns ``False`` (and
    leaves it uncached) when a closure variable cannot be described."""
    py = dispatcher.py_func
    try:
        cells = tuple(describe(c.cell_contents) for c in (py.__closure__ or ()))
    except Undescribable:
        return False
    dispatcher._cache = _SourceKeyedCache(py, (cells, describe(extra), source_stamps()))
    return True


def generated(source: str, filename: str, **names: Any) -> Callable[..., Any]:
    """The function ``impl`` defined by ``source`` (code generated for one tuple length in a
    Numba ``@overload``), with ``names`` as its globals; ``filename`` is where it is said to
    come from (the module that generates it)."""
    namespace = dict(names)
    exec(compile(source, filename, "exec"), namespace)  # noqa: S102 - generated from literals
    return namespace["impl"]
