"""Host-side records: crash-safe CSV tables and Aim runs (never inside jit)."""

import csv
import datetime
import math
import os
import pathlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from jaxtyping import Array, Integer, Shaped

from .files import atomic_write, plain


class CsvLogError(ValueError):
    """A CSV log on disk does not match what the code expects (header, row shape, values)."""


def format_cell(value: Any) -> str:
    """Format one CSV cell so that numbers round-trip exactly.

    **Arguments:**

    - `value`: `None` (empty cell), a string, a bool, an int, a float, or a numpy/JAX
        scalar or size-1 array.

    **Returns:** the cell text. Floats use the shortest text that round-trips in their own
    precision (`repr` for float64; numpy's for float32/16, so `0.1`, not
    `0.10000000149011612`).
    """
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if hasattr(value, "__array__"):
        array = np.asarray(value)
        if array.size != 1:
            raise TypeError(f"A CSV cell needs a scalar, got an array of shape {array.shape}")
        if array.dtype.kind == "f" and array.dtype.itemsize <= 4:
            # numpy prints the shortest text that round-trips in the array's own precision.
            return str(array.reshape(())[()])
        value = array.reshape(()).item()
    if isinstance(value, bool | int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    raise TypeError(f"Cannot write a {type(value).__name__} to a CSV cell: {value!r}")


def _read_csv(path: pathlib.Path, columns: tuple[str, ...]) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows:
        return []
    header, body = tuple(rows[0]), rows[1:]
    # A table begun by an earlier version lacks the columns added since: they stay empty in its
    # rows (columns are only ever added, never renamed or dropped).
    if not set(header) <= set(columns) or len(set(header)) != len(header):
        raise CsvLogError(
            f"{path} has columns {list(header)}, but this code writes {list(columns)}. It was "
            "written by another version of the code or another kind of run: resume with that "
            "version, or move the file away to start a new table."
        )
    for number, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise CsvLogError(
                f"{path}, line {number}: {len(row)} cells, expected {len(header)}. The file "
                "was edited or damaged by hand; fix or remove that line."
            )
    return [{c: "" for c in columns} | dict(zip(header, row)) for row in body]


def _dropped_path(path: pathlib.Path) -> pathlib.Path:
    stamp = datetime.datetime.now().strftime("%Y%m%dT%H%M%S")
    candidate = path.with_name(f"{path.stem}.dropped-{stamp}.csv")
    n = 1
    while candidate.exists():
        candidate = path.with_name(f"{path.stem}.dropped-{stamp}-{n}.csv")
        n += 1
    return candidate


class CsvLog:
    """A CSV table kept in memory and rewritten atomically on every `append`.

    A crash never leaves a partial row: readers see the old or the new file. Rewriting the
    whole file is O(rows) per append, which is fine for per-chunk or per-eval tables.
    Cells are kept as the strings written to disk (see `format_cell`).
    """

    path: pathlib.Path
    columns: tuple[str, ...]

    def __init__(self, path: str | os.PathLike, columns: Sequence[str]):
        """**Arguments:**

        - `path`: the CSV file. If it exists (a resumed run), its rows are loaded and its
            header must be among `columns` (the others are left empty in those rows and the
            file gets the full header on the next append); otherwise it is created with just
            the header.
        - `columns`: the column names, in order.
        """
        self.path = pathlib.Path(path)
        self.columns = tuple(columns)
        if len(set(self.columns)) != len(self.columns):
            raise ValueError(f"Duplicate column names in {list(self.columns)}")
        if self.path.exists():
            self._rows = _read_csv(self.path, self.columns)
        else:
            self._rows = []
            self._write(self.path, self._rows)

    @property
    def rows(self) -> list[dict[str, str]]:
        """A copy of all rows, as `{column: cell text}`."""
        return [dict(row) for row in self._rows]

    def __len__(self) -> int:
        return len(self._rows)

    def _write(self, path: pathlib.Path, rows: list[dict[str, str]]) -> None:
        with atomic_write(path, "w") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(self.columns)
            writer.writerows([row[c] for c in self.columns] for row in rows)

    def _format_row(self, row: Mapping[str, Any]) -> dict[str, str]:
        unknown = set(row) - set(self.columns)
        if unknown:
            raise ValueError(f"Unknown columns {sorted(unknown)} for {self.path}")
        return {c: format_cell(row.get(c)) for c in self.columns}

    def append(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Append rows and rewrite the file atomically.

        **Arguments:**

        - `rows`: mappings from column name to value; missing columns are left empty,
            unknown ones are an error. If the write fails, neither the file nor the
            in-memory table changes.
        """
        new_rows = self._rows + [self._format_row(row) for row in rows]
        self._write(self.path, new_rows)
        self._rows = new_rows

    def drop_after(self, column: str, value: float | int) -> list[dict[str, str]]:
        """Remove the rows whose numeric `column` is greater than `value`.

        Used when a run resumes from a checkpoint older than the last logged row. The
        removed rows are first saved to `<stem>.dropped-<timestamp>.csv` next to the table,
        so nothing once written is lost. Empty cells are kept.

        **Arguments:**

        - `column`: a numeric column, e.g. the agent step.
        - `value`: rows with `column > value` are dropped.

        **Returns:** the dropped rows (empty list if none; then no file is written).
        """
        if column not in self.columns:
            raise ValueError(f"{column!r} is not a column of {self.path}: {list(self.columns)}")
        try:
            is_late = [row[column] != "" and float(row[column]) > value for row in self._rows]
        except ValueError as e:
            raise CsvLogError(f"{self.path}: column {column!r} is not numeric ({e})") from None
        dropped = [row for row, late in zip(self._rows, is_late) if late]
        if not dropped:
            return []
        self._write(_dropped_path(self.path), dropped)
        kept = [row for row, late in zip(self._rows, is_late) if not late]
        self._write(self.path, kept)
        self._rows = kept
        return [dict(row) for row in dropped]


def _index_aim_run(repo: Any, run_hash: str) -> bool:
    import aimrocks.errors
    from aim.sdk.index_manager import RepoIndexManager

    # A fresh manager (not `get_index_manager`, which caches it with the repo forever); its
    # constructor starts a watchdog thread even if never started, which `stop` ends.
    manager = RepoIndexManager(repo)
    try:
        manager.index(run_hash)
    except aimrocks.errors.RocksIOError:
        # The index is held open by a running `aim up`, which indexes new runs itself.
        return False
    finally:
        manager.stop()
    return True


def index_aim_run(repo: str | os.PathLike, run_hash: str) -> bool:
    """Make a closed Aim run visible to `aim.Repo` queries without `aim up`.

    Aim 3.29 writes each run to its own chunk; `Repo.iter_runs()`, `query_metrics()` and
    `Run(hash, read_only=True)` read only the repo's index, which `aim up` (or
    `aim storage reindex`) fills. This indexes one run, in about 10 ms.

    **Arguments:**

    - `repo`: the directory holding `.aim`.
    - `run_hash`: the run to index.

    **Returns:** `True` if indexed; `False` if the index is locked by a running `aim up`
    (which indexes the run itself).
    """
    import aim

    return _index_aim_run(aim.Repo.from_path(str(repo)), run_hash)


class AimTracker:
    """One Aim run, with one curve per seed it is given (`loggers.AimLogger` keeps one run
    per seed of a training command).

    System-metric tracking and terminal-log capture are off (speed; no threads are left
    after `close`). Values are tracked with `context={"seed": s, ...}`.
    """

    run_hash: str
    num_nonfinite: int

    def __init__(
        self,
        repo: str | os.PathLike,
        experiment: str,
        run_name: str,
        hparams: Mapping[str, Any],
        run_hash: str | None = None,
    ):
        """**Arguments:**

        - `repo`: the directory that holds (or will hold) `.aim`; created if needed.
        - `experiment`: the Aim experiment name.
        - `run_name`: a human-readable run name.
        - `hparams`: JSON-like config dict, stored as `run["hparams"]`.
        - `run_hash`: resume this run (the hash from `.run_hash` of an earlier
            invocation); new points are appended to its sequences.
        """
        # aim takes about a second to import: only pay for it when a tracker is made.
        import aim
        from aim.sdk.errors import MissingRunError

        self._repo_path = pathlib.Path(repo)
        self._repo_path.mkdir(parents=True, exist_ok=True)
        try:
            self._run = aim.Run(
                run_hash,
                repo=str(self._repo_path),
                experiment=experiment,
                system_tracking_interval=None,
                log_system_params=False,
                capture_terminal_logs=False,
            )
        except MissingRunError:
            raise ValueError(
                f"Aim run {run_hash} is not in the repo {self._repo_path}. Point the tracker at "
                "the repo the run was started with, or start a new Aim run (run_hash=None)."
            ) from None
        self._run.name = run_name
        self._run["hparams"] = plain(hparams)
        self.run_hash = self._run.hash
        self.num_nonfinite = 0

    def track(
        self,
        metrics: Mapping[str, Shaped[np.ndarray | Array, " seed"]],
        *,
        step: int,
        seeds: Sequence[int] | Integer[np.ndarray, " seed"],
        context: Mapping[str, str] | None = None,
        epoch: int | None = None,
    ) -> int:
        """Track one value per seed for each metric.

        **Arguments:**

        - `metrics`: name -> array with one value per seed (host or device arrays).
        - `step`: the x-axis value (agent steps).
        - `seeds`: the seed of each entry, used as `context["seed"]`.
        - `context`: extra context, e.g. `{"subset": "eval"}`.
        - `epoch`: optional Aim epoch.

        **Returns:** how many non-finite values were skipped (also summed in
        `num_nonfinite`).
        """
        if self._run is None:
            raise RuntimeError("AimTracker.track called after close()")
        skipped = 0
        for name, values in metrics.items():
            values = np.asarray(values)
            if values.shape != (len(seeds),):
                raise ValueError(
                    f"Metric {name!r} has shape {values.shape}; expected ({len(seeds)},): one "
                    "value per seed"
                )
            for seed, value in zip(seeds, values.tolist()):
                if not math.isfinite(value):
                    skipped += 1
                    continue
                self._run.track(
                    float(value),
                    name=name,
                    step=step,
                    epoch=epoch,
                    context={**(context or {}), "seed": int(seed)},
                )
        self.num_nonfinite += skipped
        return skipped

    def close(self, index: bool = True) -> None:
        """Finish the run (idempotent).

        **Arguments:**

        - `index`: also index the run so that `aim.Repo` queries see it at once (see
            `index_aim_run`); `aim up` would do it otherwise.
        """
        if self._run is None:
            return
        run, self._run = self._run, None
        repo = run.repo
        run.close()
        if index:
            _index_aim_run(repo, self.run_hash)

    def __enter__(self) -> "AimTracker":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
