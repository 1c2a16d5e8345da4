"""Read the arrays of a checkpoint, whatever wrote it, as ``{path: numpy array}``.

Formats: ``.npz``/``.npy``; ``.safetensors`` (the ``safetensors`` package if installed, else
its header format read here: 8-byte little-endian header length, a JSON header, raw
tensors); a Flax/Orbax checkpoint directory (needs ``orbax-checkpoint``); a pickled pytree
(``.pkl``/``.pickle``: unpickling runs code, so only for files you trust); a msgpack pytree
(``.msgpack``, Flax's ``serialization.to_bytes``: ``msgpack`` if installed, else the
subset of the format Flax writes, read here); a ``dbm`` results directory, whose
``weights`` array ``(point, replica, snapshot, row, col)`` becomes one matrix per
``weights/p<P>/r<R>/s<S>``.

Nested containers are flattened to ``/``-joined key paths. Every failure is a
:class:`WeightsError` whose message names the file and says why in one line.
"""

from __future__ import annotations

import json
import pickle
import struct
from collections.abc import Mapping
from pathlib import Path

import numpy as np

__all__ = ["WeightsError", "load_arrays", "results_steps", "ORBAX_MARKERS"]

#: files whose presence marks an Orbax checkpoint directory
ORBAX_MARKERS = ("_CHECKPOINT_METADATA", "_METADATA", "manifest.ocdbt", "checkpoint", "commit_success.txt")


class WeightsError(ValueError):
    """A checkpoint that cannot be read: the message names the file and the reason."""


def load_arrays(path) -> dict[str, np.ndarray]:
    """All arrays of the checkpoint at ``path``, flattened to ``{key path: array}``."""
    p = Path(path)
    if not p.exists():
        raise WeightsError(f"{p}: no such file or directory")
    try:
        if p.is_dir():
            return _load_dir(p)
        suffix = p.suffix.lower()
        reader = _READERS.get(suffix)
        if reader is None:
            reader = _sniff(p)
        return reader(p)
    except WeightsError:
        raise
    except MemoryError:
        raise WeightsError(f"{p}: too large to load into memory") from None
    except Exception as err:  # a corrupt file may fail anywhere in a third-party reader
        raise WeightsError(f"{p}: unreadable ({type(err).__name__}: {_short(err)})") from None


def _short(err) -> str:
    text = str(err).splitlines()[0] if str(err) else ""
    return text[:120]


def _sniff(p: Path):
    with open(p, "rb") as f:
        head = f.read(16)
    if head.startswith(b"PK"):
        return _load_numpy
    if head.startswith(b"\x93NUMPY"):
        return _load_numpy
    if head[:1] in (b"\x80",):
        return _load_pickle
    if len(head) >= 9 and head[8:9] == b"{":
        return _load_safetensors
    raise WeightsError(f"{p}: unknown format (expected .npz, .npy, .safetensors, .msgpack, .pkl, or a directory)")


# ------------------------------------------------------------------------- flatten
def _flatten(tree, prefix: str, out: dict) -> None:
    if isinstance(tree, Mapping) and tree.get("__msgpack_chunked_array__"):
        # Flax splits leaves over 1 GiB into flat chunks {"0": …, "1": …}
        chunks = tree["chunks"]
        flat = np.concatenate([np.ravel(chunks[k]) for k in sorted(chunks, key=int)])
        out[prefix or "array"] = flat.reshape(tuple(tree["shape"]))
    elif isinstance(tree, Mapping):
        for k, v in tree.items():
            _flatten(v, f"{prefix}/{k}" if prefix else str(k), out)
    elif isinstance(tree, (list, tuple)):
        for i, v in enumerate(tree):
            _flatten(v, f"{prefix}/{i}" if prefix else str(i), out)
    elif hasattr(tree, "__array__") or isinstance(tree, np.ndarray):
        out[prefix or "array"] = np.asarray(tree)
    elif hasattr(tree, "__dict__") and not isinstance(tree, type):
        _flatten(vars(tree), prefix, out)  # dataclass-like states (e.g. a TrainState)
    # scalars, strings, None: not weights


def _flat(tree) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    _flatten(tree, "", out)
    return out


# ------------------------------------------------------------------------- formats
def _load_numpy(p: Path) -> dict[str, np.ndarray]:
    obj = np.load(p, allow_pickle=False)
    if isinstance(obj, np.ndarray):
        return {p.stem: obj}
    with obj:
        return {k: obj[k] for k in obj.files}


def _load_pickle(p: Path) -> dict[str, np.ndarray]:
    with open(p, "rb") as f:
        return _flat(pickle.load(f))


_ST_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2",
              "I8": "i1", "U8": "u1", "U16": "<u2", "U32": "<u4", "U64": "<u8", "BOOL": "?"}


def _load_safetensors(p: Path) -> dict[str, np.ndarray]:
    try:
        from safetensors.numpy import load_file
    except ImportError:
        return _read_safetensors(p)
    try:
        return load_file(str(p))
    except Exception:  # bfloat16 (no numpy dtype) or a corrupt file: the reader here says which
        return _read_safetensors(p)


def _read_safetensors(p: Path) -> dict[str, np.ndarray]:
    data = p.read_bytes()
    if len(data) < 8:
        raise WeightsError(f"{p}: truncated safetensors file (no header length)")
    (hlen,) = struct.unpack("<Q", data[:8])
    if hlen > len(data) - 8:
        raise WeightsError(f"{p}: corrupt safetensors header (length {hlen} > file size)")
    try:
        header = json.loads(data[8:8 + hlen])
    except ValueError:
        raise WeightsError(f"{p}: corrupt safetensors header (not JSON)") from None
    if not isinstance(header, dict):
        raise WeightsError(f"{p}: corrupt safetensors header (not a JSON object)")
    body = memoryview(data)[8 + hlen:]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype, shape, (a, b) = info["dtype"], tuple(info["shape"]), info["data_offsets"]
        if not 0 <= a <= b <= len(body):
            raise WeightsError(f"{p}: tensor {name!r} lies outside the file")
        raw = np.frombuffer(body[a:b], dtype="<u2" if dtype == "BF16" else _ST_DTYPES[dtype])
        if dtype == "BF16":  # bfloat16 = the top half of a float32
            raw = (raw.astype(np.uint32) << 16).view(np.float32)
        out[name] = raw.reshape(shape)
    return out


def _load_msgpack(p: Path) -> dict[str, np.ndarray]:
    data = p.read_bytes()
    try:
        import msgpack
    except ImportError:
        tree = _MsgpackReader(data).read_all()
    else:
        tree = msgpack.unpackb(data, ext_hook=lambda code, b: _ext(code, b, msgpack.unpackb), raw=False,
                               strict_map_key=False)
    return _flat(tree)


def _ext(code: int, payload: bytes, unpack):
    # Flax's extension types: 1 ndarray (shape, dtype name, bytes), 2 complex, 3 numpy scalar
    if code == 1:
        shape, dtype, buf = unpack(payload)
        return np.frombuffer(buf, dtype=np.dtype(dtype)).reshape(shape)
    if code == 3:
        shape, dtype, buf = unpack(payload)
        return np.frombuffer(buf, dtype=np.dtype(dtype)).reshape(shape)
    if code == 2:
        re_, im = unpack(payload)
        return complex(re_, im)
    raise ValueError(f"unknown msgpack extension type {code}")


class _MsgpackReader:
    """The msgpack subset Flax writes (maps, arrays, strings, bytes, numbers, ext)."""

    def __init__(self, data: bytes):
        self.d, self.i = data, 0

    def read_all(self):
        obj = self.read()
        if self.i != len(self.d):
            raise ValueError("trailing bytes after the msgpack object")
        return obj

    def take(self, n: int) -> bytes:
        if self.i + n > len(self.d):
            raise ValueError("truncated msgpack data")
        b = self.d[self.i:self.i + n]
        self.i += n
        return b

    def num(self, fmt: str):
        return struct.unpack(">" + fmt, self.take(struct.calcsize(fmt)))[0]

    def read(self):
        t = self.take(1)[0]
        if t <= 0x7F:
            return t
        if t >= 0xE0:
            return t - 0x100
        if 0x80 <= t <= 0x8F:
            return self.map(t & 0x0F)
        if 0x90 <= t <= 0x9F:
            return [self.read() for _ in range(t & 0x0F)]
        if 0xA0 <= t <= 0xBF:
            return self.take(t & 0x1F).decode()
        simple = {0xC0: None, 0xC2: False, 0xC3: True}
        if t in simple:
            return simple[t]
        sized = {0xC4: ("B", "bin"), 0xC5: ("H", "bin"), 0xC6: ("I", "bin"),
                 0xD9: ("B", "str"), 0xDA: ("H", "str"), 0xDB: ("I", "str"),
                 0xDC: ("H", "arr"), 0xDD: ("I", "arr"), 0xDE: ("H", "map"), 0xDF: ("I", "map"),
                 0xC7: ("B", "ext"), 0xC8: ("H", "ext"), 0xC9: ("I", "ext")}
        if t in sized:
            fmt, kind = sized[t]
            n = self.num(fmt)
            if kind == "bin":
                return self.take(n)
            if kind == "str":
                return self.take(n).decode()
            if kind == "arr":
                return [self.read() for _ in range(n)]
            if kind == "map":
                return self.map(n)
            code = struct.unpack(">b", self.take(1))[0]
            return _ext(code, self.take(n), lambda b: _MsgpackReader(b).read_all())
        fixext = {0xD4: 1, 0xD5: 2, 0xD6: 4, 0xD7: 8, 0xD8: 16}
        if t in fixext:
            code = struct.unpack(">b", self.take(1))[0]
            return _ext(code, self.take(fixext[t]), lambda b: _MsgpackReader(b).read_all())
        nums = {0xCA: "f", 0xCB: "d", 0xCC: "B", 0xCD: "H", 0xCE: "I", 0xCF: "Q",
                0xD0: "b", 0xD1: "h", 0xD2: "i", 0xD3: "q"}
        if t in nums:
            return self.num(nums[t])
        raise ValueError(f"unsupported msgpack type byte 0x{t:02x}")

    def map(self, n: int) -> dict:
        out = {}
        for _ in range(n):
            k = self.read()
            out[k] = self.read()
        return out


def _load_orbax(p: Path) -> dict[str, np.ndarray]:
    try:
        import orbax.checkpoint as ocp
    except ImportError:
        raise WeightsError(f"{p}: an Orbax checkpoint directory; reading it needs orbax-checkpoint "
                           "(pip install orbax-checkpoint)") from None
    return _flat(ocp.PyTreeCheckpointer().restore(str(p.resolve())))


def _load_dir(p: Path) -> dict[str, np.ndarray]:
    if (p / "manifest.json").is_file():
        return _load_results(p)
    if any((p / name).exists() for name in ORBAX_MARKERS) or any(p.glob("*.orbax-checkpoint*")):
        return _load_orbax(p)
    raise WeightsError(f"{p}: a directory that is neither a dbm results directory (manifest.json) "
                       "nor an Orbax checkpoint")


def _load_results(p: Path) -> dict[str, np.ndarray]:
    from dysonbm import io

    try:
        res = io.load(p)
    except (ValueError, OSError) as err:
        raise WeightsError(_short(err) or f"{p}: unreadable results directory") from None
    if "weights" not in res:
        raise WeightsError(f"{p}: a dbm results directory without weights (run with record.weights = true)")
    w = res["weights"]
    axes = res.axes["weights"]
    lead = w.shape[:-2]
    names = [a[0] for a in axes[:-2]]  # point, replica, snapshot -> p, r, s
    out = {}
    for idx in np.ndindex(*lead):
        key = "weights/" + "/".join(f"{a}{i}" for a, i in zip(names, idx))
        out[key] = w[idx]
    return out


def results_steps(path) -> tuple[np.ndarray, dict[str, np.ndarray]] | None:
    """For a dbm results directory: the step of each snapshot and the hyperparameters per grid
    point ``{name: (point,)}``; None for anything else."""
    p = Path(path)
    if not (p.is_dir() and (p / "manifest.json").is_file()):
        return None
    from dysonbm import io

    res = io.load(p)
    return res.steps, {name: res.hp(name) for name in res.points[0]}


_READERS = {".npz": _load_numpy, ".npy": _load_numpy, ".safetensors": _load_safetensors,
            ".pkl": _load_pickle, ".pickle": _load_pickle, ".msgpack": _load_msgpack}
