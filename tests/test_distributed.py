"""One run over two processes on 127.0.0.1 (`--distributed`, gloo collectives on CPU).

Every test starts `scripts/train.py` processes with a timeout and kills what is left of them.
The two-process runs share a compile cache, so that later runs of the same program load it
(single-process runs compile their own).
"""

import contextlib
import csv
import os
import pathlib
import select
import shutil
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
from test_training import CHUNK, SMALL_FLAGS


pytestmark = pytest.mark.slow

ROOT = pathlib.Path(__file__).resolve().parents[1]
TIMEOUT = 600


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def _processes(commands: list[list[str]], envs: list[dict]):
    """Start one process per command (own session each); kill every one that is left."""
    procs = [
        subprocess.Popen(
            [sys.executable, str(ROOT / "scripts" / "train.py"), *cmd],
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        for cmd, env in zip(commands, envs)
    ]
    try:
        yield procs
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            p.stdout.close()


def _job_env(port: int, process: int) -> dict:
    return {
        "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
        "JAX_NUM_PROCESSES": "2",
        "JAX_PROCESS_ID": str(process),
    }


def _distributed(args: list[str]) -> list[str]:
    """Run `args` as two processes of one job; their outputs (both must exit 0)."""
    port = _free_port()
    cmd = [*args, "--distributed"]
    with _processes([cmd, cmd], [_job_env(port, 0), _job_env(port, 1)]) as procs:
        outputs = [p.communicate(timeout=TIMEOUT)[0] for p in procs]
        for p, out in zip(procs, outputs):
            assert p.returncode == 0, out[-3000:]
    return outputs


def _single(args: list[str], devices: int = 1) -> str:
    flags = (
        {"XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"} if devices > 1 else {}
    )
    with _processes([args], [flags]) as (proc,):
        out = proc.communicate(timeout=TIMEOUT)[0]
        assert proc.returncode == 0, out[-3000:]
    return out


def _rows(path: pathlib.Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def _flags(task: str, cache: pathlib.Path | str) -> list[str]:
    flags = list(SMALL_FLAGS)
    flags[flags.index("--task") + 1] = task
    return ["pompc", *flags, "--num-seeds", "4", "--no-aim", "--compile-cache", str(cache)]


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> pathlib.Path:
    return tmp_path_factory.mktemp("xla-cache")


def test_two_processes_equal_one_on_a_jax_task_and_resume(tmp_path, cache):
    flags = _flags("jax/pendulum", cache)
    outputs = _distributed([*flags, "--run-dir", str(tmp_path / "two")])
    _single([*_flags("jax/pendulum", "none"), "--run-dir", str(tmp_path / "one")])
    two, one = tmp_path / "two", tmp_path / "one"
    # Written once, by process 0: complete tables, no duplicate rows, process 1 silent.
    assert [r["seed"] for r in _rows(two / "eval.csv")] == ["0", "1", "2", "3"] * 2
    assert sorted(p.name for p in (two / "checkpoints").iterdir()) == [
        f"step_{CHUNK:012d}.ckpt",
        f"step_{2 * CHUNK:012d}.ckpt",
    ]
    assert "final eval return" in outputs[0] and "eval at" not in outputs[1]
    # The first chunk's per-seed metrics equal the single-process run's (float tolerance).
    first_two = [r for r in _rows(two / "train.csv") if r["agent_step"] == str(CHUNK)]
    first_one = [r for r in _rows(one / "train.csv") if r["agent_step"] == str(CHUNK)]
    assert len(first_two) == len(first_one) == 4
    for a, b in zip(first_two, first_one):
        for key in a.keys() - {"steps_per_second"}:
            if a[key] or b[key]:
                np.testing.assert_allclose(float(a[key]), float(b[key]), rtol=1e-4, atol=1e-5)
    # Resume with the same two processes: the eval rows of the uninterrupted run.
    part = tmp_path / "part"
    shutil.copytree(two, part)
    (part / "checkpoints" / f"step_{2 * CHUNK:012d}.ckpt").unlink()
    _distributed(["--resume", str(part), "--compile-cache", str(cache)])
    assert _rows(part / "eval.csv") == _rows(two / "eval.csv")


def test_two_processes_step_their_own_simulators_on_dm_control(tmp_path, cache):
    """Each process simulates the runs of its device; the eval rows equal those of one
    process with the same two-device layout."""
    flags = _flags("dmc/cartpole-swingup", cache)
    _distributed([*flags, "--run-dir", str(tmp_path / "two")])
    one = [*_flags("dmc/cartpole-swingup", "none"), "--run-dir", str(tmp_path / "one")]
    _single(one, devices=2)
    assert _rows(tmp_path / "two" / "eval.csv") == _rows(tmp_path / "one" / "eval.csv")
    assert len(_rows(tmp_path / "two" / "eval.csv")) == 8


def test_a_dead_process_ends_the_other_within_a_minute(tmp_path, cache):
    flags = _flags("jax/pendulum", cache)
    steps = flags.index("--steps") + 1
    flags[steps] = "100000"
    cmd = [*flags, "--run-dir", str(tmp_path / "run"), "--distributed"]
    port = _free_port()
    with _processes([cmd, cmd], [_job_env(port, 0), _job_env(port, 1)]) as (main, other):
        # The job has formed once process 0 reports the run (waited for at most TIMEOUT s).
        deadline = time.monotonic() + TIMEOUT
        while True:
            left = deadline - time.monotonic()
            assert left > 0 and select.select([main.stdout], [], [], left)[0], "no run summary"
            line = main.stdout.readline()
            assert line, "process 0 ended before reporting the run"
            if line.startswith("pompc on jax/pendulum"):
                break
        os.killpg(other.pid, signal.SIGKILL)
        killed = time.monotonic()
        out = main.communicate(timeout=120)[0]
        assert time.monotonic() - killed < 60
    assert main.returncode != 0
    assert "another task died" in out or "heartbeat" in out, out[-2000:]
