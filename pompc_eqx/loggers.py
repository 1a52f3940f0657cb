"""The outputs of a training run behind one small interface: CSV tables, Aim and the console.

`run` talks to one `Loggers` fan-out; each output is a final `AbstractLogger` that knows what
it keeps (`CsvLogger`: eval.csv and train.csv; `AimLogger`: one Aim run per seed;
`ConsoleLogger` in `console.py`: progress bar and messages; `Blocks`: a sweep's sub-runs).
"""

import abc
import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any, final

import numpy as np

from .tracking import AimTracker, CsvLog


EVAL_COLUMNS = ("agent_step", "env_step", "seed", "episode", "return")
_KEYS = ("agent_step", "env_step", "seed")


class AbstractLogger(abc.ABC):
    """One output of a run; called on the host between compiled chunks."""

    @abc.abstractmethod
    def log_train(self, rows: list[dict[str, Any]], step: int) -> None:
        """One row per seed of window means at agent step `step` (see `experiment`)."""

    @abc.abstractmethod
    def log_eval(self, returns: np.ndarray, step: int, *, policy_only: bool = False) -> None:
        """Eval returns of shape (seed, episode) at agent step `step`: of the planner, or with
        `policy_only` of the sampling policy's mean action alone."""

    @abc.abstractmethod
    def close(self) -> None:
        """Flush and release (idempotent)."""


@final
class CsvLogger(AbstractLogger):
    """`eval.csv`, `eval_policy.csv` (if used) and `train.csv` of a run directory (rows past
    `start` are set aside)."""

    def __init__(self, run_dir: pathlib.Path, seeds: Sequence[int], action_repeat: int, start: int):
        """**Arguments:**

        - `run_dir`: the run directory.
        - `seeds`: the seed of each row of the returns.
        - `action_repeat`: env steps per agent step (for the `env_step` column).
        - `start`: the agent step the run (re)starts from; later rows, left by the run that
            was interrupted, are moved to `<table>.dropped-<time>.csv`.
        """
        self._run_dir, self._seeds, self._repeat, self._start = run_dir, seeds, action_repeat, start
        self._eval = CsvLog(run_dir / "eval.csv", EVAL_COLUMNS)
        self._eval.drop_after("agent_step", start)
        self._eval_policy: CsvLog | None = None
        self._train: CsvLog | None = None

    def evaluated(self, step: int) -> bool:
        """Whether eval.csv has the evaluation of agent step `step`."""
        return any(row["agent_step"] == str(step) for row in self._eval.rows)

    def log_train(self, rows: list[dict[str, Any]], step: int) -> None:
        if self._train is None:
            # The columns depend on the preset's metrics: known once the first rows exist.
            self._train = CsvLog(self._run_dir / "train.csv", list(rows[0]))
            self._train.drop_after("agent_step", self._start)
        self._train.append(rows)

    def log_eval(self, returns: np.ndarray, step: int, *, policy_only: bool = False) -> None:
        if policy_only and self._eval_policy is None:
            self._eval_policy = CsvLog(self._run_dir / "eval_policy.csv", EVAL_COLUMNS)
            self._eval_policy.drop_after("agent_step", self._start)
        table = self._eval_policy if policy_only else self._eval
        env_step = step * self._repeat
        table.append(
            {"agent_step": step, "env_step": env_step, "seed": s, "episode": e, "return": r}
            for s, per_seed in zip(self._seeds, returns)
            for e, r in enumerate(per_seed)
        )

    def close(self) -> None:
        pass  # every append is already on disk (atomic rewrite)


@final
class AimLogger(AbstractLogger):
    """One Aim run per seed, so Aim shows seeds apart by default.

    The runs share the experiment and the hparam `group` (the run directory's name); each has
    its own `seed` hparam, so the UI can group or overlay them by either.
    """

    def __init__(
        self,
        repo: str | os.PathLike,
        experiment: str,
        name: str,
        hparams: Mapping[str, Any],
        seeds: Sequence[int],
        group: str,
        run_hashes: Sequence[str] | None = None,
    ):
        """**Arguments:**

        - `repo`, `experiment`: the Aim repository and experiment.
        - `name`: the runs' name (each gets ` seed N` appended).
        - `hparams`: the run's configuration, stored in every run.
        - `seeds`: one Aim run per seed.
        - `group`: shared by the runs of one training command.
        - `run_hashes`: the per-seed runs to continue (a resumed run), or `None`.
        """
        self._seeds = list(seeds)
        hashes = list(run_hashes) if run_hashes else [None] * len(seeds)
        self._trackers: list[AimTracker] = []
        for seed, run_hash in zip(self._seeds, hashes):
            tracker = AimTracker(
                repo,
                experiment,
                run_name=f"{name} seed {seed}",
                hparams={**hparams, "group": group, "seed": seed},
                run_hash=run_hash,
            )
            self._trackers.append(tracker)

    @property
    def run_hashes(self) -> list[str]:
        """The Aim run hash of each seed (stored in config.json to resume them)."""
        return [t.run_hash for t in self._trackers]

    def log_train(self, rows: list[dict[str, Any]], step: int) -> None:
        for tracker, row in zip(self._trackers, rows):
            metrics = {
                k: np.array([np.nan if v is None else v], float)
                for k, v in row.items()
                if k not in _KEYS
            }
            tracker.track(metrics, step=step, seeds=[row["seed"]], context={"subset": "train"})

    def log_eval(self, returns: np.ndarray, step: int, *, policy_only: bool = False) -> None:
        context = {"subset": "eval_policy" if policy_only else "eval"}
        for tracker, seed, per_seed in zip(self._trackers, self._seeds, returns):
            mean = np.array([np.mean(per_seed)])
            tracker.track({"return": mean}, step=step, seeds=[seed], context=context)

    def close(self) -> None:
        for tracker in self._trackers:
            tracker.close()


@final
class Blocks(AbstractLogger):
    """The runs of a sweep to the loggers of its sub-runs: logger i gets the i-th block of
    consecutive runs (rows and returns) and sees nothing of the others."""

    def __init__(self, loggers: Sequence[AbstractLogger], block: int):
        self.loggers, self._block = list(loggers), block

    def _part(self, i: int) -> slice:
        return slice(i * self._block, (i + 1) * self._block)

    def log_train(self, rows: list[dict[str, Any]], step: int) -> None:
        for i, logger in enumerate(self.loggers):
            logger.log_train(rows[self._part(i)], step)

    def log_eval(self, returns: np.ndarray, step: int, *, policy_only: bool = False) -> None:
        for i, logger in enumerate(self.loggers):
            logger.log_eval(returns[self._part(i)], step, policy_only=policy_only)

    def close(self) -> None:
        Loggers(*self.loggers).close()


@final
class Loggers(AbstractLogger):
    """Fan-out to several loggers; `close` closes every one even if one of them fails."""

    def __init__(self, *loggers: AbstractLogger):
        self.loggers = loggers

    def log_train(self, rows: list[dict[str, Any]], step: int) -> None:
        for logger in self.loggers:
            logger.log_train(rows, step)

    def log_eval(self, returns: np.ndarray, step: int, *, policy_only: bool = False) -> None:
        for logger in self.loggers:
            logger.log_eval(returns, step, policy_only=policy_only)

    def close(self) -> None:
        errors = []
        for logger in self.loggers:
            try:
                logger.close()
            except Exception as err:  # close the others, then report the first failure
                errors.append(err)
        if errors:
            raise errors[0]
