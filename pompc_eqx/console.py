"""What a run shows on the terminal: a progress bar, messages, the compile phase."""

import io
import math
import sys
from collections.abc import Sequence
from typing import Any, final

import numpy as np
import tqdm
from jaxtyping import Array, Real

from .loggers import AbstractLogger


_PerSeed = Sequence[float | int | np.number] | Real[np.ndarray | Array, " seed"]


def _fmt_return(x: float) -> str:
    if not math.isfinite(x):
        return str(x)
    return f"{x:.0f}" if abs(x) >= 10 else f"{x:.3g}"


def format_eval_returns(returns: _PerSeed, max_listed: int = 4) -> str:
    """Compact per-seed eval returns for a progress bar.

    **Arguments:**

    - `returns`: one return per seed.
    - `max_listed`: list every seed up to this many; beyond, show mean ± std [min,max].

    **Returns:** e.g. `eval[-153,-160,-171]` or `eval -160±7[-171,-153]`.
    """
    values = [float(r) for r in returns]
    if len(values) <= max_listed:
        return "eval[" + ",".join(map(_fmt_return, values)) + "]"
    array = np.asarray(values)
    return (
        f"eval {_fmt_return(array.mean())}±{_fmt_return(array.std())}"
        f"[{_fmt_return(array.min())},{_fmt_return(array.max())}]"
    )


def _is_tty(file: Any) -> bool:
    isatty = getattr(file, "isatty", None)
    return bool(isatty and isatty())


class ProgressBar:
    """A tqdm bar over agent steps (per seed), with the latest eval returns per seed.

    Shows steps/s and ETA. When the output is not a terminal (CI logs, `> log.txt`) it
    redraws at most every 10 s, so logs are not flooded.
    """

    def __init__(
        self,
        total_agent_steps: int,
        *,
        num_seeds: int,
        initial: int = 0,
        disable: bool = False,
        file: io.TextIOBase | None = None,
    ):
        """**Arguments:**

        - `total_agent_steps`: agent steps per seed at the end of the run.
        - `num_seeds`: seeds trained side by side (shown in the description).
        - `initial`: agent step to start from (a resumed run).
        - `disable`: no bar at all (messages from `write` still go out).
        - `file`: output stream; stderr by default.
        """
        self._file = sys.stderr if file is None else file
        self._num_seeds = num_seeds
        tty = _is_tty(self._file)
        self.tty = tty
        self._desc = f"train ({num_seeds} seed{'s' if num_seeds != 1 else ''})"
        self._bar = tqdm.tqdm(
            total=total_agent_steps,
            initial=initial,
            desc=self._desc,
            unit=" agent steps",
            unit_scale=True,
            file=self._file,
            disable=disable,
            dynamic_ncols=tty,
            ascii=not tty,
            mininterval=0.5 if tty else 10.0,
            maxinterval=10.0 if tty else 600.0,
            smoothing=0.1,
        )

    @property
    def postfix(self) -> str:
        """The text shown after the rate (the latest eval returns)."""
        return getattr(self._bar, "postfix", None) or ""

    def update(self, agent_step: int) -> None:
        """Move the bar to `agent_step` (an absolute count, not an increment)."""
        if agent_step != self._bar.n:
            self._bar.update(agent_step - self._bar.n)

    def set_eval(self, returns_per_seed: _PerSeed) -> None:
        """Show the latest eval return of each seed (see `format_eval_returns`)."""
        if len(returns_per_seed) != self._num_seeds:
            raise ValueError(f"Expected {self._num_seeds} returns, got {len(returns_per_seed)}")
        # Redraw at once on a terminal; in logs the next periodic line will show it.
        self._bar.set_postfix_str(format_eval_returns(returns_per_seed), refresh=self.tty)

    def write(self, message: str) -> None:
        """Print a line without breaking the bar."""
        self._bar.write(message, file=self._file)

    def close(self) -> None:
        """Draw the final state and release the bar (idempotent)."""
        self._bar.close()

    def __enter__(self) -> "ProgressBar":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def set_status(self, text: str | None) -> None:
        """Show `text` (e.g. the compile phase) in place of the description; `None` resets."""
        self._bar.set_description_str(text or self._desc, refresh=True)


@final
class ConsoleLogger(AbstractLogger):
    """The progress bar (optional) and one line per evaluation and per message."""

    def __init__(
        self,
        total: int,
        seeds: Sequence[int | str],
        initial: int,
        bar: bool,
        *,
        silent: bool = False,
    ):
        """**Arguments:**

        - `total`: agent steps per seed at the end of the run.
        - `seeds`: how each run trained side by side is named (its seed; in a sweep also its
            value, see `experiment.Trainer.labels`).
        - `initial`: the agent step the run starts from.
        - `bar`: show the progress bar (otherwise only lines are printed, to stdout).
        - `silent`: print nothing (the other processes of a multi-process run).
        """
        self._seeds, self._silent = list(seeds), silent
        self.bar = (
            ProgressBar(total, num_seeds=len(seeds), initial=initial)
            if bar and not silent
            else None
        )

    def message(self, text: str) -> None:
        """Print one line without breaking the bar."""
        if self._silent:
            return
        if self.bar is not None:
            self.bar.write(text)
        else:
            print(text, flush=True)

    def advance(self, step: int) -> None:
        """Move the bar to agent step `step` (inside a logging window too)."""
        if self.bar is not None:
            self.bar.update(step)

    def status(self, text: str | None) -> None:
        """Show a phase such as `compiling … 12 s` on a terminal's bar (else a no-op)."""
        if self.bar is not None and self.bar.tty:
            self.bar.set_status(text)

    def compiling(self, label: str, seconds: float) -> None:
        """Show that XLA compiles `label` (on a terminal: a live counter on the bar)."""
        if self.bar is not None and self.bar.tty:
            self.status(f"compiling {label} … {seconds:.0f} s")
        elif seconds == 0.0:
            self.message(f"compiling {label} …")

    def log_train(self, rows: list[dict[str, Any]], step: int) -> None:
        self.advance(step)

    def log_eval(self, returns: np.ndarray, step: int, *, policy_only: bool = False) -> None:
        means = np.asarray(returns).mean(axis=1)
        if self.bar is not None and not policy_only:
            self.bar.set_eval(means)
        listed = ", ".join(f"seed {s}: {m:.1f}" for s, m in zip(self._seeds, means))
        what = "policy-only eval" if policy_only else "eval"
        self.message(f"{what} at agent step {step}: {listed}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def final_report(
    returns: np.ndarray | None,
    seeds: list[int],
    seconds: float,
    run_dir: Any,
    groups: Sequence[str] = ("",),
) -> str:
    """The end-of-run summary: final eval mean ± CI and per seed, wall time, next commands.

    `returns` (run, episode) are `len(groups)` consecutive blocks of runs, one line each (the
    values of a sweep, e.g. `lam=0.1`)."""
    from .stats import mean_ci  # scipy: imported only at the end of a run

    lines = [f"done in {seconds / 60:.1f} min: {run_dir}"]
    size = len(seeds) // len(groups)
    for i, group in enumerate(groups if returns is not None else ()):
        block = slice(i * size, (i + 1) * size)
        means = returns[block].mean(axis=1)
        mean, ci = mean_ci(means)
        ci_text = "" if math.isnan(ci) else f" ± {ci:.1f} (95% CI over seeds)"
        per_seed = ", ".join(f"seed {s}: {m:.1f}" for s, m in zip(seeds[block], means))
        lines.append(
            f"final eval return{' ' + group if group else ''} {mean:.1f}{ci_text} | {per_seed}"
        )
    lines += [
        "next: python scripts/evaluate.py " + str(run_dir),
        f"      python scripts/results_table.py {run_dir} --plot curves.png",
        f"      aim up --repo {run_dir}",
    ]
    return "\n".join(lines)
