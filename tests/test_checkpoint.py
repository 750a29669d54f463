"""minnet.save / minnet.load: exact round trips, atomic writes, and every bad file refused."""

from __future__ import annotations

import io
import math
import os
import pickle
import struct
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import minnet
from minnet.nn import Linear, MSELoss, ReLU, Sequential
from minnet.optim import Adam


def assert_identical(a: Any, b: Any, where: str = "obj") -> None:
    """Same types all the way down, arrays bit-identical with dtype, shape and memory order."""
    assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}"
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, f"{where}: {a.dtype}{a.shape}"
        assert a.flags.f_contiguous == b.flags.f_contiguous or a.ndim < 2, where
        assert a.tobytes("A") == b.tobytes("A"), f"{where}: values differ"
    elif isinstance(a, np.generic):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), where
    elif isinstance(a, float):
        assert struct.pack("<d", a) == struct.pack("<d", b), f"{where}: {a!r} != {b!r}"
    elif isinstance(a, dict):
        assert list(a) == list(b), f"{where}: keys {list(a)} != {list(b)}"
        for k in a:
            assert type(k) is type(next(x for x in b if x == k)), f"{where}: key type of {k!r}"
            assert_identical(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_identical(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def trained_state(steps: int = 3, amsgrad: bool = True) -> dict[str, Any]:
    """A real training checkpoint: model, optimizer (int keys, tuple betas), step, RNG state."""
    rng = np.random.default_rng(0)
    model = Sequential(Linear(6, 5, rng=rng), ReLU(), Linear(5, 2, dtype=np.float64, rng=rng))
    opt = Adam(model.parameters(), lr=1e-2, amsgrad=amsgrad)
    loss_fn = MSELoss()
    for _ in range(steps):
        loss_fn(model(rng.standard_normal((4, 6))), rng.standard_normal((4, 2)))
        opt.zero_grad()
        model.backward(loss_fn.backward())
        opt.step()
    return {
        "model": model.state_dict(),
        "optimizer": opt.state_dict(),
        "step": steps,
        "rng": rng.bit_generator.state,
    }


@pytest.fixture
def ckpt(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    obj = trained_state()
    path = tmp_path / "ckpt.npz"
    minnet.save(obj, path)
    return path, obj


def test_training_state_round_trips_with_types(ckpt: tuple[Path, dict[str, Any]]) -> None:
    path, obj = ckpt
    back = minnet.load(path)
    assert_identical(obj, back)
    assert list(back["optimizer"]["state"]) == [0, 1, 2, 3]  # int keys stay int
    assert back["optimizer"]["param_groups"][0]["betas"] == (0.9, 0.999)
    assert back["rng"]["state"]["state"] > 2**64  # 128-bit PCG64 state survives
    rng = np.random.default_rng()
    rng.bit_generator.state = back["rng"]
    assert back["model"]["0.weight"].flags.writeable


SPECIAL_VALUES = {
    "floats": [math.nan, math.inf, -math.inf, -0.0, 5e-324, 1.7976931348623157e308, 0.1]
    + [struct.unpack(">d", bytes.fromhex("fff8000000000123"))[0]],  # -NaN with a payload
    "ints": [0, -1, 2**63, -(2**200), 10**100],
    "misc": (None, True, False, "", "ünïcode \u2603 \ud800", ("nested", ("tuple",)), [], {}),
    7: "int key",
    -3: {"": "empty-string key"},
    "arrays": [
        np.arange(12, dtype=">i4").reshape(3, 4),  # big-endian
        np.asfortranarray(np.arange(6, dtype=np.float32).reshape(2, 3)),
        np.arange(20.0)[::3],  # non-contiguous view
        np.zeros((0, 5)),
        np.array(3.5),
        np.array([np.nan, -0.0, np.inf], dtype=np.float16),
        np.array([1 + 2j, np.nan * 1j], dtype=np.complex64),
        np.array([True, False]),
        np.array([2**64 - 1], dtype=np.uint64),
        np.array(["a", "bcd"]),
        np.array([b"x", b"yz"]),
    ],
    "scalars": [np.float32(1.5), np.int8(-3), np.bool_(True), np.float64(math.nan)],
}


def test_special_values_round_trip_exactly(tmp_path: Path) -> None:
    path = tmp_path / "special.npz"
    minnet.save(SPECIAL_VALUES, path)
    back = minnet.load(path)
    assert_identical(SPECIAL_VALUES, back)
    assert type(back["scalars"][0]) is np.float32


def test_same_object_gives_same_bytes_and_np_load_reads_it(tmp_path: Path) -> None:
    obj = trained_state()
    minnet.save(obj, tmp_path / "a.npz")
    minnet.save(obj, tmp_path / "b.npz")
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    with np.load(tmp_path / "a.npz", allow_pickle=False) as npz:
        assert "__minnet__" in npz.files
        assert any(np.array_equal(npz[k], obj["model"]["0.weight"]) for k in npz.files)


CYCLE: dict[str, Any] = {"a": [1]}
CYCLE["self"] = CYCLE


@pytest.mark.parametrize(
    "obj, fragment",
    [
        ({"a": {1, 2}}, "cannot store set at obj['a']"),
        ({"opt": {"state": {0: {"m": np.array([object()])}}}}, "obj['opt']['state'][0]['m'] is"),
        ([np.zeros(2, dtype=[("x", "f4")])], "obj[0] is an array of dtype"),
        ({True: 1}, "dict keys must be str or int, got bool"),
        ({1.5: 1}, "dict keys must be str or int, got float"),
        ({"f": print}, "cannot store builtin_function_or_method at obj['f']"),
        (np.ma.masked_array([1.0]), "cannot store MaskedArray at obj"),
        (np.datetime64("2020-01-01"), "array of dtype datetime64"),
        (CYCLE, "obj['self'] is a container that holds itself"),
    ],
)
def test_unsupported_objects_raise_type_error_and_write_nothing(
    tmp_path: Path, obj: Any, fragment: str
) -> None:
    path = tmp_path / "x.npz"
    with pytest.raises(TypeError) as info:
        minnet.save(obj, path)
    assert fragment in str(info.value)
    assert list(tmp_path.iterdir()) == []


def test_failed_save_keeps_old_checkpoint_and_leaves_no_temp_file(
    ckpt: tuple[Path, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    path, obj = ckpt
    before = path.read_bytes()
    calls = []

    def failing_fsync(fd: int) -> None:
        calls.append(fd)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match="No space left"):
        minnet.save(trained_state(steps=5), path)
    assert calls, "save must fsync before renaming"
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]
    assert_identical(minnet.load(path), obj)


def test_save_replaces_atomically_and_honours_umask(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.npz"
    minnet.save({"v": 1}, path)
    minnet.save({"v": 2}, str(path))
    assert minnet.load(path) == {"v": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt.npz"]
    old = os.umask(0o027)
    try:
        minnet.save({"v": 3}, tmp_path / "new.npz")  # a new file: the umask decides
        minnet.save({"v": 4}, path)  # over an existing file: its mode is kept
    finally:
        os.umask(old)
    assert (tmp_path / "new.npz").stat().st_mode & 0o777 == 0o640
    assert path.stat().st_mode & 0o777 == 0o666 & ~old


# -- bad files ----------------------------------------------------------------------------------


def rewrite_zip(src: Path, dst: Path, edit: Any, compress: int = zipfile.ZIP_STORED) -> None:
    """Copy a zip member by member through ``edit(name, data) -> {name: data}`` (valid CRCs)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", compress) as zout:
        for info in zin.infolist():
            for name, data in edit(info.filename, zin.read(info)).items():
                zout.writestr(name, data)


def flip_first_weight(name: str, data: bytes) -> dict[str, bytes]:
    if name == "a0.npy":
        data = data[:-1] + bytes([data[-1] ^ 1])
    return {name: data}


def make_bad_files(tmp_path: Path, path: Path) -> dict[str, tuple[Path, str]]:
    raw = path.read_bytes()
    files: dict[str, tuple[Path, str]] = {}

    def add(label: str, data: bytes | None, fragment: str) -> Path:
        p = tmp_path / f"{label}.npz"
        if data is not None:
            p.write_bytes(data)
        files[label] = (p, fragment)
        return p

    add("empty", b"", "not an .npz (zip) file (file is empty)")
    add("text", b"step,loss\n1,0.5\n", "not an .npz (zip) file")
    add("truncated", raw[: len(raw) // 2], "truncated or corrupted")
    data_offset = raw.index(b"\x93NUMPY") + 200
    add(
        "bit_flip",
        raw[:data_offset] + bytes([raw[data_offset] ^ 0x10]) + raw[data_offset + 1 :],
        "Bad CRC-32",
    )
    np.savez(add("plain_npz", None, "no __minnet__.npy member"), w=np.zeros(3))
    rewrite_zip(path, add("tampered", None, "SHA-256 checksum does not match"), flip_first_weight)
    rewrite_zip(
        path,
        add("extra_member", None, "unexpected ['evil.npy']"),
        lambda n, d: {n: d, **({"evil.npy": d} if n == "a0.npy" else {})},
    )
    rewrite_zip(
        path,
        add("compressed", None, "compressed or encrypted"),
        lambda n, d: {n: d},
        compress=zipfile.ZIP_DEFLATED,
    )
    for label, old, new in [
        ("future_version", b'"version": 1', b'"version": 2'),
        ("other_format", b'"format": "minnet-checkpoint"', b'"format": "other-checkpoint"'),
    ]:
        fragment = "format version 2; this minnet reads version 1 only"
        if label == "other_format":
            fragment = "the manifest names another format"

        def patch(n: str, d: bytes, old: bytes = old, new: bytes = new) -> dict[str, bytes]:
            if n != "__minnet__.npy":
                return {n: d}
            text = np.lib.format.read_array(io.BytesIO(d)).tobytes()
            buf = io.BytesIO()
            np.save(buf, np.frombuffer(text.replace(old, new), np.uint8))
            return {n: buf.getvalue()}

        rewrite_zip(path, add(label, None, fragment), patch)
    return files


BAD_FILES = [
    "empty",
    "text",
    "truncated",
    "bit_flip",
    "plain_npz",
    "tampered",
    "extra_member",
    "compressed",
    "future_version",
    "other_format",
]


@pytest.mark.parametrize("label", BAD_FILES)
def test_bad_file_raises_checkpoint_error_saying_what_is_wrong(
    tmp_path: Path, ckpt: tuple[Path, dict[str, Any]], label: str
) -> None:
    bad, fragment = make_bad_files(tmp_path, ckpt[0])[label]
    with pytest.raises(minnet.CheckpointError) as info:
        minnet.load(bad)
    assert isinstance(info.value, ValueError)
    assert fragment in str(info.value)
    assert str(bad) in str(info.value)


def test_missing_file_is_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        minnet.load(tmp_path / "nope.npz")


class Payload:
    """Unpickling this creates a directory: the visible side effect of running code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.mkdir, (str(self.marker),))


def object_npy(marker: Path) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.array([Payload(marker), 1], dtype=object), allow_pickle=True)
    return buf.getvalue()


@pytest.mark.parametrize("member", ["a0.npy", "__minnet__.npy"])
def test_pickled_object_array_is_refused_without_unpickling(
    tmp_path: Path, ckpt: tuple[Path, dict[str, Any]], member: str
) -> None:
    marker = tmp_path / "code_was_executed"
    evil = tmp_path / "evil.npz"
    rewrite_zip(ckpt[0], evil, lambda n, d: {n: object_npy(marker) if n == member else d})
    with pytest.raises(minnet.CheckpointError, match="object array; loading it would unpickle"):
        minnet.load(evil)
    assert not marker.exists()
    # The payload is live: NumPy with allow_pickle=True does run it.
    with np.load(evil, allow_pickle=True) as npz:
        npz[member[:-4]]
    assert marker.is_dir()


def test_pickle_file_is_not_a_checkpoint(tmp_path: Path) -> None:
    marker = tmp_path / "code_was_executed"
    path = tmp_path / "torch_style.pt"
    path.write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(minnet.CheckpointError, match="not an .npz"):
        minnet.load(path)
    assert not marker.exists()


# -- fuzz ---------------------------------------------------------------------------------------


def load_or_error(blob: bytes, expected: Any) -> bool:
    """Load ``blob``: either exactly ``expected`` (True) or a CheckpointError (False)."""
    try:
        back = minnet.load(io.BytesIO(blob))
    except minnet.CheckpointError:
        return False
    assert_identical(expected, back)
    return True


def test_every_truncation_is_refused(tmp_path: Path, ckpt: tuple[Path, dict[str, Any]]) -> None:
    path, obj = ckpt
    raw = path.read_bytes()
    for cut in range(len(raw)):  # in memory: the same parser, without a disk write per case
        with pytest.raises(minnet.CheckpointError):
            minnet.load(io.BytesIO(raw[:cut]))


def test_bit_flips_load_exactly_or_raise(tmp_path: Path) -> None:
    # A small checkpoint, so that every byte gets one flipped bit and several random bursts.
    obj = trained_state(steps=2)
    obj["model"] = {k: v[:2] for k, v in obj["model"].items()}
    del obj["optimizer"]["state"][0], obj["optimizer"]["state"][2]
    path = tmp_path / "small.npz"
    minnet.save(obj, path)
    raw = np.frombuffer(path.read_bytes(), dtype=np.uint8)
    rng = np.random.default_rng(1234)
    loaded = refused = 0
    for pos in range(len(raw)):
        flipped = raw.copy()
        flipped[pos] ^= 1 << int(rng.integers(8))
        if load_or_error(flipped.tobytes(), obj):
            loaded += 1
        else:
            refused += 1
    for _ in range(300):
        flipped = raw.copy()
        pos = rng.integers(len(raw), size=int(rng.integers(2, 9)))
        flipped[pos] = rng.integers(256, size=pos.size)
        load_or_error(flipped.tobytes(), obj)
    # Flips in zip fields nobody reads (timestamps, "version made by") load fine; the rest fail.
    assert refused > loaded > 0


def test_load_accepts_a_binary_file_object(ckpt: tuple[Path, dict[str, Any]]) -> None:
    path, obj = ckpt
    with open(path, "rb") as f:
        assert_identical(obj, minnet.load(f))
    with pytest.raises(minnet.CheckpointError, match=r"^BytesIO: .*not an \.npz"):
        minnet.load(io.BytesIO(b"garbage"))


def test_checkpoint_into_another_architecture_names_keys_and_shapes(
    ckpt: tuple[Path, dict[str, Any]],
) -> None:
    path, obj = ckpt
    other = Sequential(Linear(6, 7), ReLU(), Linear(7, 2, dtype=np.float64), ReLU(), Linear(2, 1))
    before = other.state_dict()
    with pytest.raises(ValueError) as info:
        other.load_state_dict(minnet.load(path)["model"])
    msg = str(info.value)
    assert 'Missing key(s) in state_dict: "4.weight", "4.bias"' in msg
    assert "size mismatch for 0.weight" in msg and "(5, 6)" in msg and "(7, 6)" in msg
    assert "size mismatch for 2.weight" in msg and "(2, 5)" in msg and "(2, 7)" in msg
    assert_identical(before, other.state_dict())


def test_saving_into_a_missing_directory_names_the_path(tmp_path: Path) -> None:
    target = tmp_path / "no_such_dir" / "ckpt.npz"
    with pytest.raises(FileNotFoundError, match="no_such_dir' does not exist") as exc:
        minnet.save({"a": 1}, target)
    assert exc.value.filename == str(target) and ".tmp" not in str(exc.value)
