"""Markdown tables of run directories: the paper's Table-1 form, every evaluation, train metrics."""

import argparse
import math
import pathlib

import numpy as np

from pompc_eqx.analysis.curves import Curve, read_config, train_curve, variant_label
from pompc_eqx.stats import mean_ci


def final_table(curves: list[Curve], task: str) -> str:
    """Markdown table in the form of the paper's Table 1: final mean ± 95% CI over seeds."""
    lines = [
        f"| method | {task}: final return (mean ± 95% CI) | seeds | at agent step (env step) |",
        "|---|---|---|---|",
    ]
    for c in curves:
        mean, ci = mean_ci(c.values[:, -1])
        ci_text = "n/a" if math.isnan(ci) else f"{ci:.0f}"
        lines.append(
            f"| {c.label} | {mean:.0f} ± {ci_text} | {len(c.seeds)} | {c.agent_steps[-1]} ({c.env_steps[-1]}) |"
        )
    return "\n".join(lines) + "\n"


def train_metric_table(run_dirs: list[pathlib.Path], metrics: list[str]) -> str:
    """Markdown table of `train.csv` columns averaged over every logged window and seed."""
    lines = ["| run | " + " | ".join(f"{m} (mean over windows and seeds)" for m in metrics) + " |"]
    lines.append("|---" * (len(metrics) + 1) + "|")
    for d in run_dirs:
        cells = []
        for metric in metrics:
            try:
                cells.append(f"{np.nanmean(train_curve(d, metric).values):.3g}")
            except ValueError:
                cells.append("n/a")
        lines.append(f"| {variant_label(read_config(d))} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def eval_table(curves: list[Curve]) -> str:
    """Markdown table of the mean over seeds at every evaluation, one column per agent step."""
    steps = sorted({int(s) for c in curves for s in c.agent_steps})
    lines = [
        "| method | " + " | ".join(f"{s:,}" for s in steps) + " |",
        "|---" * (len(steps) + 1) + "|",
    ]
    for c in curves:
        means = {int(s): mean_ci(c.values[:, j])[0] for j, s in enumerate(c.agent_steps)}
        lines.append(
            f"| {c.label} | "
            + " | ".join(f"{means[s]:.0f}" if s in means else "" for s in steps)
            + " |"
        )
    return "\n".join(lines) + "\n"


def page_tables(
    curves: list[Curve], run_dirs: list[pathlib.Path], task: str, args: argparse.Namespace
) -> str:
    """A page's tables: the Table-1-style finals, then what `add_page_arguments` asked for."""
    table = final_table(curves, task)
    if args.every_eval:
        table += (
            "\n**Mean over seeds at every evaluation** (columns: agent steps)\n\n"
            + eval_table(curves)
        )
    if args.train_metrics:
        table += "\n" + train_metric_table(run_dirs, args.train_metrics)
    return table
