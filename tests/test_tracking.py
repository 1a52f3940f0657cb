import io
import json
import os
import subprocess
import sys
import textwrap
import threading

import jax.numpy as jnp
import numpy as np
import pytest

from pompc_eqx.console import ProgressBar, format_eval_returns
from pompc_eqx.loggers import AimLogger
from pompc_eqx.tracking import AimTracker, CsvLog, CsvLogError, format_cell


COLUMNS = ("agent_step", "seed", "return", "note")


def test_csv_append_and_resume(tmp_path):
    path = tmp_path / "eval.csv"
    log = CsvLog(path, COLUMNS)
    assert path.read_text() == "agent_step,seed,return,note\n"
    log.append([{"agent_step": 100, "seed": 0, "return": 0.1}])
    log.append(
        [
            {"agent_step": 200, "seed": 0, "return": np.float32(0.1), "note": "a,b"},
            {"agent_step": 200, "seed": 1, "return": jnp.asarray(-1.5e-7)},
        ]
    )
    resumed = CsvLog(path, COLUMNS)
    assert resumed.rows == log.rows
    assert [r["return"] for r in resumed.rows] == ["0.1", "0.1", "-1.5e-07"]
    assert resumed.rows[1]["note"] == "a,b"
    with pytest.raises(ValueError, match="Unknown columns"):
        resumed.append([{"agent_step": 1, "typo": 2}])


def test_format_cell_round_trips():
    for x in (0.1, 1 / 3, -2.5e-300, 1e300, float("inf")):
        assert float(format_cell(x)) == x
    assert format_cell(float("nan")) == "nan"
    for x in np.asarray([0.1, 1 / 3, 3.4e38, 1e-45, 123456789], dtype=np.float32):
        assert np.float32(format_cell(x)) == x
        assert np.float32(format_cell(jnp.asarray(x))) == x
    assert format_cell(np.float32(0.1)) == "0.1"
    assert format_cell(np.int64(7)) == "7" and format_cell(True) == "True"
    assert format_cell(None) == ""


def test_csv_write_failure_leaves_old_file(tmp_path, monkeypatch):
    path = tmp_path / "train.csv"
    log = CsvLog(path, COLUMNS)
    log.append([{"agent_step": 1, "seed": 0, "return": 1.0}])
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("simulated crash")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        log.append([{"agent_step": 2, "seed": 0, "return": 2.0}])
    monkeypatch.undo()

    assert path.read_bytes() == before
    assert len(log) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.csv"]


def test_csv_header_mismatch(tmp_path):
    path = tmp_path / "eval.csv"
    CsvLog(path, COLUMNS)
    with pytest.raises(CsvLogError, match="has columns"):
        CsvLog(path, ("agent_step", "seed", "return"))


def test_csv_written_before_a_column_was_added_resumes(tmp_path):
    """A run begun by an earlier version (fewer columns) resumes: the added columns stay empty
    in its rows; a column the code no longer writes is still an error."""
    path = tmp_path / "train.csv"
    CsvLog(path, ("agent_step", "seed", "loss")).append([{"agent_step": 1, "seed": 0, "loss": 2.5}])
    log = CsvLog(path, ("agent_step", "gap", "seed", "loss"))
    assert log.rows == [{"agent_step": "1", "gap": "", "seed": "0", "loss": "2.5"}]
    log.append([{"agent_step": 2, "gap": 0.5, "seed": 0, "loss": 1.5}])
    assert path.read_text().splitlines() == ["agent_step,gap,seed,loss", "1,,0,2.5", "2,0.5,0,1.5"]
    with pytest.raises(CsvLogError, match="has columns"):
        CsvLog(path, ("agent_step", "seed", "loss"))


def test_csv_drop_after_moves_rows_aside(tmp_path):
    path = tmp_path / "eval.csv"
    log = CsvLog(path, COLUMNS)
    log.append({"agent_step": s, "seed": 0, "return": s / 10} for s in (100, 200, 300, 400))
    dropped = log.drop_after("agent_step", 200)

    assert [r["agent_step"] for r in dropped] == ["300", "400"]
    assert [r["agent_step"] for r in CsvLog(path, COLUMNS).rows] == ["100", "200"]
    (aside,) = tmp_path.glob("eval.dropped-*.csv")
    assert [r["agent_step"] for r in CsvLog(aside, COLUMNS).rows] == ["300", "400"]

    assert log.drop_after("agent_step", 1000) == []
    assert len(list(tmp_path.glob("eval.dropped-*.csv"))) == 1
    log.drop_after("agent_step", 0)
    assert len(list(tmp_path.glob("eval.dropped-*.csv"))) == 2
    with pytest.raises(ValueError, match="not a column"):
        log.drop_after("step", 0)


_READ_BACK = """
import json, sys
import aim

repo = aim.Repo(sys.argv[1])  # a fresh Repo object in a fresh process
run = repo.get_run(sys.argv[2])
points = []
for metric in run.metrics():
    steps, (values, epochs, _) = metric.data.items_list()
    points += [
        [metric.name, metric.context.to_dict(), step, value]
        for step, value in zip(steps, values)
    ]
print(json.dumps({
    "runs": [r.hash for r in repo.iter_runs()],
    "name": run.name,
    "experiment": run.experiment,
    "hparams": run["hparams"],
    "points": sorted(points, key=lambda p: (p[0], p[1]["seed"], p[2])),
}))
"""


def read_back(repo, run_hash):
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(_READ_BACK), str(repo), run_hash],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.slow
def test_aim_tracker_round_trip_and_resume(tmp_path):
    repo = tmp_path / "aim"
    hparams = {"lr": 3e-4, "model": {"width": 64}, "tags": ("a", "b")}
    threads_before = set(threading.enumerate())
    tracker = AimTracker(repo, "cartpole", "run-1", hparams)
    for step in range(3):
        skipped = tracker.track(
            {"return": np.array([step, 10.0 + step]), "loss": np.array([np.nan, 0.5])},
            step=step * 100,
            seeds=[3, 4],
            context={"subset": "eval"},
        )
        assert skipped == 1
    assert tracker.num_nonfinite == 3
    tracker.close()
    tracker.close()
    assert set(threading.enumerate()) <= threads_before

    data = read_back(repo, tracker.run_hash)
    assert data["runs"] == [tracker.run_hash]
    assert data["name"] == "run-1" and data["experiment"] == "cartpole"
    assert data["hparams"] == {"lr": 3e-4, "model": {"width": 64}, "tags": ["a", "b"]}
    ctx = lambda seed: {"seed": seed, "subset": "eval"}  # noqa: E731
    assert data["points"] == [
        ["loss", ctx(4), 0, 0.5],
        ["loss", ctx(4), 100, 0.5],
        ["loss", ctx(4), 200, 0.5],
        ["return", ctx(3), 0, 0.0],
        ["return", ctx(3), 100, 1.0],
        ["return", ctx(3), 200, 2.0],
        ["return", ctx(4), 0, 10.0],
        ["return", ctx(4), 100, 11.0],
        ["return", ctx(4), 200, 12.0],
    ]

    with AimTracker(repo, "cartpole", "run-1", hparams, run_hash=tracker.run_hash) as resumed:
        assert resumed.run_hash == tracker.run_hash
        resumed.track(
            {"return": jnp.array([3.0, 13.0])}, step=300, seeds=[3, 4], context={"subset": "eval"}
        )
    data = read_back(repo, tracker.run_hash)
    assert data["runs"] == [tracker.run_hash]
    returns = [p for p in data["points"] if p[0] == "return"]
    assert [p[2:] for p in returns] == [
        [0, 0.0],
        [100, 1.0],
        [200, 2.0],
        [300, 3.0],
        [0, 10.0],
        [100, 11.0],
        [200, 12.0],
        [300, 13.0],
    ]
    assert set(threading.enumerate()) <= threads_before


def test_aim_tracker_errors(tmp_path):
    with pytest.raises(ValueError, match="not in the repo"):
        AimTracker(tmp_path / "aim", "e", "r", {}, run_hash="0123456789abcdef01234567")
    with AimTracker(tmp_path / "aim", "e", "r", {}) as tracker:
        with pytest.raises(ValueError, match="one value per seed"):
            tracker.track({"x": np.zeros(3)}, step=0, seeds=[0, 1])


def test_format_eval_returns():
    assert format_eval_returns([-153.4, -160.2, -171.0]) == "eval[-153,-160,-171]"
    assert format_eval_returns(np.array([0.5123, 2.0])) == "eval[0.512,2]"
    many = format_eval_returns(np.arange(8) * 10.0)
    assert many == "eval 35±23[0,70]"


def test_progress_bar_writes_to_a_stream():
    out = io.StringIO()
    bar = ProgressBar(1000, num_seeds=3, initial=100, file=out)
    bar.update(200)
    bar.set_eval([-153.4, -160.2, -171.0])
    assert bar.postfix == "eval[-153,-160,-171]"
    bar.write("checkpoint saved")
    bar.update(1000)
    bar.close()
    bar.close()
    text = out.getvalue()
    assert "checkpoint saved\n" in text
    assert "eval[-153,-160,-171]" in text
    assert "agent steps/s" in text and "1.00k/1.00k" in text
    with pytest.raises(ValueError, match="Expected 3 returns"):
        bar.set_eval([1.0])


def test_progress_bar_disabled_still_writes_messages():
    out = io.StringIO()
    with ProgressBar(10, num_seeds=1, disable=True, file=out) as bar:
        bar.update(5)
        bar.set_eval([1.0])
        bar.write("hello")
    assert out.getvalue() == "hello\n"


@pytest.mark.slow
def test_aim_logger_keeps_one_run_per_seed_and_resumes_them(tmp_path):
    repo = tmp_path / "aim"
    rows = [
        {"agent_step": 16, "env_step": 16, "seed": s, "loss": v, "pi_loss": None}
        for s, v in ((3, 0.5), (4, 1.5))
    ]
    logger = AimLogger(repo, "exp", "pompc", {"lam": 1.0}, seeds=[3, 4], group="run-a")
    logger.log_train(rows, 16)
    logger.log_eval(np.array([[1.0, 3.0], [10.0, 20.0]]), 16)
    logger.close()
    hashes = logger.run_hashes
    assert len(set(hashes)) == 2
    for seed, run_hash, (loss, ret) in zip((3, 4), hashes, ((0.5, 2.0), (1.5, 15.0))):
        data = read_back(repo, run_hash)
        assert sorted(data["runs"]) == sorted(hashes)
        assert data["name"] == f"pompc seed {seed}" and data["experiment"] == "exp"
        assert data["hparams"] == {"lam": 1.0, "group": "run-a", "seed": seed}
        assert data["points"] == [
            ["loss", {"seed": seed, "subset": "train"}, 16, loss],
            ["return", {"seed": seed, "subset": "eval"}, 16, ret],
        ]
    resumed = AimLogger(repo, "exp", "pompc", {"lam": 1.0}, [3, 4], "run-a", run_hashes=hashes)
    assert resumed.run_hashes == hashes
    resumed.close()
