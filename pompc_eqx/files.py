"""Generic file helpers of the host side: atomic writes, JSON, stale temporaries, disk errors."""

import contextlib
import errno
import json
import os
import pathlib
import re
import secrets
from collections.abc import Iterator
from typing import IO, Any

import numpy as np


_TEMP_RE = re.compile(r"^\..+\.(\d+)\.[0-9a-f]+\.tmp$")
# Write failures a user fixes outside the program (space, permissions, read-only mounts).
_DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS)


class DiskError(Exception):
    """A file of the run could not be written; the message is one line saying what to do."""


def _fsync_dir(directory: pathlib.Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _disk_error(path: pathlib.Path, err: OSError) -> DiskError:
    return DiskError(
        f"cannot write {path} ({os.strerror(err.errno)}); free space or fix the permissions of "
        f"{path.parent} (or choose another --run-dir): files already written are unchanged",
    )


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Write a file so that readers see either the old or the complete new contents.

    Writes to a temporary file in the same directory, then flush + fsync, `os.replace` onto
    `path`, and fsync of the directory. If the body raises (or the process dies), `path`
    is untouched and the temporary file is removed (or left under a hidden `.<name>.*.tmp`
    name, never under `path`). A full disk or a permission error becomes a `DiskError`.

    **Arguments:**

    - `path`: the final file name.
    - `mode`: `"wb"` (binary) or `"w"` (text, UTF-8, `newline=""` as the `csv` module wants).

    **Returns:** a context manager yielding the open temporary file.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"mode must be 'wb' or 'w', got {mode!r}")
    path = pathlib.Path(path)
    # pid in the name lets a later save recognise temporaries left by a dead process.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    text_kwargs = {} if mode == "wb" else {"encoding": "utf-8", "newline": ""}
    try:
        # "x" (not mkstemp) so the file gets the usual umask permissions, not 0600.
        with open(tmp, mode.replace("w", "x"), **text_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(err, OSError) and err.errno in _DISK_ERRNOS:
            raise _disk_error(path, err) from None
        raise
    _fsync_dir(path.parent)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(directory: pathlib.Path) -> None:
    """Remove the temporaries of `atomic_write` in `directory` whose writer process is gone.

    A killed write leaves a hidden temporary (possibly GBs); a live writer's file is kept.
    """
    for p in directory.iterdir():
        m = _TEMP_RE.match(p.name)
        if m and int(m.group(1)) != os.getpid() and not _pid_alive(int(m.group(1))):
            p.unlink(missing_ok=True)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable: {obj!r}")


def to_json(obj: Any) -> str:
    """Encode metadata/config as JSON (numpy scalars and paths allowed; tuples -> lists)."""
    return json.dumps(obj, default=_json_default, sort_keys=True)


def plain(obj: Any) -> Any:
    """JSON-like copy of `obj` (tuples -> lists, numpy scalars -> Python, paths -> strings)."""
    return json.loads(to_json(obj))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Atomically write `obj` as JSON (see `to_json`)."""
    with atomic_write(path, "w") as f:
        f.write(to_json(obj))
