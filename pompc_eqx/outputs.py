"""The files of a run (or of every run of a sweep) as it starts: config.json and sweep.json
written, eval.csv, train.csv and Aim runs opened (see `experiment.run`)."""

import dataclasses
import pathlib
import shutil
import subprocess
from typing import TYPE_CHECKING

from .config import TrainConfig, config_dict
from .files import plain, write_json
from .loggers import AbstractLogger, AimLogger, Blocks, CsvLogger, Loggers
from .sweep import SWEEP_FILE


if TYPE_CHECKING:
    from .experiment import Trainer

Member = tuple[TrainConfig, pathlib.Path, dict | None]
"""One run directory of the program: its configuration, directory and saved config.json."""


GIT_TIMEOUT_S = 30
"""A git call that takes longer (e.g. a hung network filesystem) is given up on."""


def git_commit(repo: pathlib.Path, ignore: pathlib.Path | None = None) -> str:
    """The short commit hash, flagged when tracked files (outside `ignore`, e.g. the results
    page being written) have uncommitted changes."""
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=GIT_TIMEOUT_S,
    )
    inside = ignore is not None and ignore.resolve().is_relative_to(repo.resolve())
    pathspec = ["--", ".", f":(exclude){ignore.resolve()}"] if inside else []
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no", *pathspec],
        cwd=repo,
        capture_output=True,
        text=True,
        timeout=GIT_TIMEOUT_S,
    )
    return head.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "")


def code_commit() -> str | None:
    """The commit of the git checkout this package runs from (flagged when it has uncommitted
    changes), recorded with each invocation of a run; None outside a checkout or when git
    does not answer, so that recording it never stops a run from starting."""
    root = pathlib.Path(__file__).resolve().parents[1]
    if not (root / ".git").exists() or shutil.which("git") is None:
        return None
    try:
        return git_commit(root) or None
    except subprocess.TimeoutExpired:
        return None


def open_outputs(
    trainer: "Trainer", members: list[Member], run_dir: pathlib.Path, start: int, history: dict
) -> tuple[AbstractLogger, CsvLogger]:
    """Write each member's config.json (and a sweep's sweep.json) and open its outputs.

    **Arguments:**

    - `trainer`: what runs (its `sweep`, if any, says how the members split the runs).
    - `members`: one per run directory (one, or one per value of a sweep).
    - `run_dir`: the run (or sweep) directory.
    - `start`: the agent step the run starts from.
    - `history`: the `command`, `resume_commands` and `commits` to record.

    **Returns:** the loggers (each member sees its own block of runs) and the first member's
    CSV logger.
    """
    base, sweep = trainer.cfg, trainer.sweep
    seeds = trainer.seeds[: base.num_seeds]
    blocks, first_csv = [], None
    for i, (member_cfg, member_dir, member_saved) in enumerate(members):
        member_dir.mkdir(exist_ok=True)
        now = config_dict(member_cfg)
        info = {
            "config": now,
            "task": dataclasses.asdict(trainer.spec),
            "agent": plain(dataclasses.asdict(member_cfg.agent_config(*trainer.spec_dims))),
            "seeds": seeds,
            "seed_steps": trainer.schedule.seed_steps,
            "buffer_capacity": trainer.schedule.capacity,
            **history,
            "aim_run_hashes": member_saved and member_saved.get("aim_run_hashes"),
        }
        if sweep:
            info["sweep"] = ".."  # the sweep directory, which holds the checkpoints
        csv_logger = CsvLogger(member_dir, seeds, trainer.spec.action_repeat, start)
        first_csv = first_csv or csv_logger
        loggers = [csv_logger]
        if base.aim:
            value = f" {sweep.labels[i]}" if sweep else ""
            aim = AimLogger(
                base.aim_repo or run_dir,
                base.experiment,
                f"{base.preset} {base.task} lam={member_cfg.lam}{value} prior={base.prior}/{base.prior_loss}",
                now,
                seeds,
                group=run_dir.name,
                run_hashes=info["aim_run_hashes"],
            )
            info["aim_run_hashes"] = aim.run_hashes
            loggers.append(aim)
        write_json(member_dir / "config.json", info)
        blocks.append(Loggers(*loggers))
    if sweep:
        manifest = {
            "config": config_dict(base),
            **sweep.manifest(),
            "buffer_capacity": trainer.schedule.capacity,
            **history,
        }
        write_json(run_dir / SWEEP_FILE, manifest)
    return Blocks(blocks, base.num_seeds), first_csv
