"""Per-step metrics of a compiled chunk on the host: NaN/inf checks and logging-window rows."""

from collections.abc import Collection, Sequence

import numpy as np

from .loop import LOOP_COUNTERS, LOOP_METRICS


class NonFiniteError(RuntimeError):
    """A loss or parameter became NaN or infinite."""


def check_finite(
    metrics: dict[str, np.ndarray],
    first_step: int,
    seeds: Sequence[int | str],
    skipped_in_burst: Collection[str],
) -> None:
    """Raise `NonFiniteError` naming the term, seed (`seeds`: how each run is named) and agent
    step of the first bad value.

    Metrics are (step, seed). Steps without an update are NaN placeholders and skipped, and so
    are `skipped_in_burst` (`agent.metrics_skipped_in_pretraining`) in the pretraining burst.
    A non-finite action (flagged by `nonfinite_action`; the simulator got 0 instead) counts as
    a bad value too.
    """
    num_learn = metrics["num_updates"][:, 0]
    burst = metrics["pretrain"][:, 0] > 0
    found = []  # (step index, order within the step, seed index, name) of each term's first bad value
    for name, values in metrics.items():
        if name == "nonfinite_action":
            bad, order = values > 0, 0  # the action is taken before the step's update
        elif name in LOOP_METRICS:
            continue
        else:
            checked = (num_learn > 0) & ~(burst & (name in skipped_in_burst))
            bad = (np.isnan(values) if name == "lam" else ~np.isfinite(values)) & checked[:, None]
            order = 1
        if bad.any():
            t, s = np.argwhere(bad)[0]
            found.append((t, order, s, name))
    if found:
        t, _, s, name = min(found)
        what = "action" if name == "nonfinite_action" else f"{name} ({metrics[name][t, s]})"
        raise NonFiniteError(
            f"non-finite {what} for seed {seeds[s]} at agent step {first_step + t + 1}"
        )


def window_rows(
    metrics: dict[str, np.ndarray], step: int, env_step: int, seeds: list[int], seconds: float
) -> list[dict]:
    """One row per seed: window means of every update metric and finished-episode returns."""
    rows = []
    steps = metrics["episode_return"].shape[0]
    for i, seed in enumerate(seeds):
        row = {"agent_step": step, "env_step": env_step, "seed": seed}
        returns = metrics["episode_return"][:, i]
        finished = returns[np.isfinite(returns)]
        row["episodes"] = int(finished.size)
        row["episode_return"] = float(finished.mean()) if finished.size else None
        row["steps_per_second"] = steps / seconds
        for name, values in sorted(metrics.items()):
            if name in LOOP_COUNTERS:
                continue
            column = values[:, i]
            column = column[~np.isnan(column)]
            row[name] = float(column.mean()) if column.size else None
        rows.append(row)
    return rows
