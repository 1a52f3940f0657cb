"""`scripts/diagnose.py` and its rules on small synthetic run directories: a clean run flags
nothing; a drop, a failed episode after solving and a diverging Q are flagged where they are."""

import pathlib
import subprocess
import sys

import numpy as np
import pytest

from pompc_eqx.analysis.curves import read_rows
from pompc_eqx.analysis.diagnose import find_collapses, progress_scale, read_evaluations
from pompc_eqx.analysis.diagnose_plots import diagnosis_figure, missing_columns


ROOT = pathlib.Path(__file__).resolve().parents[1]
STEPS = [0, 1000, 2000, 3000, 4000, 5000]
RISING = {0: [-1200, -800, -400, -200, -180, -170], 1: [-1100, -700, -300, -190, -185, -175]}


def _write_run(run_dir, episodes, q_pairs) -> pathlib.Path:
    """`episodes[seed][k]`: the returns of evaluation k; `q_pairs[seed][k]`: (estimate,
    realised) of train window k (agent step 1000 (k + 1))."""
    run_dir.mkdir()
    lines = ["agent_step,env_step,seed,episode,return"]
    for seed, evaluations in episodes.items():
        for step, returns in zip(STEPS, evaluations):
            lines += [f"{step},{2 * step},{seed},{i},{r}" for i, r in enumerate(returns)]
    (run_dir / "eval.csv").write_text("\n".join(lines) + "\n")
    lines = ["agent_step,env_step,seed,plan_std,kl_mean,s_q,q_estimate,q_realised"]
    for seed, pairs in q_pairs.items():
        for k, (q, g) in enumerate(pairs):
            step = 1000 * (k + 1)
            lines.append(f"{step},{2 * step},{seed},{1.0 / (k + 1)},{0.5},{10.0 * k},{q},{g}")
    (run_dir / "train.csv").write_text("\n".join(lines) + "\n")
    return run_dir


def _flags(run_dir):
    return find_collapses(read_evaluations(run_dir), read_rows(run_dir / "train.csv"))


def _spread(means):
    return [[m - 10, m, m + 10] for m in means]


CLEAN_Q = [(55.0, 50.0), (52.0, 50.0), (48.0, 50.0), (50.0, 50.0), (51.0, 50.0)]


def test_a_run_that_learns_steadily_flags_nothing(tmp_path):
    run_dir = _write_run(
        tmp_path / "run",
        {seed: _spread(means) for seed, means in RISING.items()},
        {0: CLEAN_Q, 1: CLEAN_Q},
    )
    assert _flags(run_dir) == []
    assert progress_scale(read_evaluations(run_dir)) == -170 - (-1150)


def test_drop_failed_episode_after_solving_and_diverging_q_are_flagged(tmp_path):
    seed0 = _spread(RISING[0])
    seed0[4] = [-150, -160, -900]  # solved (best -200) then one episode fails; mean drop 203
    seed1 = _spread([-1100, -700, -300, -800, -700, -650])  # drop of 500 > 980 / 3
    diverging_q = [(55.0, 50.0), (52.0, 50.0), (150.0, 50.0), (160.0, 50.0), (52.0, 50.0)]
    run_dir = _write_run(tmp_path / "run", {0: seed0, 1: seed1}, {0: diverging_q, 1: CLEAN_Q})
    flags = _flags(run_dir)
    assert [(f.agent_step, f.seed) for f in flags] == [(3000, 0), (3000, 1), (4000, 0)]
    assert flags[0].what.startswith("Q over-estimates the realised return: 150 vs 50")
    assert flags[1].what.startswith("mean return fell from -300 to -800")
    assert flags[2].what.startswith("1 of 3 episodes failed after the task was solved")


def test_the_figure_draws_logged_columns_and_names_the_missing_ones(tmp_path):
    run_dir = _write_run(tmp_path / "run", {0: _spread(RISING[0])}, {0: CLEAN_Q})
    rows = [dict(zip(["agent_step", "seed", "plan_std"], r)) for r in [("1000", "0", "0.5")]]
    missing = missing_columns(rows)
    assert "plan_std" not in missing and {"pi_std", "q_estimate", "kl_mean"} <= set(missing)
    evaluations = read_evaluations(run_dir)
    fig = diagnosis_figure(evaluations, rows, [], progress_scale(evaluations), "t")
    returns_ax, failed_ax, sigma_ax, floor_ax = fig.axes[:4]
    assert len(returns_ax.lines) == 1 and len(returns_ax.collections) == len(STEPS)
    np.testing.assert_array_equal(failed_ax.lines[0].get_ydata(), np.zeros(len(STEPS)))
    assert sigma_ax.lines[0].get_ydata().tolist() == [0.5]
    assert (
        len(floor_ax.lines) == 0 and "not logged: plan_std_at_floor" in floor_ax.texts[0].get_text()
    )


@pytest.mark.slow
def test_the_script_writes_the_report_and_the_figure(tmp_path):
    seed1 = _spread([-1100, -700, -300, -800, -700, -650])
    run_dir = _write_run(
        tmp_path / "run", {0: _spread(RISING[0]), 1: seed1}, {0: CLEAN_Q, 1: CLEAN_Q}
    )
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "diagnose.py"), str(run_dir)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    report = (run_dir / "diagnosis.md").read_text()
    assert "| 3000 | 1 | mean return fell from -300 to -800" in report and report in out.stdout
    assert "Not logged by this run (not plotted, not checked): plan_std_at_floor" in report
    assert (run_dir / "diagnosis.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in run_dir.iterdir()) == [
        "diagnosis.md",
        "diagnosis.png",
        "eval.csv",
        "train.csv",
    ]
    missing = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "diagnose.py"), str(tmp_path / "nowhere")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1
