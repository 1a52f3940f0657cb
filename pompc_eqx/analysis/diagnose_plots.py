"""The diagnosis figure: one panel per group of training signals, one colour per seed."""

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from pompc_eqx.analysis.diagnose import Evaluation, Flag, failed_fractions


# (title, train.csv columns, log scale). Line styles tell the columns of a panel apart.
TRAIN_PANELS = (
    ("planner σ₀ (mean std of the first action)", ("plan_std",), False),
    ("share of action dims at the planner's std floor", ("plan_std_at_floor",), False),
    (
        "policy (solid) and prior (dashed) std, RMS gap of their means (dotted)",
        ("pi_std", "prior_std", "prior_mean_gap"),
        False,
    ),
    (
        "KL terms: kl_mean, kl_std (dashed), prior_kl (dotted)",
        ("kl_mean", "kl_std", "prior_kl"),
        False,
    ),
    (
        "Q estimate (solid) vs realised discounted return (dashed)",
        ("q_estimate", "q_realised"),
        False,
    ),
    (
        "gradient norms: world model, policy (dashed), prior (dotted)",
        ("world_model_grad_norm", "pi_grad_norm", "prior_grad_norm"),
        True,
    ),
    (
        "running scales s_q, s_kl (dashed), s_p (dotted), λ (dash-dot)",
        ("s_q", "s_kl", "s_p", "lam"),
        True,
    ),
)
STYLES = ("-", "--", ":", "-.")


def missing_columns(train_rows: list[dict]) -> list[str]:
    """The panels' train.csv columns that this run never logged (absent or always empty)."""
    wanted = [c for _, columns, _ in TRAIN_PANELS for c in columns]
    return [c for c in wanted if not any(row.get(c) for row in train_rows)]


def _series(train_rows: list[dict], column: str) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Per seed: agent steps and finite values of `column`."""
    points: dict[int, list[tuple[int, float]]] = {}
    for row in train_rows:
        if row.get(column):
            value = float(row[column])
            if np.isfinite(value):
                points.setdefault(int(row["seed"]), []).append((int(row["agent_step"]), value))
    return {seed: tuple(np.array(v) for v in zip(*sorted(p))) for seed, p in points.items()}


def _returns_panel(
    ax: Axes, evaluations: dict[int, list[Evaluation]], flags: list[Flag], colors: dict
) -> None:
    for seed, evals in evaluations.items():
        for e in evals:
            ax.scatter(
                np.full(e.returns.size, e.agent_step), e.returns, s=6, color=colors[seed], alpha=0.4
            )
        steps = [e.agent_step for e in evals]
        ax.plot(steps, [e.mean for e in evals], color=colors[seed], label=f"seed {seed}")
    for f in flags:
        ax.axvline(f.agent_step, color="red", ls=":", lw=0.8)
    ax.set_title("evaluation returns (dots: episodes; red: flags)", fontsize=9)
    ax.legend(fontsize=7)


def _failed_panel(
    ax: Axes, evaluations: dict[int, list[Evaluation]], scale: float, colors: dict
) -> None:
    for seed, evals in evaluations.items():
        steps = [e.agent_step for e in evals]
        ax.plot(steps, failed_fractions(evals, scale), color=colors[seed], marker=".")
    ax.set_ylim(-0.05, 1.05)
    ax.set_title("share of evaluation episodes failed", fontsize=9)


def diagnosis_figure(
    evaluations: dict[int, list[Evaluation]],
    train_rows: list[dict],
    flags: list[Flag],
    scale: float,
    title: str,
) -> Figure:
    """Evaluation returns and failures, then every `TRAIN_PANELS` group, against agent steps.

    A panel whose columns were not logged says so instead of drawing lines.
    """
    seeds = sorted({*evaluations, *(int(r["seed"]) for r in train_rows)})
    colors = {seed: f"C{i % 10}" for i, seed in enumerate(seeds)}
    fig = Figure(figsize=(15, 11))
    axes = fig.subplots(3, 3).ravel()
    _returns_panel(axes[0], evaluations, flags, colors)
    _failed_panel(axes[1], evaluations, scale, colors)
    for ax, (panel_title, columns, log) in zip(axes[2:], TRAIN_PANELS):
        drawn = False
        for column, style in zip(columns, STYLES):
            for seed, (steps, values) in _series(train_rows, column).items():
                ax.plot(steps, values, color=colors[seed], ls=style, lw=1.0)
                drawn = True
        if drawn and log:
            ax.set_yscale("symlog", linthresh=1e-3)
        if not drawn:
            ax.text(
                0.5,
                0.5,
                "not logged: " + ", ".join(columns),
                ha="center",
                va="center",
                transform=ax.transAxes,
                fontsize=8,
                wrap=True,
            )
        ax.set_title(panel_title, fontsize=9)
    for ax in axes:
        ax.set_xlabel("agent steps", fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig
