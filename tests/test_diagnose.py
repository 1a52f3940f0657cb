"""`scripts/diagnose.py` and its rules on small synthetic run directories: a clean run flags
nothing; a drop, a failed episode after solving and a diverging Q are flagged where they are;
the loop logs the Q columns the rules read."""

import pathlib
import subprocess
import sys

import equinox as eqx
import jax
import numpy as np
import pytest
from helpers import start_loop, tiny_agent_config

from pompc_eqx.analysis.curves import read_rows
from pompc_eqx.analysis.diagnose import find_collapses, progress_scale, read_evaluations
from pompc_eqx.analysis.diagnose_plots import diagnosis_figure, missing_columns
from pompc_eqx.loop import make_train_chunk


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


@pytest.mark.slow
def test_loop_logs_the_value_estimate_and_the_discounted_return_of_each_episode():
    """On the constant probe (reward 1 per step, 10-step episodes) every finished episode begun
    after the seed phase logs `q_realised` = sum_t gamma^t exactly and as `q_estimate` the
    value estimate of the agent that acted at the episode's first stored state and action."""
    cfg = tiny_agent_config("tdmpc2", "jax/probe-constant")
    env, schedule, state = start_loop(
        cfg, "jax/probe-constant", num_seeds=2, steps=40, seed_steps=10
    )
    chunk = eqx.filter_jit(make_train_chunk(cfg, schedule, env, 20))
    state, first = chunk(state)  # two episodes; the second one after updates
    agents, rows = state.seeds.agent, np.asarray(state.seeds.buffer.pointer)
    state, second = chunk(state)
    for metrics, logged_episodes in ((first, 1), (second, 2)):
        done = np.isfinite(np.asarray(metrics["episode_return"]))
        logged = np.isfinite(np.asarray(metrics["q_estimate"]))
        assert done.sum() == 4 and (logged == np.isfinite(np.asarray(metrics["q_realised"]))).all()
        # The first episode began in the seed phase (untrained networks): not logged.
        assert (logged <= done).all() and logged.sum() == 2 * logged_episodes
        realised = np.asarray(metrics["q_realised"])[logged]
        np.testing.assert_allclose(realised, (1 - cfg.discount**10) / (1 - cfg.discount), rtol=1e-5)
    # The third episode starts the second chunk, at buffer row `rows` (an episode: 11 rows),
    # and ends at its 10th step; its estimate is that of the agents at the chunk's start.
    buffer = state.seeds.buffer
    for i in range(2):
        agent = jax.tree.map(lambda x: x[i] if eqx.is_array(x) else x, agents)
        row = int(rows[i])
        z = agent.nets.encode(buffer.obs[i, row])
        want = agent.nets.value.estimate(agent.nets.two_hot, z, buffer.action[i, row])
        got = np.asarray(second["q_estimate"])[9, i]
        np.testing.assert_allclose(got, float(want), rtol=1e-5, atol=1e-6)
    assert np.ptp(np.asarray(second["q_estimate"])[np.isfinite(second["q_estimate"])]) > 0
