"""The run directory: where it is, who owns it (a lock), what is in it, how to start over."""

import datetime
import fcntl
import json
import os
import pathlib
import shutil
from typing import IO

from .checkpoint import CheckpointError, latest_checkpoint
from .config import ConfigError, TrainConfig
from .files import DiskError


# What a run writes; `--overwrite` removes exactly these (other files are left alone), and a
# sweep's sub-run directories (listed in its sweep.json).
RUN_FILES = ("config.json", "sweep.json", "eval.csv", "train.csv", "checkpoints", ".aim")
MANIFESTS = ("config.json", "sweep.json")
"""What a run (config.json) or a sweep of runs (sweep.json) records about itself."""


def default_run_dir(cfg: TrainConfig) -> pathlib.Path:
    """`runs/<task>/<preset>-<time>`."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return pathlib.Path("runs") / cfg.task.replace("/", "-") / f"{cfg.preset}-{stamp}"


def lock(run_dir: pathlib.Path) -> IO:
    """Take `run_dir/.lock` for this process; the OS releases it when the process ends.

    **Returns:** the open lock file (keep it open while the run owns the directory).
    """
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        handle = open(run_dir / ".lock", "a+")
    except OSError as err:
        raise DiskError(
            f"cannot create {run_dir} ({os.strerror(err.errno or 0)}); choose another --run-dir"
        ) from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        owner = handle.read().strip() or "?"
        handle.close()
        raise ConfigError(
            f"{run_dir} is in use by another training process (pid {owner}); wait for it to "
            "finish or stop it first"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


def _start_over_hint(saved: dict, run_dir: pathlib.Path) -> str:
    command = list(saved.get("command") or ["scripts/train.py", "PRESET", "[OPTIONS]"])
    if "--run-dir" not in command:
        command += ["--run-dir", str(run_dir)]
    return f"start over with: python {' '.join(command)} --overwrite"


def _manifest(run_dir: pathlib.Path) -> dict | None:
    for name in MANIFESTS:
        if (run_dir / name).exists():
            return json.loads((run_dir / name).read_text())
    return None


def read_sub_run(sweep_dir: pathlib.Path, name: str) -> dict:
    """The config.json of the sub-run `name` of a sweep."""
    path = sweep_dir / name / "config.json"
    if not path.exists():
        raise CheckpointError(f"{path} is missing: the sweep directory is incomplete")
    return json.loads(path.read_text())


def peek_run_dir(cfg: TrainConfig, manifest: str) -> tuple[pathlib.Path, None, dict | None]:
    """What a process other than the main one of a multi-process run needs (`distributed`):
    the directory and, to resume, its saved manifest; no lock, nothing written."""
    if cfg.resume is not None:
        return cfg.resume, None, json.loads((cfg.resume / manifest).read_text())
    return cfg.run_dir, None, None


def open_run_dir(
    cfg: TrainConfig, overwrite: int = 0, manifest: str = "config.json"
) -> tuple[pathlib.Path, IO, dict | None]:
    """Lock the run directory and read what an earlier run left there.

    **Arguments:**

    - `cfg`: the run's configuration (`cfg.resume` continues that directory).
    - `overwrite`: 1 starts over in a directory whose run has no checkpoint yet; 2 also
        deletes a run that has checkpoints. Only the files in `RUN_FILES` are removed.
    - `manifest`: `config.json` for a run, `sweep.json` for a sweep (`pompc_eqx.sweep`).

    **Returns:** `(run_dir, lock handle, saved manifest contents or None)`.
    """
    if cfg.resume is not None:
        run_dir = cfg.resume
        if not (run_dir / manifest).exists():
            raise CheckpointError(
                f"{run_dir} has no {manifest}: --resume expects a "
                f"{'sweep' if manifest == 'sweep.json' else 'run'} directory written by "
                "scripts/train.py"
            )
        handle = lock(run_dir)
        saved = json.loads((run_dir / manifest).read_text())
        if saved.get("sweep"):
            handle.close()
            raise CheckpointError(
                f"{run_dir} is one run of the sweep in {run_dir.parent}, which has the "
                f"checkpoints: resume the sweep with --resume {run_dir.parent}"
            )
        if latest_checkpoint(run_dir / "checkpoints") is None:
            handle.close()
            raise CheckpointError(
                f"--resume {run_dir}: the run has no checkpoint yet, so there is nothing to "
                f"resume; {_start_over_hint(saved, run_dir)}"
            )
        return run_dir, handle, saved
    run_dir = cfg.run_dir or default_run_dir(cfg)
    handle = lock(run_dir)
    saved = _manifest(run_dir)
    if saved is not None:
        last = latest_checkpoint(run_dir / "checkpoints")
        if last is None and overwrite < 1:
            handle.close()
            raise ConfigError(
                f"{run_dir} already holds a run that has no checkpoint yet; "
                f"{_start_over_hint(saved, run_dir)}"
            )
        if last is not None and overwrite < 2:
            handle.close()
            raise ConfigError(
                f"{run_dir} already holds a run (checkpoint {last.name}); continue it with "
                f"--resume {run_dir}, choose another --run-dir, or give --overwrite twice to "
                "delete it"
            )
        for name in (*RUN_FILES, *saved.get("runs", ())):
            path = run_dir / name
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        for path in run_dir.glob("*.dropped-*.csv"):
            path.unlink()
    return run_dir, handle, None
