"""Atomic, verified checkpoints of an arbitrary PyTree (host side only; never inside jit).

A checkpoint is **one file**, `step_{step:012d}.ckpt`, laid out as

```
MAGIC (16 bytes) | header length (uint64, little-endian) | header (UTF-8 JSON)
| zero padding to a multiple of 64 bytes | payload | sha256 of everything before it (32 bytes)
```

The header holds the format version, the step, library versions, the user `metadata` and
one entry per array leaf: tree path (`jax.tree_util.keystr`), shape, dtype, and where its raw
C-order little-endian bytes sit in the payload (64-byte aligned). Typed PRNG keys are stored
as their `jax.random.key_data` plus the key implementation name. `host_state` (simulator
bytes) follows the arrays in the payload. Why not `.npz`: see docs/design.md ("Checkpoints").
"""

import dataclasses
import hashlib
import json
import math
import os
import pathlib
import platform
import re
from collections.abc import Callable, Collection, Mapping
from typing import IO, Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import PyTree

from .config import config_differences

# atomic_write and to_json are re-exported: other modules import them from here.
from .files import atomic_write as atomic_write, remove_stale_temps, to_json as to_json


FORMAT_VERSION = 2  # 2: the agent as typed modules (objective, prior, value function)
MAGIC = b"POMPC-EQX-CKPT\x00\x01"
_ALIGN = 64
_DIGEST_SIZE = 32
_NAME_RE = re.compile(r"^step_(\d+)\.ckpt$")
_RESUME_HINT = "`--resume` expects a run directory of `scripts/train.py` (or a step_*.ckpt file)."


class CheckpointError(Exception):
    """A checkpoint is missing, corrupt, or does not fit the run; one line: file, fault, fix."""


@dataclasses.dataclass(frozen=True)
class _LeafSpec:
    path: str
    shape: tuple[int, ...]
    dtype: str

    def describe(self) -> str:
        return f"{self.dtype}[{','.join(map(str, self.shape))}]"


def checkpoint_name(step: int) -> str:
    """The file name of the checkpoint of `step` (zero-padded, so names sort by step)."""
    return f"step_{step:012d}.ckpt"


def _is_key(x: Any) -> bool:
    return isinstance(x, jax.Array | jax.ShapeDtypeStruct) and jax.dtypes.issubdtype(
        x.dtype, jax.dtypes.prng_key
    )


def _is_array_like(x: Any) -> bool:
    return eqx.is_array(x) or isinstance(x, jax.ShapeDtypeStruct)


def _array_leaves(tree: PyTree) -> tuple[list[tuple[str, Any]], Any]:
    """(keystr path, leaf) for every array leaf, plus what unflattening needs."""
    leaves_with_path, treedef = jax.tree_util.tree_flatten_with_path(tree)
    pairs = [(jax.tree_util.keystr(p), leaf) for p, leaf in leaves_with_path]
    return [(p, leaf) for p, leaf in pairs if _is_array_like(leaf)], (pairs, treedef)


def _spec(path: str, leaf: Any) -> _LeafSpec:
    return _LeafSpec(path, tuple(int(d) for d in leaf.shape), str(leaf.dtype))


def _to_host(leaves: list[tuple[str, Any]]) -> list[tuple[dict, np.ndarray]]:
    """Header entries and host data; sharded arrays are gathered by `jax.device_get`."""
    datas = [jax.random.key_data(leaf) if _is_key(leaf) else leaf for _, leaf in leaves]
    hosts = jax.device_get(datas)
    out = []
    for (path, leaf), host in zip(leaves, hosts):
        host = np.asarray(host, order="C")  # not ascontiguousarray: it makes 0-d arrays 1-d
        if host.dtype.kind == "O":
            raise TypeError(f"Leaf {path} is an object array and cannot be checkpointed.")
        entry = {
            **dataclasses.asdict(_spec(path, leaf)),
            "key_impl": str(jax.random.key_impl(leaf)) if _is_key(leaf) else None,
            "data_shape": list(host.shape),
            "data_dtype": host.dtype.name,
            "nbytes": host.nbytes,
        }
        out.append((entry, host))
    return out


def _align(n: int) -> int:
    return -(-n // _ALIGN) * _ALIGN


def _versions() -> dict[str, str]:
    modules = {"jax": jax, "equinox": eqx, "numpy": np}
    return {"python": platform.python_version()} | {k: m.__version__ for k, m in modules.items()}


def _write_checkpoint(f: IO, header: dict, hosts: list[np.ndarray], host_state: bytes | None):
    digest = hashlib.sha256()

    def put(data: Any) -> None:
        f.write(data)
        digest.update(data)

    header_bytes = to_json(header).encode()
    start = len(MAGIC) + 8 + len(header_bytes)
    put(MAGIC + len(header_bytes).to_bytes(8, "little") + header_bytes)
    put(bytes(_align(start) - start))
    written = 0
    for entry, host in zip(header["leaves"], hosts):
        put(bytes(entry["offset"] - written))
        # Raw bytes via a uint8 view: no copy, and works for bfloat16/bool alike.
        put(host.reshape(-1).view(np.uint8))
        written = entry["offset"] + entry["nbytes"]
    if host_state is not None:
        put(bytes(header["host_state"]["offset"] - written))
        put(host_state)
    f.write(digest.digest())


def _layout(entries: list[dict], host_state: bytes | None) -> dict | None:
    """Assign 64-byte aligned payload offsets; returns the host_state entry."""
    offset = 0
    for entry in entries:
        entry["offset"] = offset
        offset = _align(offset + entry["nbytes"])
    return None if host_state is None else {"offset": offset, "nbytes": len(host_state)}


def _checkpoints(directory: pathlib.Path) -> list[tuple[int, pathlib.Path]]:
    if not directory.is_dir():
        return []
    found = ((_NAME_RE.match(p.name), p) for p in directory.iterdir())
    return sorted((int(m.group(1)), p) for m, p in found if m and p.is_file())


def _prune(directory: pathlib.Path, new_step: int, keep: int) -> None:
    # Checkpoints *newer* than the one just written (left by an abandoned run that was
    # resumed from an older step) are never deleted here: deleting data is the caller's call.
    older = [p for step, p in _checkpoints(directory) if step < new_step]
    for p in older[: max(0, len(older) - (keep - 1))]:
        p.unlink(missing_ok=True)


def save_checkpoint(
    directory: str | os.PathLike,
    step: int,
    tree: PyTree,
    *,
    metadata: Mapping[str, Any],
    host_state: bytes | None = None,
    keep: int = 2,
) -> pathlib.Path:
    """Atomically write `directory/step_{step:012d}.ckpt`, then prune old checkpoints.

    Array leaves (JAX or numpy; sharded arrays are gathered to host; typed PRNG keys via
    their key data) are saved; every other leaf (activation functions, Python scalars,
    static fields) is not, and comes from `like` at load time. A crash at any point leaves
    the previous checkpoints intact and nothing under the final name.

    **Arguments:**

    - `directory`: the checkpoint directory (created if missing).
    - `step`: the step number put in the file name and header.
    - `tree`: the PyTree to save.
    - `metadata`: JSON-serialisable dict (the run config under `"config"`, the step,
        versions, ...); returned as-is by `load_checkpoint`.
    - `host_state`: optional opaque bytes (e.g. pickled simulator states).
    - `keep`: how many checkpoints to keep, counting the new one. Older ones (smaller
        step) are deleted only after the new one is durably in place.

    **Returns:** the path of the new checkpoint.
    """
    if keep < 1:
        raise ValueError(f"keep must be >= 1, got {keep}")
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    leaves, _ = _array_leaves(tree)
    entries, hosts = zip(*_to_host(leaves)) if leaves else ((), ())
    entries = list(entries)
    host_entry = _layout(entries, host_state)
    header = {
        "format": FORMAT_VERSION,
        "step": step,
        "versions": _versions(),
        "metadata": json.loads(to_json(metadata)),
        "leaves": entries,
        "host_state": host_entry,
    }
    remove_stale_temps(directory)
    path = directory / checkpoint_name(step)
    with atomic_write(path, "wb") as f:
        _write_checkpoint(f, header, list(hosts), host_state)
    _prune(directory, step, keep)
    return path


def latest_checkpoint(directory: str | os.PathLike) -> pathlib.Path | None:
    """The checkpoint with the highest step in `directory` (need not exist), or `None`."""
    found = _checkpoints(pathlib.Path(directory))
    return found[-1][1] if found else None


def _resolve(path: str | os.PathLike) -> pathlib.Path:
    path = pathlib.Path(path)
    if not path.exists():
        raise CheckpointError(f"No checkpoint at {path}: the path does not exist. {_RESUME_HINT}")
    if path.is_dir():
        latest = latest_checkpoint(path)
        if latest is None:
            raise CheckpointError(
                f"No checkpoint (step_*.ckpt) in directory {path}. {_RESUME_HINT}"
            )
        return latest
    return path


def _corrupt(path: pathlib.Path, why: str) -> CheckpointError:
    others = [p.name for _, p in _checkpoints(path.parent) if p != path]
    advice = (
        f"Delete it to resume from an older checkpoint in the same directory ({', '.join(others)})."
        if others
        else "No other checkpoint is in its directory; the run must restart from scratch."
    )
    why = f"({why}); it was probably cut short by a crash or damaged on disk"
    return CheckpointError(f"Checkpoint {path} is corrupt or truncated {why}. {advice}")


def _parse_header(path: pathlib.Path, prefix: memoryview | bytes, size: int) -> tuple[dict, int]:
    """Header dict and payload start offset, from the first bytes of the file."""
    if len(prefix) < len(MAGIC) + 8 or bytes(prefix[: len(MAGIC)]) != MAGIC:
        raise _corrupt(path, "not a pompc-eqx checkpoint: bad magic bytes")
    header_len = int.from_bytes(prefix[len(MAGIC) : len(MAGIC) + 8], "little")
    start = len(MAGIC) + 8
    if start + header_len + _DIGEST_SIZE > size:
        raise _corrupt(path, f"header length {header_len} exceeds the file size {size}")
    try:
        header = json.loads(bytes(prefix[start : start + header_len]))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _corrupt(path, f"unreadable header: {e}") from None
    if header.get("format") != FORMAT_VERSION:
        raise CheckpointError(
            f"Checkpoint {path} has format {header.get('format')!r}; this code reads format "
            f"{FORMAT_VERSION}. Load it with the version of pompc-eqx that wrote it."
        )
    return header, _align(start + header_len)


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """Read only the header of a checkpoint file or directory (no payload read, no checksum).

    **Returns:** the header: `step`, `versions`, `metadata`, `leaves`, `host_state`.
    """
    path = _resolve(path)
    size = path.stat().st_size
    with open(path, "rb") as f:
        prefix = f.read(len(MAGIC) + 8)
        if len(prefix) == len(MAGIC) + 8 and prefix[: len(MAGIC)] == MAGIC:
            prefix += f.read(int.from_bytes(prefix[len(MAGIC) :], "little"))
    return _parse_header(path, prefix, size)[0]


def _read_verified(path: pathlib.Path) -> tuple[dict, memoryview]:
    size = path.stat().st_size
    if size < len(MAGIC) + 8 + _DIGEST_SIZE:
        raise _corrupt(path, f"only {size} bytes")
    buf = bytearray(size)
    with open(path, "rb") as f:
        read = f.readinto(buf)
    if read != size:
        raise _corrupt(path, f"read {read} of {size} bytes")
    view = memoryview(buf)
    if hashlib.sha256(view[:-_DIGEST_SIZE]).digest() != bytes(view[-_DIGEST_SIZE:]):
        raise _corrupt(path, "sha256 mismatch")
    header, start = _parse_header(path, view, size)
    return header, view[start:-_DIGEST_SIZE]


def _check_config(
    path: pathlib.Path, metadata: dict, expected: Mapping, ignore_keys: Collection[str], fill
) -> None:
    if "config" not in metadata:
        raise CheckpointError(
            f"Checkpoint {path} has no 'config' in its metadata, so the current config cannot "
            "be checked against it. Load it without expected_config, or start a new run."
        )
    diffs = config_differences(fill(metadata["config"]), fill(expected), ignore_keys)
    if diffs:
        ignored = f" (already ignored: {', '.join(sorted(ignore_keys))})" if ignore_keys else ""
        raise CheckpointError(
            f"Checkpoint {path} was written with a different config: {'; '.join(diffs)}. Resume "
            f"with the settings the run was started with, or start a new run directory{ignored}."
        )


def _structure_mismatch(saved: list[_LeafSpec], now: list[_LeafSpec]) -> str | None:
    for s, n in zip(saved, now):
        if s.path != n.path:
            return (
                f"first differing leaf: saved {s.path} {s.describe()}, now {n.path} "
                f"{n.describe()} (a module or field was added, removed or renamed)"
            )
        if s.shape != n.shape:
            return f"{s.path}: saved {s.describe()}, now {n.describe()} (model size differs)"
        if s.dtype != n.dtype:
            return f"{s.path}: saved {s.describe()}, now {n.describe()} (dtype differs)"
    if len(saved) != len(now):
        extra, side = (saved, "saved") if len(saved) > len(now) else (now, "current")
        first = extra[min(len(saved), len(now))]
        return (
            f"{len(saved)} array leaves saved, {len(now)} now; first leaf only in the {side} "
            f"tree: {first.path} {first.describe()}"
        )
    return None


def _restore_leaf(entry: dict, payload: memoryview, like_leaf: Any) -> Any:
    count = math.prod(entry["data_shape"])
    data = np.frombuffer(
        payload, dtype=jnp.dtype(entry["data_dtype"]), count=count, offset=entry["offset"]
    ).reshape(tuple(entry["data_shape"]))
    if entry["key_impl"] is not None:
        return jax.random.wrap_key_data(jnp.array(data), impl=entry["key_impl"])
    if isinstance(like_leaf, np.generic):
        return data.reshape(())[()]
    if isinstance(like_leaf, np.ndarray):
        return data.copy()
    # jnp.array copies, so the result does not alias the file buffer.
    return jnp.array(data)


def load_checkpoint(
    path: str | os.PathLike,
    like: PyTree,
    *,
    expected_config: Mapping[str, Any] | None = None,
    ignore_keys: Collection[str] = (),
    fill_config: Callable[[Mapping[str, Any]], Mapping[str, Any]] = lambda config: config,
) -> tuple[PyTree, dict[str, Any], bytes | None]:
    """Load and verify a checkpoint written by `save_checkpoint`.

    Checks, in order: the file exists; its sha256 matches (else: corrupt/truncated); the
    saved config equals `expected_config` up to `ignore_keys`; the saved array leaves have
    the same tree paths, shapes and dtypes as the array leaves of `like`. Each failure is a
    `CheckpointError` with one clear message.

    **Arguments:**

    - `path`: a checkpoint file, or a directory (its latest checkpoint is loaded).
    - `like`: a skeleton with the structure to restore: arrays or `jax.ShapeDtypeStruct`s
        (e.g. from `eqx.filter_eval_shape`) where arrays go. Non-array leaves are taken
        from it as they are.
    - `expected_config`: if given, compared with `metadata["config"]`, both passed through
        `fill_config` first (e.g. to give settings added since the checkpoint their defaults).
    - `ignore_keys`: dotted config keys a resumed run may change (e.g. `total_steps`).

    **Returns:** `(tree, metadata, host_state)`. Arrays are on the default device (the
    caller re-shards); a leaf is a numpy array where `like` has a numpy array.
    """
    path = _resolve(path)
    header, payload = _read_verified(path)
    metadata = header["metadata"]
    if expected_config is not None:
        _check_config(path, metadata, expected_config, ignore_keys, fill_config)
    like_leaves, (pairs, treedef) = _array_leaves(like)
    saved = [_LeafSpec(e["path"], tuple(e["shape"]), e["dtype"]) for e in header["leaves"]]
    mismatch = _structure_mismatch(saved, [_spec(p, leaf) for p, leaf in like_leaves])
    if mismatch is not None:
        raise CheckpointError(
            f"Checkpoint {path} does not fit the current train state: {mismatch}. Resume with "
            "the config the run was started with, or start a new run directory."
        )
    restored = {
        p: _restore_leaf(e, payload, leaf) for e, (p, leaf) in zip(header["leaves"], like_leaves)
    }
    leaves = [restored.get(p, leaf) if _is_array_like(leaf) else leaf for p, leaf in pairs]
    hs = header["host_state"]
    host_state = None if hs is None else bytes(payload[hs["offset"] : hs["offset"] + hs["nbytes"]])
    return jax.tree_util.tree_unflatten(treedef, leaves), metadata, host_state
