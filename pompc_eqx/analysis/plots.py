"""Learning-curve figures that show what the seeds did and never a value no run reached.

Fewer than 3 seeds give no useful t-interval (with 2 seeds its half-width is 12.7 standard
errors), so such curves show every seed's line and their mean; 3 or more show the mean with
its 95% interval, clipped to the observed range, over thin per-seed lines.
"""

import pathlib
import textwrap

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from pompc_eqx.analysis.curves import Curve
from pompc_eqx.stats import mean_ci


MIN_SEEDS_FOR_INTERVAL = 3


def draw_curves(ax: Axes, curves: list[Curve]) -> None:
    """Draw `curves` against env steps on `ax`; y-limits come from the observed values.

    Artists are tagged with `gid` "seed", "mean" or "interval" so that callers (and tests)
    can tell them apart.
    """
    for index, c in enumerate(curves):
        color = f"C{index % 10}"
        n = len(c.seeds)
        if n > 1:
            for seed_values in c.values:
                ax.plot(c.env_steps, seed_values, color=color, lw=0.7, alpha=0.45, gid="seed")
        stats = [mean_ci(c.values[:, j]) for j in range(c.values.shape[1])]
        mean = np.array([m for m, _ in stats])
        with_interval = n >= MIN_SEEDS_FOR_INTERVAL
        what = "mean ± 95% CI, thin: seeds" if with_interval else "mean, thin: seeds"
        label = f"{c.label} ({n} seeds: {what})" if n > 1 else f"{c.label} (1 seed)"
        ax.plot(c.env_steps, mean, color=color, lw=1.8, gid="mean", label=label)
        if with_interval:
            half = np.array([h for _, h in stats])
            low, high = np.clip(mean - half, *c.observed), np.clip(mean + half, *c.observed)
            band = ax.fill_between(c.env_steps, low, high, color=color, alpha=0.15, lw=0)
            band.set_gid("interval")
    observed = np.array([c.observed for c in curves if np.isfinite(c.observed).all()])
    if observed.size:  # else nothing finite was logged: leave matplotlib's limits
        low, high = observed[:, 0].min(), observed[:, 1].max()
        pad = 0.05 * (high - low) if high > low else max(1.0, abs(high) * 0.05)
        # The margin never crosses zero: all-negative returns get no positive tick.
        ax.set_ylim(
            max(low - pad, 0.0) if low >= 0 else low - pad,
            min(high + pad, 0.0) if high <= 0 else high + pad,
        )


def curves_figure(curves: list[Curve], title: str, ylabel: str = "evaluation return") -> Figure:
    """A figure of `curves` (see `draw_curves`) with agent steps on a second x-axis."""
    fig = Figure(figsize=(7, 4.2))
    ax = fig.subplots()
    draw_curves(ax, curves)
    ax.set_ylabel(ylabel)
    ax.set_title("\n".join(textwrap.wrap(title, 80)), fontsize=10)
    if curves and curves[0].env_steps[-1] != curves[0].agent_steps[-1]:
        ax.set_xlabel("env steps")
        repeat = curves[0].env_steps[-1] / curves[0].agent_steps[-1]
        top = ax.secondary_xaxis("top", functions=(lambda x: x / repeat, lambda x: x * repeat))
        top.set_xlabel("agent steps")
    else:
        ax.set_xlabel("env steps (= agent steps: no action repeat)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_curves(
    curves: list[Curve], path: pathlib.Path, title: str, ylabel: str = "evaluation return"
) -> None:
    """Write `curves_figure(curves, title, ylabel)` to `path` (PNG)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    curves_figure(curves, title, ylabel).savefig(path, dpi=120)
