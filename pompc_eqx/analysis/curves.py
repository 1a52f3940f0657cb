"""Learning curves from run directories, and the statistics over seeds that tables and plots use.

A run directory is what `scripts/train.py` writes: `config.json`, `eval.csv` (one row per
evaluation episode; `eval_policy.csv` the same for the policy alone) and `train.csv` (one row
per logging window per seed). A sweep directory (`sweep.json`) holds one run directory per
value (`expand_sweeps`).
"""

import csv
import dataclasses
import json
import math
import pathlib

import numpy as np

from pompc_eqx.config import PlannerConfig


@dataclasses.dataclass(frozen=True)
class Curve:
    """Per-seed values over agent steps: `values[seed, point]` (NaN where missing).

    `observed` is the smallest and largest single value read (one evaluation episode, or one
    logging window): what a plot may show without implying values that never happened.
    """

    label: str
    agent_steps: np.ndarray
    env_steps: np.ndarray
    seeds: tuple[int, ...]
    values: np.ndarray
    observed: tuple[float, float]


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
    if config.get("episodic"):
        head = config.get("model", {}).get("termination_head", True)
        label += " episodic" + ("" if head else " (no termination head)")
    return label


def expand_sweeps(dirs: list[pathlib.Path]) -> list[pathlib.Path]:
    """Run directories, with each sweep directory replaced by its runs (one per value)."""
    runs = []
    for d in dirs:
        sweep = d / "sweep.json"
        if sweep.exists():
            runs += [d / name for name in json.loads(sweep.read_text())["runs"]]
        else:
            runs.append(d)
    return runs


def read_config(run_dir: pathlib.Path) -> dict:
    """The training configuration saved in a run directory's `config.json`."""
    return json.loads((run_dir / "config.json").read_text())["config"]


def read_rows(path: pathlib.Path) -> list[dict]:
    """The rows of a CSV file as dictionaries (column name -> text)."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def eval_curve(run_dir: pathlib.Path, label: str | None = None) -> Curve:
    """Mean evaluation return per seed at every evaluated agent step."""
    rows = read_rows(run_dir / "eval.csv")
    if not rows:
        raise ValueError(f"{run_dir / 'eval.csv'} has no evaluations yet")
    return _curve(rows, "return", label or variant_label(read_config(run_dir)))


def eval_curves(run_dir: pathlib.Path) -> list[Curve]:
    """`eval_curve`, then the sampling policy's own curve where the run evaluated it alone
    (`eval_policy.csv`, `--eval-policy`), labelled "... · policy only"."""
    planner = eval_curve(run_dir)
    policy_file = run_dir / "eval_policy.csv"
    rows = read_rows(policy_file) if policy_file.exists() else []
    if not rows:
        return [planner]
    return [planner, _curve(rows, "return", f"{planner.label} · policy only")]


def train_curve(run_dir: pathlib.Path, metric: str, label: str | None = None) -> Curve:
    """A `train.csv` column (window means) per seed over agent steps."""
    rows = [r for r in read_rows(run_dir / "train.csv") if r.get(metric) not in (None, "")]
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
    raw = np.array([float(r[column]) for r in rows])
    raw = raw[np.isfinite(raw)]
    observed = (float(raw.min()), float(raw.max())) if raw.size else (math.nan, math.nan)
    env_steps = np.array([env_of[s] for s in steps])
    return Curve(label, np.array(steps), env_steps, seeds, values, observed)
