"""Videos from `scripts/evaluate.py`: .mp4 and .gif of a dm_control run written without a
warning, and every reason a video cannot be written reported in one line before any work."""

import json
import os
import pathlib
import subprocess
import sys

import jax
import numpy as np
import pytest
from test_training import CHUNK, small

from pompc_eqx.analysis.video import video_problem
from pompc_eqx.experiment import run


ROOT = pathlib.Path(__file__).resolve().parents[1]
SIZE = (48, 64)


def _evaluate(*args, cwd):
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "evaluate.py"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")},
    )


@pytest.mark.parametrize(
    "name, task, size, problem",
    [
        ("ep.mp4", "dmc/cartpole-swingup", SIZE, None),
        ("ep.gif", "hb/h1hand-walk-v0", (45, 61), None),
        ("ep.mp4", "jax/pendulum", SIZE, "jax/pendulum has no renderer"),
        ("ep.avi", "dmc/cartpole-swingup", SIZE, "ending in .mp4 or .gif"),
        ("ep.mp4", "dmc/cartpole-swingup", (45, 64), "even height and width, not 45 x 64"),
        ("missing/ep.gif", "dmc/cartpole-swingup", SIZE, "does not exist"),
    ],
)
def test_video_problem_names_what_to_change(tmp_path, name, task, size, problem):
    found = video_problem(tmp_path / name, task, size)
    assert found is None if problem is None else problem in found and "\n" not in found


def test_a_video_of_a_jax_task_is_refused_in_one_line_before_any_work(tmp_path):
    # No checkpoint: had the script gone on to build and restore the agent, it would fail there.
    (tmp_path / "run").mkdir()
    config = {"config": {"task": "jax/pendulum", "num_seeds": 1}}
    (tmp_path / "run" / "config.json").write_text(json.dumps(config))
    out = _evaluate("run", "--video", "ep.mp4", cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.splitlines() == [
        "error: jax/pendulum has no renderer: videos need a dmc/ or hb/ task (run without --video)"
    ]
    assert out.stdout == ""


@pytest.fixture(scope="module")
def dmc_run(tmp_path_factory):
    from pompc_eqx.envs.registry import make_env

    env = make_env("dmc/cartpole-swingup", 1)
    try:
        env.reset(jax.random.key(0)[None])
        env.render(0, *SIZE)
    except Exception as err:  # no OpenGL backend on this machine
        pytest.skip(f"MuJoCo cannot render here ({type(err).__name__}: {err})")
    run_dir = tmp_path_factory.mktemp("dmc") / "run"
    return run(small(task="dmc/cartpole-swingup", seed_steps=CHUNK, steps=CHUNK, run_dir=run_dir))


def _decode_mp4(path: pathlib.Path) -> np.ndarray:
    """Every frame of an mp4, decoded by ffmpeg itself (imageio's mp4 readers leave pipes of
    the ffmpeg process open, which the test settings turn into errors)."""
    import imageio_ffmpeg

    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-i", str(path), "-f", "rawvideo"]
    out = subprocess.run(
        [*command, "-pix_fmt", "rgb24", "-"], capture_output=True, check=True, timeout=120
    )
    return np.frombuffer(out.stdout, np.uint8).reshape(-1, *SIZE, 3)


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".mp4", ".gif"])
def test_evaluate_writes_a_readable_video_without_warnings(dmc_run, tmp_path, suffix):
    import imageio.v3 as iio

    path = tmp_path / f"episode{suffix}"
    size = [str(s) for s in SIZE]
    out = _evaluate(
        str(dmc_run), "--episodes", "1", "--video", path.name, "--size", *size, cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr[-3000:]
    # Neither JAX's os.fork warning (ffmpeg started from a threaded process) nor a traceback
    # from dm_control's renderer at exit.
    assert out.stderr == ""
    assert "501 frames" in out.stdout  # the first observation + 500 agent steps
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no partial file left
    if suffix == ".mp4":
        frames = _decode_mp4(path)
        assert frames.shape == (501, *SIZE, 3)
    else:
        frames = iio.imread(path)
        # GIF merges identical consecutive frames and adds up their display times.
        assert frames.shape[1:] == (*SIZE, 3) and 400 < len(frames) <= 501
        durations = [iio.immeta(path, index=i)["duration"] for i in range(len(frames))]
        assert sum(durations) == 501 * 30
    assert frames[0].std() > 1.0, "blank frames"
