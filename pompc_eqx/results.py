"""Reading run directories into learning curves, paper-style tables and plots (host only).

A run directory is what `scripts/train.py` writes: `config.json`, `eval.csv` (one row per
evaluation episode) and `train.csv` (one row per logging window per seed).
"""

import argparse
import csv
import dataclasses
import datetime
import json
import math
import pathlib
import shlex
import subprocess
import textwrap

import numpy as np
from scipy import stats

from pompc_eqx.checkpoint import atomic_write
from pompc_eqx.config import PlannerConfig


@dataclasses.dataclass(frozen=True)
class Curve:
    """Per-seed values over agent steps: `values[seed, point]` (NaN where missing)."""

    label: str
    agent_steps: np.ndarray
    env_steps: np.ndarray
    seeds: tuple[int, ...]
    values: np.ndarray


def variant_label(config: dict) -> str:
    """A short name for a run's variant, e.g. `pompc λ=1 learned/forward`."""
    lam = config["lam"]
    if isinstance(lam, str) and lam != "auto":
        lam = float(lam)
    lam_text = "∞" if lam == math.inf else lam if lam == "auto" else f"{lam:g}"
    label = f"{config['preset']} λ={lam_text}"
    if lam != 0:
        label += f" {config['prior']}" + (
            f"/{config['prior_loss']}" if config["prior"] == "learned" else ""
        )
        if "planner" in config:
            # Absent in runs made before the option existed, which used the policy's own bounds.
            bounds = config["planner"].get("reanalyze_log_std")
            if bounds is None:
                label += " (reanalyze log-std: own)"
            elif tuple(bounds) != PlannerConfig().reanalyze_log_std:
                label += f" (reanalyze log-std: [{bounds[0]:g}, {bounds[1]:g}])"
    return label


def read_config(run_dir: pathlib.Path) -> dict:
    return json.loads((run_dir / "config.json").read_text())["config"]


def _rows(path: pathlib.Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def eval_curve(run_dir: pathlib.Path, label: str | None = None) -> Curve:
    """Mean evaluation return per seed at every evaluated agent step."""
    rows = _rows(run_dir / "eval.csv")
    if not rows:
        raise ValueError(f"{run_dir / 'eval.csv'} has no evaluations yet")
    return _curve(rows, "return", label or variant_label(read_config(run_dir)))


def train_curve(run_dir: pathlib.Path, metric: str, label: str | None = None) -> Curve:
    """A `train.csv` column (window means) per seed over agent steps."""
    rows = [r for r in _rows(run_dir / "train.csv") if r.get(metric) not in (None, "")]
    if not rows:
        raise ValueError(f"{run_dir / 'train.csv'} has no values of {metric!r}")
    return _curve(rows, metric, label or variant_label(read_config(run_dir)))


def train_curves(run_dirs: list[pathlib.Path], metric: str) -> list[Curve]:
    """`train_curve` of every run that logs `metric` (e.g. TD-MPC2 runs have no KL term)."""
    curves = []
    for d in run_dirs:
        try:
            curves.append(train_curve(d, metric))
        except ValueError:
            continue
    if not curves:
        raise ValueError(f"none of the runs logs {metric!r}")
    return curves


def _curve(rows: list[dict], column: str, label: str) -> Curve:
    steps = sorted({int(r["agent_step"]) for r in rows})
    seeds = tuple(sorted({int(r["seed"]) for r in rows}))
    env_of = {int(r["agent_step"]): int(r["env_step"]) for r in rows}
    sums = np.zeros((len(seeds), len(steps)))
    counts = np.zeros_like(sums)
    for r in rows:
        i, j = seeds.index(int(r["seed"])), steps.index(int(r["agent_step"]))
        sums[i, j] += float(r[column])
        counts[i, j] += 1
    with np.errstate(invalid="ignore"):
        values = sums / counts
    return Curve(label, np.array(steps), np.array([env_of[s] for s in steps]), seeds, values)


def mean_ci(values: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """Mean over seeds and the half-width of its Student-t confidence interval."""
    values = values[np.isfinite(values)]
    if values.size == 0:
        return math.nan, math.nan
    if values.size == 1:
        return float(values[0]), math.nan
    sem = values.std(ddof=1) / math.sqrt(values.size)
    return float(values.mean()), float(stats.t.ppf(0.5 + confidence / 2, values.size - 1) * sem)


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


def plot_curves(
    curves: list[Curve], path: pathlib.Path, title: str, ylabel: str = "evaluation return"
) -> None:
    """Mean and 95% CI over seeds against env steps (agent steps on a second axis)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for c in curves:
        stats_ = [mean_ci(c.values[:, j]) for j in range(c.values.shape[1])]
        mean = np.array([m for m, _ in stats_])
        ci = np.nan_to_num(np.array([h for _, h in stats_]))
        ax.plot(c.env_steps, mean, label=f"{c.label} (n={len(c.seeds)})")
        ax.fill_between(c.env_steps, mean - ci, mean + ci, alpha=min(0.2, 0.8 / len(curves)))
    ax.set_xlabel("env steps")
    ax.set_ylabel(ylabel)
    ax.set_title("\n".join(textwrap.wrap(title, 80)), fontsize=10)
    if curves and curves[0].env_steps[-1] != curves[0].agent_steps[-1]:
        repeat = curves[0].env_steps[-1] / curves[0].agent_steps[-1]
        top = ax.secondary_xaxis("top", functions=(lambda x: x / repeat, lambda x: x * repeat))
        top.set_xlabel("agent steps")
    else:
        ax.set_xlabel("env steps (= agent steps: no action repeat)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def git_commit(repo: pathlib.Path, ignore: pathlib.Path | None = None) -> str:
    """The short commit hash, flagged when tracked files (outside `ignore`, e.g. the results
    page being written) have uncommitted changes."""
    head = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True
    )
    inside = ignore is not None and ignore.resolve().is_relative_to(repo.resolve())
    pathspec = ["--", ".", f":(exclude){ignore.resolve()}"] if inside else []
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no", *pathspec],
        cwd=repo,
        capture_output=True,
        text=True,
    )
    return head.stdout.strip() + (" (with uncommitted changes)" if dirty.stdout.strip() else "")


def script_command(script: str, argv: list[str]) -> str:
    """The command line that ran `scripts/<script>`, quoted so that it can be pasted into a shell."""
    return shlex.join(["python", f"scripts/{script}", *argv])


def add_page_arguments(parser: argparse.ArgumentParser) -> None:
    """The options shared by the scripts that write results pages."""
    parser.add_argument("--title", default=None)
    parser.add_argument(
        "--train-metrics",
        nargs="*",
        default=[],
        help="also tabulate these train.csv columns (mean over windows and seeds) and plot them"
        " (e.g. kl_mean kl_std: the paper's Fig. 7)",
    )
    parser.add_argument(
        "--every-eval",
        action="store_true",
        help="also tabulate the mean over seeds at every evaluation",
    )
    notes = parser.add_mutually_exclusive_group()
    notes.add_argument("--notes", default="", help="a paragraph for the page")
    notes.add_argument(
        "--notes-file",
        type=pathlib.Path,
        default=None,
        help="markdown notes for the page, from a file",
    )


def page_notes(args: argparse.Namespace) -> str:
    """A page's notes: `--notes TEXT`, or the markdown in `--notes-file` (which keeps long
    notes out of the command line the page shows)."""
    return args.notes_file.read_text().strip() if args.notes_file is not None else args.notes


def run_summary(run_dir: pathlib.Path) -> str:
    """Model size, network widths, planner and length of a run, from its config.json."""
    saved = json.loads((run_dir / "config.json").read_text())
    cfg, agent = saved["config"], saved["agent"]
    return (
        f"model size `{cfg['model_size']}` (latent {agent['model']['latent_dim']}, MLP {agent['model']['mlp_dim']})"
        f" · planner {agent['planner']['num_samples']} samples, {agent['planner']['num_elites']} elites,"
        f" {agent['planner']['iterations']} iterations, horizon {agent['planner']['horizon']}"
        f" · {cfg['steps']} agent steps · {cfg['num_seeds']} seeds vmapped in one process"
    )


def write_page(
    path: pathlib.Path,
    title: str,
    command: str,
    repo: pathlib.Path,
    run_dirs: list[pathlib.Path],
    table: str,
    images: list[str],
    notes: str = "",
    wall_times: dict[str, float] | None = None,
) -> None:
    """A results page: the command, commit, model size, the table, the figures, wall times."""
    lines = [
        f"# {title}",
        "",
        f"Command: `{command}`",
        "",
        f"Commit `{git_commit(repo, ignore=path.parent)}` · written {datetime.date.today().isoformat()} · {run_summary(run_dirs[0])}.",
        "",
    ]
    if notes:
        lines += [notes, ""]
    lines += [table, *[f"![{pathlib.Path(i).stem}]({i})\n" for i in images]]
    if wall_times:
        lines += [
            "",
            "Wall time per run (one process each, on a 2-core CPU):",
            "",
            "| run | wall time |",
            "|---|---|",
        ]
        lines += [f"| {name} | {seconds / 60:.1f} min |" for name, seconds in wall_times.items()]
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "w") as f:
        f.write("\n".join(lines) + "\n")
