"""Checkpoints: ``minnet.save(obj, path)`` and ``minnet.load(path)``, safe and atomic.

``obj`` is a tree of dicts (keys ``str`` or ``int``), lists, tuples, ``None``, ``bool``, ``int``
(any size, so NumPy ``bit_generator.state`` fits), ``float`` (bit for bit: NaN payloads, inf, -0.0),
``str``, NumPy arrays (numeric, bool or string dtypes, and ``ml_dtypes.bfloat16``, stored as its
``uint16`` bit patterns with a ``bfloat16`` tag) and NumPy scalars. ``load`` returns the same
tree with the same types: tuples stay tuples, ``int`` keys stay ``int``, arrays keep dtype, shape
and memory order.

The file is an ordinary ``.npz`` (an uncompressed zip of ``.npy`` members; ``np.load`` can read
it): one member per array, ``a0.npy``, ``a1.npy``, ..., and a manifest ``__minnet__.npy`` (the
UTF-8 bytes of a JSON document, as a ``uint8`` array) holding the format name, the format version,
the tree with arrays replaced by references, and a SHA-256 digest. The digest covers the manifest
(with the digest field blanked) and every array member's bytes, so any change to the content is
detected, on top of the zip's own CRC-32 checks.

Loading never executes anything from the file: no pickle (object arrays are refused before any
byte of their data is read), no ``eval``; the tree is rebuilt from JSON by a whitelist of node
types. Any problem with the file raises :class:`CheckpointError` and returns nothing.

Saving is atomic: the file is written to a temporary name in the destination directory, flushed
and ``fsync``-ed, renamed over ``path`` with ``os.replace``, and the directory is ``fsync``-ed. A
process killed at any instant leaves either the previous checkpoint or the new one, whole (at
worst plus a stray ``.<name>.<random>.tmp`` file, which the next successful ``save`` to the same
path removes once no process is writing it). Saving over an existing file keeps its permission
bits; a new file gets the mode the umask allows.

``load`` reads regular files only: a device (``/dev/zero``), a FIFO or a socket is refused before
it is opened.
"""

from __future__ import annotations

import errno
import hashlib
import json
import math
import os
import re
import secrets
import stat
import struct
import time
import zipfile
from typing import IO, Any

import numpy as np

from minnet.dtypes import is_bfloat16, load_bfloat16
from minnet.nn.graph import Output

__all__ = ["save", "load", "CheckpointError", "FORMAT", "VERSION"]

#: Format name written into every manifest.
FORMAT = "minnet-checkpoint"
#: Format version written by this minnet; ``load`` refuses any other.
VERSION = 1

_MANIFEST = "__minnet__.npy"
_DIGEST_FIELD = re.compile(rb'\A\{"sha256": "([0-9a-f]{64})", ')
_BLANK_DIGEST = "0" * 64
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed timestamps: the same object gives the same bytes
_ARRAY_KINDS = "biufcUS"  # bool, ints, floats, complex, str, bytes: nothing that needs pickle
_MAX_MANIFEST_BYTES = 64 * 2**20
#: A temporary file of ``save`` untouched for this long, and not locked by a live writer, is a
#: leftover of a killed save. Where files cannot be locked (no ``fcntl``), age alone decides.
_STALE_TMP_SECONDS = 60.0
_STALE_TMP_SECONDS_UNLOCKED = 3600.0

try:  # POSIX: a writer holds an advisory lock on its temporary file while it writes
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


class CheckpointError(ValueError):
    """A file that ``minnet.load`` cannot return whole: truncated, corrupted, of another format
    version, not a minnet checkpoint, or carrying content that would need pickle."""


# -- encoding ---------------------------------------------------------------------------------


class _Encoder:
    """Turn a tree into (JSON-able structure, list of arrays), validating every node."""

    def __init__(self) -> None:
        self.arrays: list[np.ndarray] = []
        self._open: set[int] = set()  # ids of the containers being encoded, to catch cycles

    def _add(self, arr: np.ndarray, where: str) -> int:
        if arr.dtype.kind not in _ARRAY_KINDS or arr.dtype.fields is not None:
            raise TypeError(
                f"minnet.save: {where} is an array of dtype {arr.dtype}; only bool, "
                "integer, float, complex and string arrays can be stored (others need pickle)"
            )
        self.arrays.append(arr)
        return len(self.arrays) - 1

    def encode(self, obj: Any, where: str = "obj") -> Any:
        if obj is None or isinstance(obj, (bool, str)):
            return obj
        if isinstance(obj, (np.ndarray, np.generic)) and is_bfloat16(obj.dtype):
            # No .npy dtype for bfloat16: its bit patterns as uint16, tagged.
            kind = "bfloat16" if isinstance(obj, np.ndarray) else "bfloat16_scalar"
            bits = np.asarray(obj).view(np.uint16)
            return {kind: self._add(bits if type(obj) is np.ndarray else np.array(bits), where)}
        if isinstance(obj, np.generic):  # before int/float: np.float64 subclasses float
            return {"scalar": self._add(np.asarray(obj), where)}
        if isinstance(obj, int):
            return int(obj)
        if isinstance(obj, float):
            if math.isfinite(obj):
                return float(obj)  # JSON keeps finite floats exactly, -0.0 included
            return {"float": struct.pack(">d", obj).hex()}  # inf, and NaN with sign and payload
        if type(obj) is np.ndarray:
            return {"array": self._add(obj, where)}
        if type(obj) is Output:  # a module's output or a loss: stored as its plain array
            return {"array": self._add(obj.view(np.ndarray), where)}
        if isinstance(obj, (dict, list, tuple)):
            if id(obj) in self._open:
                raise TypeError(f"minnet.save: {where} is a container that holds itself (a cycle)")
            self._open.add(id(obj))
            try:
                return self._container(obj, where)
            finally:
                self._open.discard(id(obj))
        raise TypeError(
            f"minnet.save: cannot store {type(obj).__name__} at {where}; supported: "
            "dict (str or int keys), list, tuple, str, int, float, bool, None, np.ndarray and "
            "NumPy scalars"
        )

    def _container(self, obj: dict | list | tuple, where: str) -> Any:
        if isinstance(obj, dict):
            items = []
            for key, value in obj.items():
                if isinstance(key, bool) or not isinstance(key, (str, int)):
                    raise TypeError(
                        f"minnet.save: dict keys must be str or int, got {type(key).__name__} "
                        f"{key!r} in {where}"
                    )
                items.append(
                    [
                        int(key) if isinstance(key, int) else key,
                        self.encode(value, f"{where}[{key!r}]"),
                    ]
                )
            return {"dict": items}
        kind = "tuple" if isinstance(obj, tuple) else "list"
        return {kind: [self.encode(v, f"{where}[{i}]") for i, v in enumerate(obj)]}


class _HashingWriter:
    """File-like wrapper that hashes everything written through it."""

    def __init__(self, raw: IO[bytes], digest: Any) -> None:
        self.raw = raw
        self.digest = digest

    def write(self, data: Any) -> int:
        self.digest.update(data)
        return self.raw.write(data)


def _zipinfo(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
    info.compress_type = zipfile.ZIP_STORED
    return info


def _manifest_bytes(tree: Any, names: list[str], digest_hex: str) -> bytes:
    # "sha256" must stay the first key: load blanks it by position to recompute the digest.
    manifest = {
        "sha256": digest_hex,
        "format": FORMAT,
        "version": VERSION,
        "arrays": names,
        "tree": tree,
    }
    return json.dumps(manifest, ensure_ascii=True, allow_nan=False).encode("ascii")


def _write_npy(zf: zipfile.ZipFile, name: str, arr: np.ndarray, digest: Any = None) -> None:
    with zf.open(_zipinfo(name), "w", force_zip64=True) as member:
        out = member if digest is None else _HashingWriter(member, digest)
        np.lib.format.write_array(out, arr, allow_pickle=False)


def save(obj: Any, path: str | os.PathLike[str]) -> None:
    """Write ``obj`` to ``path`` (conventionally ``*.npz``) atomically.

    Args:
        obj: a tree of dict / list / tuple / str / int / float / bool / None / np.ndarray /
            NumPy scalar, e.g. ``{"model": model.state_dict(), "optimizer":
            optimizer.state_dict(), "step": t, "rng": rng.bit_generator.state}``.
        path: destination file; its directory must exist. An existing file is replaced only once
            the new one is complete and on disk.

    Raises:
        TypeError: ``obj`` holds something that cannot be stored (the message gives its path in
            the tree, e.g. ``obj['state'][0]['exp_avg']``). Nothing is written in that case.
        OSError: the file cannot be written; ``path`` is left as it was.
    """
    encoder = _Encoder()
    tree = encoder.encode(obj)  # validate everything before touching the disk
    arrays = encoder.arrays
    names = [f"a{i}.npy" for i in range(len(arrays))]

    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{secrets.token_hex(6)}.tmp")
    if not os.path.isdir(directory):  # name the user's path, not the temporary file
        raise FileNotFoundError(
            errno.ENOENT, f"minnet.save: the directory {directory!r} does not exist", path
        )
    try:
        old = os.stat(path)
    except OSError:
        old = None
    # O_EXCL: never follow or clobber an existing file; mode 0o666 lets the umask decide for a
    # new file, and an existing file's permission bits are carried over (as writing in place
    # would keep them).
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # "a live writer", for the cleanup
        if old is not None and stat.S_ISREG(old.st_mode) and hasattr(os, "fchmod"):
            os.fchmod(fd, stat.S_IMODE(old.st_mode) & 0o777)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    try:
        with os.fdopen(fd, "wb") as f:
            digest = hashlib.sha256(_manifest_bytes(tree, names, _BLANK_DIGEST))
            with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
                for name, arr in zip(names, arrays):
                    _write_npy(zf, name, arr, digest)
                manifest = _manifest_bytes(tree, names, digest.hexdigest())
                _write_npy(zf, _MANIFEST, np.frombuffer(manifest, dtype=np.uint8))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_directory(directory)
    _remove_stale_temps(directory, os.path.basename(path))


def _remove_stale_temps(directory: str, name: str) -> None:
    """Delete the leftovers of killed saves to ``directory/name``: files named as ``save`` names
    its temporary files for that path (``.<name>.<12 hex digits>.tmp``), regular, untouched for
    :data:`_STALE_TMP_SECONDS` and not locked by a writer. Best effort: never raises."""
    pattern = re.compile(rf"\.{re.escape(name)}\.[0-9a-f]{{12}}\.tmp")
    limit = _STALE_TMP_SECONDS if fcntl is not None else _STALE_TMP_SECONDS_UNLOCKED
    try:
        entries = os.listdir(directory)
    except OSError:
        return
    now = time.time()
    for entry in entries:
        if not pattern.fullmatch(entry):
            continue
        tmp = os.path.join(directory, entry)
        try:
            st = os.lstat(tmp)
            if not stat.S_ISREG(st.st_mode) or now - st.st_mtime < limit:
                continue
            if fcntl is None:
                os.unlink(tmp)
                continue
            fd = os.open(tmp, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | os.O_NONBLOCK)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # fails while a writer lives
                if os.path.samestat(os.fstat(fd), os.lstat(tmp)):
                    os.unlink(tmp)
            finally:
                os.close(fd)
        except OSError:
            continue


def _fsync_directory(directory: str) -> None:
    """Make the rename durable (POSIX); a no-op where directories cannot be opened."""
    try:
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


# -- decoding ---------------------------------------------------------------------------------


class _HashingReader:
    """File-like wrapper over a zip member that hashes what is read."""

    def __init__(self, raw: IO[bytes], digest: Any) -> None:
        self.raw = raw
        self.digest = digest

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        if self.digest is not None:
            self.digest.update(data)
        return data


def _read_npy(
    zf: zipfile.ZipFile, info: zipfile.ZipInfo, file_size: int, digest: Any
) -> np.ndarray:
    """One ``.npy`` member as an array, checking its header before reading any data."""
    name = info.filename
    if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 0x1:
        raise CheckpointError(f"member {name} is compressed or encrypted; minnet never writes that")
    if info.file_size > file_size:
        raise CheckpointError(f"member {name} claims {info.file_size} bytes, more than the file")
    with zf.open(info) as member:
        fp = _HashingReader(member, digest)
        version = np.lib.format.read_magic(fp)
        if version == (1, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(fp)
        elif version == (2, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(fp)
        else:
            raise CheckpointError(f"member {name} has unsupported .npy version {version}")
        if dtype.hasobject:
            raise CheckpointError(
                f"member {name} is an object array; loading it would unpickle code from the "
                "file, which minnet.load never does"
            )
        if dtype.kind not in _ARRAY_KINDS or dtype.fields is not None:
            raise CheckpointError(f"member {name} has unsupported dtype {dtype}")
        nbytes = math.prod(shape) * dtype.itemsize
        if nbytes > info.file_size:
            raise CheckpointError(
                f"member {name} declares shape {shape} of {dtype} ({nbytes} bytes) but holds "
                f"only {info.file_size} bytes"
            )
        data = bytearray(nbytes)
        view = memoryview(data)
        got = 0
        while got < nbytes:
            chunk = member.readinto(view[got:])
            if not chunk:
                raise CheckpointError(f"member {name} ends early: {got} of {nbytes} data bytes")
            got += chunk
        if member.read(1):  # also reaches EOF, where zipfile checks the CRC-32
            raise CheckpointError(f"member {name} has bytes after its array data")
    if digest is not None:
        digest.update(view)
    order = "F" if fortran_order else "C"
    if nbytes == 0:
        return np.empty(shape, dtype=dtype, order=order)
    arr = np.frombuffer(data, dtype=dtype)  # writable: bytearray-backed
    return arr.reshape(shape, order=order)


def _decode(node: Any, arrays: list[np.ndarray], used: list[bool]) -> Any:
    if node is None or isinstance(node, (bool, str, int, float)):
        return node
    if not isinstance(node, dict) or len(node) != 1:
        raise CheckpointError(f"manifest has a malformed node: {str(node)[:80]}")
    ((kind, value),) = node.items()
    if kind == "float":
        if not (isinstance(value, str) and re.fullmatch("[0-9a-f]{16}", value)):
            raise CheckpointError(f"manifest has a malformed float {value!r}")
        return struct.unpack(">d", bytes.fromhex(value))[0]
    if kind in ("array", "scalar", "bfloat16", "bfloat16_scalar"):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < len(arrays):
            raise CheckpointError(f"manifest refers to a missing array {value!r}")
        if used[value]:
            raise CheckpointError(f"manifest refers to array {value} twice")
        used[value] = True
        arr = arrays[value]
        if kind.startswith("bfloat16"):
            if arr.dtype != np.uint16:
                raise CheckpointError(f"bfloat16 array {value} is stored as {arr.dtype}")
            arr = arr.view(load_bfloat16())
            kind = "scalar" if kind == "bfloat16_scalar" else "array"
        if kind == "scalar":
            if arr.ndim != 0:
                raise CheckpointError(f"array {value} should be a scalar, has shape {arr.shape}")
            return arr[()]
        return arr
    if not isinstance(value, list):
        raise CheckpointError(f"manifest has a malformed {kind!r} node")
    if kind == "list":
        return [_decode(v, arrays, used) for v in value]
    if kind == "tuple":
        return tuple(_decode(v, arrays, used) for v in value)
    if kind == "dict":
        out: dict[Any, Any] = {}
        for item in value:
            if not (isinstance(item, list) and len(item) == 2):
                raise CheckpointError("manifest has a malformed dict entry")
            key = item[0]
            if isinstance(key, bool) or not isinstance(key, (str, int)) or key in out:
                raise CheckpointError(f"manifest has a bad or repeated dict key {key!r}")
            out[key] = _decode(item[1], arrays, used)
        return out
    raise CheckpointError(f"manifest has an unknown node type {kind!r}")


def _reject_constant(name: str) -> None:
    raise CheckpointError(f"manifest is not strict JSON: it contains {name}")


def _load(f: IO[bytes], file_size: int) -> Any:
    try:
        zf = zipfile.ZipFile(f)
    except zipfile.BadZipFile as exc:
        f.seek(0)
        head = f.read(4)
        if head == b"PK\x03\x04":
            raise CheckpointError(
                f"truncated or corrupted: the zip directory is unreadable ({exc})"
            ) from exc
        raise CheckpointError(
            "not a minnet checkpoint: not an .npz (zip) file"
            + (" (file is empty)" if file_size == 0 else "")
        ) from exc
    with zf:
        infos = zf.infolist()
        names = [i.filename for i in infos]
        if len(set(names)) != len(names):
            raise CheckpointError("corrupted: the zip holds repeated member names")
        by_name = {i.filename: i for i in infos}
        if _MANIFEST not in by_name:
            raise CheckpointError(
                f"not a minnet checkpoint: no {_MANIFEST} member (members: {names[:5]}"
                f"{' ...' if len(names) > 5 else ''}); a plain .npz is read with np.load"
            )
        minfo = by_name[_MANIFEST]
        if minfo.file_size > _MAX_MANIFEST_BYTES:
            raise CheckpointError(f"manifest claims {minfo.file_size} bytes; corrupted")
        raw = _read_npy(zf, minfo, file_size, None)
        if raw.dtype != np.uint8 or raw.ndim != 1:
            raise CheckpointError("corrupted: the manifest is not a byte string")
        text = raw.tobytes()
        match = _DIGEST_FIELD.match(text)
        manifest = json.loads(text.decode("ascii"), parse_constant=_reject_constant)
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise CheckpointError("not a minnet checkpoint: the manifest names another format")
        version = manifest.get("version")
        if version != VERSION:
            raise CheckpointError(
                f"checkpoint format version {version!r}; this minnet reads version {VERSION} "
                "only (written by a different minnet release?)"
            )
        if match is None:
            raise CheckpointError("corrupted: the manifest's sha256 field is malformed")
        array_names = manifest.get("arrays")
        if not isinstance(array_names, list) or not all(isinstance(n, str) for n in array_names):
            raise CheckpointError("corrupted: the manifest's array list is malformed")
        extra = sorted(set(names) - set(array_names) - {_MANIFEST})
        missing = [n for n in array_names if n not in by_name]
        if extra or missing or len(set(array_names)) != len(array_names):
            raise CheckpointError(
                f"corrupted: members do not match the manifest (missing {missing}, "
                f"unexpected {extra})"
            )
        start, end = match.span(1)
        digest = hashlib.sha256(text[:start] + _BLANK_DIGEST.encode() + text[end:])
        arrays = [_read_npy(zf, by_name[n], file_size, digest) for n in array_names]
        if digest.hexdigest() != match.group(1).decode():
            raise CheckpointError("corrupted: the SHA-256 checksum does not match the content")
        used = [False] * len(arrays)
        obj = _decode(manifest.get("tree"), arrays, used)
        if not all(used):
            raise CheckpointError("corrupted: the manifest leaves arrays unused")
        return obj


def load(f: str | os.PathLike[str] | IO[bytes]) -> Any:
    """Read a checkpoint written by :func:`save`; return the tree, with the saved types.

    ``f`` is a path or a seekable binary file object (``open(path, "rb")``, ``io.BytesIO``).
    Never executes code from the file (no pickle, no eval), so a file from an untrusted source
    can at worst fail to load.

    Raises:
        CheckpointError: (a ``ValueError``) the file is truncated, corrupted (checksum or zip CRC
            mismatch), of another format version, not a minnet checkpoint, or holds an object
            (pickled) array; the message says which. Nothing is returned in that case.
        CheckpointError: ``f`` is not a regular file (a device such as ``/dev/zero``, a FIFO,
            a socket); refused before it is opened, so that nothing blocks or reads forever.
        FileNotFoundError, PermissionError, IsADirectoryError: ``f`` cannot be opened.
    """
    if hasattr(f, "read"):
        label = str(getattr(f, "name", type(f).__name__))
        try:
            fileno = f.fileno()  # type: ignore[union-attr]
        except (AttributeError, OSError, ValueError):  # io.BytesIO and other in-memory files
            fileno = None
        if fileno is not None:
            _check_regular(os.fstat(fileno), label)
        f.seek(0, os.SEEK_END)
        size = f.tell()
        f.seek(0)
        return _load_labelled(f, size, label)  # type: ignore[arg-type]
    label = os.fspath(f)
    _check_regular(os.stat(f), label)
    # O_NONBLOCK: should the path have been swapped for a FIFO since the check, opening it does
    # not wait for a writer; the check below then refuses it.
    fd = os.open(f, os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_NONBLOCK", 0))
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fd)
        _check_regular(st, label)
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return _load_labelled(fh, st.st_size, label)


def _check_regular(st: os.stat_result, label: str) -> None:
    """Refuse anything but a regular file (a directory raises ``IsADirectoryError``, as
    ``open`` would)."""
    mode = st.st_mode
    if stat.S_ISREG(mode):
        return
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), label)
    kind = (
        "a character device" if stat.S_ISCHR(mode) else "a block device" if stat.S_ISBLK(mode)
        else "a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
        else "not a regular file"
    )  # fmt: skip
    raise CheckpointError(
        f"{label}: {kind}, not a regular file; minnet.load reads checkpoint files only"
    )


def _load_labelled(f: IO[bytes], file_size: int, label: str) -> Any:
    try:
        return _load(f, file_size)
    except CheckpointError as exc:
        raise CheckpointError(f"{label}: {exc}") from exc.__cause__
    except Exception as exc:  # noqa: BLE001 - any failure while parsing untrusted bytes
        # zipfile, zlib, json and numpy's header parser raise many types (BadZipFile, EOFError,
        # UnicodeDecodeError, struct.error, OverflowError, RecursionError...); whatever the
        # cause, the file is unusable and the caller gets one error type.
        raise CheckpointError(
            f"{label}: corrupted or not a minnet checkpoint ({type(exc).__name__}: {exc})"
        ) from exc
