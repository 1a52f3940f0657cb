"""Results pages: curves from run directories, the Table-1-style table, the commit stamp, and
`scripts/benchmark_learning.py` end to end on a tiny grid."""

import argparse
import json
import math
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest
from test_training import SMALL_FLAGS

from pompc_eqx.analysis.curves import eval_curve, eval_curves, variant_label
from pompc_eqx.analysis.pages import (
    add_page_arguments,
    git_commit,
    page_notes,
    script_command,
    write_page,
)
from pompc_eqx.analysis.tables import eval_table, final_table, train_metric_table
from pompc_eqx.stats import mean_ci


ROOT = pathlib.Path(__file__).resolve().parents[1]


def _fake_run(
    run_dir: pathlib.Path, rows: list[tuple[int, int, int, float]], **config
) -> pathlib.Path:
    """A run directory with `eval.csv` rows (agent_step, seed, episode, return), action repeat 2."""
    run_dir.mkdir(parents=True)
    base = {
        "preset": "pompc",
        "lam": 1.0,
        "prior": "learned",
        "prior_loss": "reverse",
        "task": "jax/pendulum",
    }
    (run_dir / "config.json").write_text(json.dumps({"config": {**base, **config}}))
    lines = ["agent_step,env_step,seed,episode,return"]
    lines += [f"{step},{2 * step},{seed},{episode},{ret}" for step, seed, episode, ret in rows]
    (run_dir / "eval.csv").write_text("\n".join(lines) + "\n")
    return run_dir


def test_eval_curve_averages_episodes_per_seed_and_marks_missing_points(tmp_path):
    rows = [(10, 0, 0, 1.0), (10, 0, 1, 3.0), (10, 1, 0, 5.0), (20, 0, 0, 7.0)]
    curve = eval_curve(_fake_run(tmp_path / "run", rows))
    assert curve.seeds == (0, 1)
    assert curve.agent_steps.tolist() == [10, 20] and curve.env_steps.tolist() == [20, 40]
    assert curve.values[0].tolist() == [2.0, 7.0]
    assert curve.values[1, 0] == 5.0 and math.isnan(curve.values[1, 1])


def test_a_run_that_evaluated_the_policy_alone_has_a_second_curve(tmp_path):
    run_dir = _fake_run(tmp_path / "run", [(0, 0, 0, -900.0), (10, 0, 0, -200.0)], lam=1.0)
    assert [c.label for c in eval_curves(run_dir)] == ["pompc λ=1 learned/reverse"]
    lines = ["agent_step,env_step,seed,episode,return", "0,0,0,0,-1000.0", "10,20,0,0,-400.0"]
    (run_dir / "eval_policy.csv").write_text("\n".join(lines) + "\n")
    planner, policy = eval_curves(run_dir)
    assert policy.label == "pompc λ=1 learned/reverse · policy only"
    assert planner.values[0].tolist() == [-900.0, -200.0]
    assert policy.values[0].tolist() == [-1000.0, -400.0]
    table = final_table([planner, policy], "jax/pendulum")
    assert "| pompc λ=1 learned/reverse · policy only | -400 ± n/a | 1 | 10 (20) |" in table


def test_mean_ci_is_the_student_t_interval():
    mean, half = mean_ci(np.array([1.0, 2.0, 3.0, 4.0, np.nan]))
    # t quantile 0.975 with 3 degrees of freedom = 3.18245; sample std of 1..4 = 1.29099.
    assert mean == pytest.approx(2.5)
    assert half == pytest.approx(3.18245 * 1.29099 / 2, rel=1e-4)
    assert math.isnan(mean_ci(np.array([3.0]))[1])


def test_final_table_reports_the_last_point_of_each_curve(tmp_path):
    rows = [(10, s, 0, 0.0) for s in range(3)] + [(20, s, 0, 100.0 + 10 * s) for s in range(3)]
    curve = eval_curve(_fake_run(tmp_path / "run", rows, lam=9.0, prior_loss="forward"))
    table = final_table([curve], "jax/pendulum")
    _, half = mean_ci(np.array([100.0, 110.0, 120.0]))
    assert f"| pompc λ=9 learned/forward | 110 ± {half:.0f} | 3 | 20 (40) |" in table.splitlines()


def test_train_metric_table_averages_windows_and_seeds(tmp_path):
    run_dir = _fake_run(tmp_path / "run", [(10, 0, 0, 0.0)])
    (run_dir / "train.csv").write_text(
        "agent_step,env_step,seed,kl_mean\n1000,2000,0,\n1000,2000,1,\n2000,4000,0,1.0\n2000,4000,1,2.0\n3000,6000,0,6.0\n"
    )
    table = train_metric_table([run_dir], ["kl_mean", "lam"])
    assert table.splitlines()[-1] == "| pompc λ=1 learned/reverse | 3 | n/a |"


@pytest.mark.parametrize(
    "config, label",
    [
        ({"preset": "tdmpc2", "lam": 0.0}, "tdmpc2 λ=0"),
        ({"preset": "bmpc", "lam": "inf", "prior": "replay"}, "bmpc λ=∞ replay"),
        ({"lam": 0.1, "prior_loss": "forward"}, "pompc λ=0.1 learned/forward"),
        ({"lam": "auto"}, "pompc λ=auto learned/reverse"),
        ({"planner": {"reanalyze_log_std": [-2.0, 1.0]}}, "pompc λ=1 learned/reverse"),
        (
            {"planner": {"reanalyze_log_std": None}},
            "pompc λ=1 learned/reverse (reanalyze log-std: own)",
        ),
        ({"planner": {}}, "pompc λ=1 learned/reverse (reanalyze log-std: own)"),
        (
            {"planner": {"reanalyze_log_std": [-2.5, 1.0]}},
            "pompc λ=1 learned/reverse (reanalyze log-std: [-2.5, 1])",
        ),
        ({"preset": "tdmpc2", "lam": 0.0, "planner": {"reanalyze_log_std": None}}, "tdmpc2 λ=0"),
        ({"preset": "tdmpc2", "lam": 0.0, "episodic": True}, "tdmpc2 λ=0 episodic"),
        (
            {
                "preset": "tdmpc2",
                "lam": 0.0,
                "episodic": True,
                "model": {"termination_head": False},
            },
            "tdmpc2 λ=0 episodic (no termination head)",
        ),
        ({"preset": "tdmpc2", "lam": 0.0, "model": {"termination_head": False}}, "tdmpc2 λ=0"),
    ],
)
def test_variant_label(config, label):
    base = {"preset": "pompc", "lam": 1.0, "prior": "learned", "prior_loss": "reverse"}
    assert variant_label({**base, **config}) == label


def test_script_command_quotes_arguments_for_a_shell():
    assert script_command("results_table.py", ["a b", "--title", "λ = 1"]) == (
        "python scripts/results_table.py 'a b' --title 'λ = 1'"
    )


def test_page_notes_from_a_file_or_inline_but_not_both(tmp_path):
    parser = argparse.ArgumentParser()
    add_page_arguments(parser)
    (tmp_path / "notes.md").write_text("\nSome *notes*.\n\n")
    assert (
        page_notes(parser.parse_args(["--notes-file", str(tmp_path / "notes.md")]))
        == "Some *notes*."
    )
    assert page_notes(parser.parse_args(["--notes", "inline"])) == "inline"
    with pytest.raises(SystemExit):
        parser.parse_args(["--notes", "inline", "--notes-file", "notes.md"])


def test_eval_table_has_the_seed_mean_at_every_evaluation(tmp_path):
    long = eval_curve(
        _fake_run(tmp_path / "a", [(1000, 0, 0, 1.0), (1000, 1, 0, 3.0), (2000, 0, 0, 8.0)])
    )
    short = eval_curve(_fake_run(tmp_path / "b", [(1000, 0, 0, -5.0)], preset="tdmpc2", lam=0.0))
    lines = eval_table([long, short]).splitlines()
    assert lines[0] == "| method | 1,000 | 2,000 |"
    assert lines[2:] == ["| pompc λ=1 learned/reverse | 2 | 8 |", "| tdmpc2 λ=0 | -5 |  |"]


def _git(repo, *args):
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, timeout=60)


def test_commit_stamp_ignores_the_page_being_written_but_not_other_changes(tmp_path):
    repo = tmp_path / "repo"
    (repo / "docs" / "page").mkdir(parents=True)
    (repo / "code.py").write_text("x = 1\n")
    (repo / "docs" / "page" / "README.md").write_text("old page\n")
    _git(repo, "init", "-q")
    _git(repo, "add", ".")
    _git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "init")
    (repo / "docs" / "page" / "README.md").write_text("new page\n")
    assert "uncommitted" not in git_commit(repo, ignore=repo / "docs" / "page")
    assert "uncommitted" in git_commit(repo)
    (repo / "code.py").write_text("x = 2\n")
    assert git_commit(repo, ignore=repo / "docs" / "page").endswith("(with uncommitted changes)")
    assert git_commit(repo, ignore=tmp_path / "elsewhere").endswith("(with uncommitted changes)")


def test_write_page_names_command_table_and_wall_times(tmp_path):
    run_dir = _fake_run(tmp_path / "run", [(10, 0, 0, 1.0)])
    saved = json.loads((run_dir / "config.json").read_text())
    saved["config"].update(model_size="tiny", steps=10, num_seeds=1)
    saved["agent"] = {
        "model": {"latent_dim": 16, "mlp_dim": 32},
        "planner": {"num_samples": 8, "num_elites": 2, "iterations": 1, "horizon": 3},
    }
    (run_dir / "config.json").write_text(json.dumps(saved))
    old_run = _fake_run(tmp_path / "old", [(10, 0, 0, 1.0)])  # saved before commits were recorded
    old_saved = {**saved, "commits": [None, "abc1234", "abc1234", "def5678"]}
    (old_run / "config.json").write_text(json.dumps(old_saved))
    page = tmp_path / "page" / "README.md"
    write_page(
        page,
        "T",
        "python scripts/x.py",
        ROOT,
        [run_dir, old_run],
        "| table |\n",
        ["curves.png"],
        "notes",
        {"a": 90.0},
    )
    text = page.read_text()
    assert text.startswith("# T\n\nCommand: `python scripts/x.py`\n")
    assert "model size `tiny` (latent 16, MLP 32)" in text and "10 agent steps" in text
    assert "notes\n" in text and "| table |" in text and "![curves](curves.png)" in text
    assert "| a | 1.5 min |" in text
    assert "- run: not recorded\n" in text
    assert "- old: not recorded, `abc1234`, `def5678`" in text


@pytest.mark.slow
def test_benchmark_learning_runs_a_grid_then_skips_it_when_finished(tmp_path):
    (tmp_path / "notes.md").write_text("These are the notes.\n")
    command = [
        sys.executable,
        str(ROOT / "scripts" / "benchmark_learning.py"),
        "--task",
        "jax/pendulum",
        "--out",
        "page",
        "--runs-dir",
        "runs",
        "--num-seeds",
        "2",
        "--variants",
        "tdmpc2",
        "pompc",
        "--lams",
        "0.5",
        "2",
        "--sweep",
        "--notes-file",
        "notes.md",
        "--every-eval",
        "--",
        *SMALL_FLAGS,
        "--no-aim",
        "--eval-policy",
    ]
    first = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr[-3000:]
    page = (tmp_path / "page" / "README.md").read_text()
    assert "--notes-file notes.md" in page and "These are the notes." in page
    assert (
        page.count("| tdmpc2 λ=0 |") == 2 and page.count("| pompc λ=1 learned/reverse |") == 2
    )  # finals, every eval
    assert (tmp_path / "page" / "curves.png").read_bytes()[:4] == b"\x89PNG"
    # --sweep: the --lams ran as one sweep; each λ's run is copied under its one-variant name.
    sweep = tmp_path / "runs" / "pompc-sweep-priorlearned-prior-lossreverse"
    assert (sweep / "sweep.json").exists() and "one sweep" in page
    for lam, name in (
        ("0.5", "pompc-lam0p5-priorlearned-prior-lossreverse"),
        ("2", "pompc-lam2-priorlearned-prior-lossreverse"),
    ):
        assert page.count(f"| pompc λ={lam} learned/reverse |") == 2
        copied = tmp_path / "page" / "runs" / name / "eval.csv"
        assert copied.read_text() == (sweep / f"lam-{lam}" / "eval.csv").read_text()
    for name in ("tdmpc2", "pompc"):
        copied = tmp_path / "page" / "runs" / name
        assert (copied / "eval.csv").read_text() == (
            tmp_path / "runs" / name / "eval.csv"
        ).read_text()
        assert float((copied / "wall_time_s.txt").read_text()) > 0
        assert (copied / "eval_policy.csv").exists()  # --eval-policy: the policy-only curve
    assert page.count("| tdmpc2 λ=0 · policy only |") == 2
    eval_mtime = (tmp_path / "runs" / "pompc" / "eval.csv").stat().st_mtime_ns

    again = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr[-3000:]
    assert (
        "[tdmpc2] already finished" in again.stdout and "[pompc] already finished" in again.stdout
    )
    assert f"[{sweep.name}] already finished" in again.stdout
    assert (tmp_path / "runs" / "pompc" / "eval.csv").stat().st_mtime_ns == eval_mtime

    # --page-only: the checkpoints gone, the page is rewritten from page/runs and trains nothing.
    shutil.rmtree(tmp_path / "runs")
    (tmp_path / "notes.md").write_text("Rewritten notes.\n")
    at = command.index("--")
    page_only = command[:at] + ["--page-only"] + command[at:]
    rewrite = subprocess.run(page_only, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert rewrite.returncode == 0, rewrite.stderr[-3000:]
    assert "[tdmpc2]" not in rewrite.stdout and not (tmp_path / "runs").exists()
    rewritten = (tmp_path / "page" / "README.md").read_text()
    assert "Rewritten notes." in rewritten and "--page-only" not in rewritten
    assert rewritten.count("| tdmpc2 λ=0 |") == 2
    v = page_only.index("--variants") + 1
    missing = subprocess.run(
        page_only[:v] + ["bmpc"] + page_only[v:],  # a variant never trained
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert missing.returncode != 0 and "without --page-only to train" in missing.stderr
