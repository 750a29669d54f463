"""Numba's on-disk cache for compiled functions built from closures, keyed on their source.

Numba's own cache key for a closure pickles the closure's variables, and a compiled function
(a ``CPUDispatcher``) does not pickle the same way twice, so a kernel built by a factory around
another compiled function would recompile in every process (numba issue #6264).
:func:`cache_on_source` gives such a function a cache whose key describes each closure variable
by value (numbers, strings, tuples) or, for a compiled function, by its module, name, bytecode,
file stamp and own closure; plus the stamps of the minnet source files it can reach
(:func:`source_files`: the files of every function it calls or captures, followed through their
globals and closures, and ``minnet/_lowp.py``, whose ``@overload``/``@intrinsic`` conversions any
kernel may inline), and the build-time choice of float16 conversion (``_lowp.F16_HARDWARE``:
F16C instructions or integer code), so a process that chose the other conversion never loads a
kernel compiled with it. A second process finds the compiled code on disk; an edit of a file that a
kernel reaches recompiles it, and an edit elsewhere (the lab, the layers) does not.
"""

from __future__ import annotations

import hashlib
import os
import types
from collections.abc import Callable, Iterable
from typing import Any

import numba
from numba.core.caching import FunctionCache, IndexDataCacheFile

from minnet import _lowp

__all__ = [
    "Undescribable", "describe", "source_files", "source_stamps", "cache_on_source", "generated",
    "build_choices",
]  # fmt: skip

_ROOT = os.path.dirname(os.path.abspath(__file__))
#: Always part of a key: the 16-bit conversions are ``@overload``/``@intrinsic`` registrations
#: that a kernel reaches through Numba's typing, not through a name it calls.
_ALWAYS = (os.path.join(_ROOT, "_lowp.py"),)


def _names(code: types.CodeType) -> Iterable[str]:
    """The global names ``code`` and the code objects nested in it refer to."""
    yield from code.co_names
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _names(const)


def source_files(*objs: Any) -> tuple[str, ...]:
    """The minnet source files that the functions in ``objs`` (compiled or Python functions,
    tuples of them) reach: their own, and those of every minnet function or module they name as
    a global or capture in a closure, recursively, plus ``minnet/_lowp.py``."""
    files: set[str] = set(_ALWAYS)
    seen: set[int] = set()

    def visit(obj: Any) -> None:
        if isinstance(obj, numba.core.registry.CPUDispatcher):
            obj = obj.py_func
        if isinstance(obj, tuple):
            for o in obj:
                visit(o)
        elif isinstance(obj, types.ModuleType):
            path = getattr(obj, "__file__", None) or ""
            if path.startswith(_ROOT):
                files.add(path)
        elif isinstance(obj, types.FunctionType) and id(obj.__code__) not in seen:
            seen.add(id(obj.__code__))
            path = obj.__code__.co_filename
            if not path.startswith(_ROOT):
                return
            files.add(path)
            for name in set(_names(obj.__code__)):
                if name in obj.__globals__:
                    visit(obj.__globals__[name])
            for cell in obj.__closure__ or ():
                visit(cell.cell_contents)

    for obj in objs:
        visit(obj)
    return tuple(sorted(files))


def source_stamps(files: Iterable[str]) -> tuple[tuple[str, float, int], ...]:
    """``(file, mtime, size)`` of each file, relative to the minnet package."""
    out = []
    for path in files:
        st = os.stat(path)
        out.append((os.path.relpath(path, _ROOT), st.st_mtime, st.st_size))
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
    variables (:func:`describe`), the stamps of the source files it reaches
    (:func:`source_files`), the float16 conversion it is built with (:func:`build_choices`) and
    ``extra``. Returns ``False`` (and leaves it uncached) when a closure variable cannot be
    described."""
    py = dispatcher.py_func
    try:
        cells = tuple(describe(c.cell_contents) for c in (py.__closure__ or ()))
    except Undescribable:
        return False
    stamps = source_stamps(source_files(py))
    key = (cells, describe(extra), stamps, build_choices())
    dispatcher._cache = _SourceKeyedCache(py, key)
    return True


def build_choices() -> tuple[tuple[str, Any], ...]:
    """The process-wide choices that change a kernel's machine code without changing a source
    file, as part of every key: the float16 conversion (``_lowp.F16_HARDWARE``, read from the
    CPU and ``MINNET_F16C`` at import)."""
    return (("f16_hardware", _lowp.F16_HARDWARE),)


def generated(source: str, filename: str, **names: Any) -> Callable[..., Any]:
    """The function ``impl`` defined by ``source`` (code generated for one tuple length in a
    Numba ``@overload``), with ``names`` as its globals; ``filename`` is where it is said to
    come from (the module that generates it)."""
    namespace = dict(names)
    exec(compile(source, filename, "exec"), namespace)  # noqa: S102 - generated from literals
    return namespace["impl"]
