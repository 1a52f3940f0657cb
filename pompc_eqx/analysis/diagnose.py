"""Signs of learning collapse in a run directory: rules over `eval.csv` and `train.csv`.

All return rules share one scale, the run's progress `S`: the best evaluation mean of any seed
minus the mean of the seeds' first evaluations. Per seed:

- a *drop*: the evaluation mean falls by more than `S / 3` from one evaluation to the next;
- a *failed episode*: its return is more than `S / 2` below the seed's best mean so far;
- *solved*: the seed's best mean so far is at least `--solved-return`, or, without one, within
  10% of `S` of the run's best mean; failed episodes after that are flagged;
- *Q diverging*: a logging window whose mean Q estimate (`q_estimate`) differs from the
  realised discounted return of the same states (`q_realised`) by more than half of it (and
  by more than 0.5), or is not finite; only the first window of each stretch is flagged.
"""

import dataclasses
import math
import pathlib

import numpy as np

from pompc_eqx.analysis.curves import read_rows


DROP_SHARE = 1 / 3
FAILED_SHARE = 1 / 2
SOLVED_SHARE = 0.9
Q_GAP_SHARE = 1 / 2


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """One seed's evaluation at `agent_step`: every episode's return."""

    agent_step: int
    returns: np.ndarray

    @property
    def mean(self) -> float:
        return float(self.returns.mean())


@dataclasses.dataclass(frozen=True)
class Flag:
    """A sign of collapse: where (agent step, seed) and what."""

    agent_step: int
    seed: int
    what: str


def read_evaluations(run_dir: pathlib.Path) -> dict[int, list[Evaluation]]:
    """Each seed's evaluations in agent-step order, from `RUN_DIR/eval.csv`."""
    returns: dict[tuple[int, int], list[float]] = {}
    for row in read_rows(run_dir / "eval.csv"):
        returns.setdefault((int(row["seed"]), int(row["agent_step"])), []).append(
            float(row["return"])
        )
    if not returns:
        raise ValueError(f"{run_dir / 'eval.csv'} has no evaluations yet")
    by_seed: dict[int, list[Evaluation]] = {}
    for (seed, step), values in sorted(returns.items()):
        by_seed.setdefault(seed, []).append(Evaluation(step, np.array(values)))
    return by_seed


def progress_scale(evaluations: dict[int, list[Evaluation]]) -> float:
    """The run's progress `S`: best evaluation mean of any seed minus the mean first one."""
    best = max(e.mean for evals in evaluations.values() for e in evals)
    first = np.mean([evals[0].mean for evals in evaluations.values()])
    return float(best - first)


def failed_fractions(evaluations: list[Evaluation], scale: float) -> np.ndarray:
    """The share of each evaluation's episodes that failed (see the module docstring)."""
    best = np.maximum.accumulate([e.mean for e in evaluations])
    return np.array(
        [np.mean(e.returns < b - FAILED_SHARE * scale) for e, b in zip(evaluations, best)]
    )


def return_flags(
    evaluations: dict[int, list[Evaluation]], solved_return: float | None = None
) -> list[Flag]:
    """Drops between evaluations and failed episodes once the seed had solved the task."""
    scale = progress_scale(evaluations)
    if scale <= 0:
        return []  # nothing was learned, so nothing can collapse
    solved_at = solved_from(evaluations, solved_return)
    flags = []
    for seed, evals in evaluations.items():
        best = np.maximum.accumulate([e.mean for e in evals])
        fractions = failed_fractions(evals, scale)
        for k, e in enumerate(evals):
            if k > 0 and evals[k - 1].mean - e.mean > DROP_SHARE * scale:
                flags.append(
                    Flag(
                        e.agent_step,
                        seed,
                        f"mean return fell from {evals[k - 1].mean:.4g} to {e.mean:.4g}"
                        f" (more than a third of the run's progress {scale:.4g})",
                    )
                )
            if k > 0 and best[k - 1] >= solved_at and fractions[k] > 0:
                failed = int(round(fractions[k] * e.returns.size))
                flags.append(
                    Flag(
                        e.agent_step,
                        seed,
                        f"{failed} of {e.returns.size} episodes failed after the task was solved"
                        f" (lowest return {e.returns.min():.4g}, best mean so far {best[k - 1]:.4g})",
                    )
                )
    return flags


def q_flags(train_rows: list[dict]) -> list[Flag]:
    """Windows where the mean Q estimate leaves the realised discounted return (first of each
    stretch per seed), or is not finite."""
    flags = []
    diverging: dict[int, bool] = {}
    for row in train_rows:
        estimate, realised = row.get("q_estimate") or "", row.get("q_realised") or ""
        if not estimate or not realised:
            continue
        seed, step = int(row["seed"]), int(row["agent_step"])
        q, g = float(estimate), float(realised)
        gap = abs(q - g)
        # At least 0.5: with realised returns near 0 any estimate would be "half away".
        now = not math.isfinite(gap) or gap > Q_GAP_SHARE * max(abs(g), 1.0)
        if now and not diverging.get(seed, False):
            kind = "over" if q > g else "under"
            flags.append(
                Flag(step, seed, f"Q {kind}-estimates the realised return: {q:.4g} vs {g:.4g}")
            )
        diverging[seed] = now
    return flags


def find_collapses(
    evaluations: dict[int, list[Evaluation]],
    train_rows: list[dict],
    solved_return: float | None = None,
) -> list[Flag]:
    """Every flag of a run (`return_flags` and `q_flags`), ordered by agent step then seed."""
    flags = return_flags(evaluations, solved_return) + q_flags(train_rows)
    return sorted(flags, key=lambda f: (f.agent_step, f.seed))


def solved_from(evaluations: dict[int, list[Evaluation]], solved_return: float | None) -> float:
    """The mean return from which a seed counts as having solved the task."""
    if solved_return is not None:
        return solved_return
    run_best = max(e.mean for evals in evaluations.values() for e in evals)
    return run_best - (1 - SOLVED_SHARE) * progress_scale(evaluations)


def diagnosis_markdown(
    run_dir: pathlib.Path,
    flags: list[Flag],
    scale: float,
    solved_at: float,
    missing: list[str],
    image: str | None,
) -> str:
    """The report written to `RUN_DIR/diagnosis.md`: rules, flags and what was not logged."""
    lines = [
        f"# Diagnosis of {run_dir.name}",
        "",
        f"Progress S = {scale:.4g} (best evaluation mean minus the mean first evaluation);"
        f" a seed counts as solved from a mean return of {solved_at:.4g}.",
        "Flags: a drop of the mean by more than S/3 between evaluations; episodes more than S/2"
        " below the seed's best mean so far once it solved the task; Q estimates more than half"
        " away from the realised discounted returns.",
        "",
    ]
    if flags:
        lines += ["| agent step | seed | what |", "|---|---|---|"]
        lines += [f"| {f.agent_step} | {f.seed} | {f.what} |" for f in flags]
    else:
        lines.append("No collapse flagged.")
    if missing:
        lines += ["", "Not logged by this run (not plotted, not checked): " + ", ".join(missing)]
    if image:
        lines += ["", f"![diagnosis]({image})"]
    return "\n".join(lines) + "\n"
