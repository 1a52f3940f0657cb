"""Interrupts, preemption and faults of a training run: bounded, tiny configurations."""

import csv
import dataclasses
import errno
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import jax
import numpy as np
import pytest
from test_training import CHUNK, SMALL_FLAGS, small

from pompc_eqx import cli, driver
from pompc_eqx.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from pompc_eqx.compiling import ChunkPlan
from pompc_eqx.config import ConfigError
from pompc_eqx.experiment import Trainer, run
from pompc_eqx.outputs import code_commit
from pompc_eqx.run_dir import lock
from pompc_eqx.signals import Interrupted


ROOT = pathlib.Path(__file__).resolve().parents[1]
HALF = CHUNK // 2  # the length of each compiled call of a tiny run (see driver._CALL_STEPS)


def _rows(path: pathlib.Path) -> list[dict]:
    with open(path) as f:
        return list(csv.DictReader(f))


def _arrays(tree) -> list[np.ndarray]:
    leaves = jax.tree.leaves(tree)
    return [
        np.asarray(
            jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x
        )
        for x in leaves
        if hasattr(x, "dtype")
    ]


def assert_same_state(a, b) -> None:
    for x, y in zip(_arrays(a), _arrays(b), strict=True):
        assert x.dtype == y.dtype and x.tobytes() == y.tobytes()


@pytest.mark.slow
def test_results_do_not_depend_on_how_a_window_is_split():
    trainer = Trainer(small(num_seeds=2))
    whole, metrics, _ = trainer.chunk_fn(CHUNK)(trainer.init_state())
    state = trainer.init_state()
    pieces = []
    for _ in range(2):
        state, piece, _ = trainer.chunk_fn(HALF)(state)
        pieces.append(jax.device_get(piece))
    assert_same_state(whole, state)
    for name, values in jax.device_get(metrics).items():
        split = np.concatenate([p[name] for p in pieces])
        assert values.tobytes() == split.tobytes(), name


@pytest.mark.slow
def test_sigterm_mid_window_then_resume_is_bit_identical(tmp_path, monkeypatch):
    cfg = small(num_seeds=2, checkpoint_every=CHUNK, run_dir=tmp_path / "full")
    full = run(cfg)
    check = driver.check_finite

    def terminate_after_step_24(metrics, first_step, seeds, skipped_in_burst):
        check(metrics, first_step, seeds, skipped_in_burst)
        if first_step == CHUNK:  # the call over steps 16..24, inside the second window
            signal.raise_signal(signal.SIGTERM)

    monkeypatch.setattr(driver, "check_finite", terminate_after_step_24)
    part = dataclasses.replace(cfg, run_dir=tmp_path / "part")
    with pytest.raises(Interrupted, match=f"interrupted at agent step {CHUNK + HALF}") as err:
        run(part)
    assert err.value.exit_code == 143
    assert (
        latest_checkpoint(tmp_path / "part" / "checkpoints").name
        == f"step_{CHUNK + HALF:012d}.ckpt"
    )
    assert (tmp_path / "part" / f"checkpoints/step_{CHUNK:012d}.ckpt").exists()
    monkeypatch.undo()

    resumed = run(dataclasses.replace(cfg, run_dir=None, resume=tmp_path / "part"))
    assert _rows(resumed / "eval.csv") == _rows(full / "eval.csv")
    like = Trainer(cfg).init_state()
    final = f"checkpoints/step_{2 * CHUNK:012d}.ckpt"
    assert_same_state(
        load_checkpoint(full / final, like)[0], load_checkpoint(resumed / final, like)[0]
    )
    saved = json.loads((resumed / "config.json").read_text())
    assert len(saved["resume_commands"]) == 1
    assert saved["commits"] == [code_commit()] * 2  # the code of both invocations


def test_a_run_directory_has_one_owner(tmp_path):
    handle = lock(tmp_path)
    with pytest.raises(
        ConfigError, match=f"in use by another training process \\(pid {os.getpid()}\\)"
    ):
        lock(tmp_path)
    handle.close()  # as when the owner dies: the OS releases the lock
    lock(tmp_path).close()


def _own_cache(cwd) -> dict[str, str]:
    """The environment of a child this test may kill: its own compile cache. JAX writes cache
    entries in place, so a child killed mid-write can leave a truncated entry, which would
    crash whichever process of the suite reads it next."""
    return {**os.environ, "JAX_COMPILATION_CACHE_DIR": str(pathlib.Path(cwd) / "xla-cache")}


def _train(*args, cwd) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "train.py"), *args],
        cwd=cwd,
        env=_own_cache(cwd),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _read_until(proc: subprocess.Popen, text: str, timeout: float) -> list[str]:
    """Lines of the output up to the first one containing `text` (kills the child on timeout)."""
    lines, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if text in line:
            return lines
    proc.kill()
    raise AssertionError(f"no {text!r} in {''.join(lines)[-3000:]}")


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_cli_stops_on_a_signal_with_a_checkpoint_and_resumes(signum, tmp_path):
    flags = list(SMALL_FLAGS)
    flags[flags.index("--steps") + 1] = str(100 * CHUNK)
    with _train("pompc", *flags, "--no-aim", "--run-dir", "run", cwd=tmp_path) as proc:
        try:
            _read_until(proc, f"eval at agent step {CHUNK}:", timeout=600)
            sent = time.monotonic()
            proc.send_signal(signum)
            out, _ = proc.communicate(timeout=60)
            seconds = time.monotonic() - sent
        finally:
            proc.kill()
    assert proc.returncode == 128 + signum, out[-3000:]
    assert "Traceback" not in out
    last = out.strip().splitlines()[-1]
    assert last.startswith("interrupted at agent step ") and "--resume run" in last, last
    assert seconds < 30, seconds
    step = int(last.split()[4].rstrip(";"))
    run_dir = tmp_path / "run"
    assert latest_checkpoint(run_dir / "checkpoints").name == f"step_{step:012d}.ckpt"
    end = (step // CHUNK + 1) * CHUNK
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "train.py"),
            "--resume",
            "run",
            "--steps",
            str(end),
        ],
        cwd=tmp_path,
        env=_own_cache(tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert {int(r["agent_step"]) for r in _rows(run_dir / "eval.csv")} == set(
        range(CHUNK, end + 1, CHUNK)
    )
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["command"][1] == "pompc" and saved["resume_commands"][0][1:] == [
        "--resume",
        "run",
        "--steps",
        str(end),
    ]


@pytest.mark.slow
def test_a_second_interrupt_quits_at_once(tmp_path):
    with _train("pompc", *SMALL_FLAGS, "--no-aim", "--run-dir", "run", cwd=tmp_path) as proc:
        try:
            _read_until(proc, "compiling chunk", timeout=300)
            proc.send_signal(signal.SIGINT)
            time.sleep(0.5)
            proc.send_signal(signal.SIGINT)
            out, _ = proc.communicate(timeout=30)
        finally:
            proc.kill()
    assert proc.returncode == 130 and "Traceback" not in out, out[-3000:]


@pytest.mark.slow
def test_resume_remembers_its_configuration_and_refuses_other_changes(tmp_path, capsys):
    run(small(steps=CHUNK, run_dir=tmp_path / "run"))
    code = cli.main(["--resume", str(tmp_path / "run"), "--lam", "2.0", "--seed", "3"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "lam: saved 1.0, now 2.0" in err[0] and "seed: saved 0, now 3" in err[0]
    assert cli.main(["--resume", str(tmp_path / "run"), "--steps", str(2 * CHUNK)]) == 0
    assert {r["agent_step"] for r in _rows(tmp_path / "run" / "eval.csv")} == {
        str(CHUNK),
        str(2 * CHUNK),
    }


@pytest.mark.slow
def test_starting_over_needs_overwrite(tmp_path, capsys):
    run_dir = tmp_path / "run"
    args = ["pompc", *SMALL_FLAGS, "--steps", str(CHUNK), "--no-aim", "--run-dir", str(run_dir)]
    assert cli.main(args) == 0
    shutil.rmtree(run_dir / "checkpoints")  # as if stopped before its first checkpoint
    assert cli.main(args) == 2
    assert "has no checkpoint yet; start over with" in capsys.readouterr().err
    assert cli.main(["--resume", str(run_dir)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert cli.main([*args, "--overwrite"]) == 0
    assert cli.main([*args, "--overwrite"]) == 2
    assert "give --overwrite twice" in capsys.readouterr().err
    assert cli.main([*args, "--overwrite", "--overwrite"]) == 0


@pytest.mark.slow
def test_corrupt_checkpoint_gives_one_line_naming_the_file(tmp_path, capsys):
    run_dir = run(small(steps=CHUNK, run_dir=tmp_path / "run"))
    path = latest_checkpoint(run_dir / "checkpoints")
    path.write_bytes(path.read_bytes()[:-1000])
    assert cli.main(["--resume", str(run_dir), "--steps", str(2 * CHUNK)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(path) in err[0] and "corrupt or truncated" in err[0]


@pytest.mark.slow
def test_full_disk_gives_one_line_and_keeps_what_was_written(tmp_path, capsys, monkeypatch):
    save = driver.save_checkpoint
    fsync = os.fsync

    def disk_full_at_the_second_checkpoint(directory, step, *args, **kwargs):
        if step == 2 * CHUNK:

            def full(fd):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

            monkeypatch.setattr(os, "fsync", full)
        try:
            return save(directory, step, *args, **kwargs)
        finally:
            monkeypatch.setattr(os, "fsync", fsync)

    monkeypatch.setattr(driver, "save_checkpoint", disk_full_at_the_second_checkpoint)
    run_dir = tmp_path / "run"
    args = [
        "pompc",
        *SMALL_FLAGS,
        "--checkpoint-every",
        str(CHUNK),
        "--no-aim",
        "--run-dir",
        str(run_dir),
    ]
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "No space left on device" in err[0] and "step_" in err[0], err
    names = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert names == [f"step_{CHUNK:012d}.ckpt"]
    like = Trainer(small()).init_state()
    assert load_checkpoint(run_dir / "checkpoints", like, expected_config=None)[1]["step"] == CHUNK
    assert {r["agent_step"] for r in _rows(run_dir / "eval.csv")} == {str(CHUNK), str(2 * CHUNK)}


_KILLED_WHILE_SAVING = """
import sys, time
import jax.numpy as jnp
from pompc_eqx import checkpoint

checkpoint.save_checkpoint(sys.argv[1], 1, {"x": jnp.arange(4.0)}, metadata={"step": 1})
write = checkpoint._write_checkpoint

def slow_write(f, header, hosts, host_state):
    f.write(b"half a checkpoint")
    f.flush()
    print("writing", flush=True)
    time.sleep(60)

checkpoint._write_checkpoint = slow_write
checkpoint.save_checkpoint(sys.argv[1], 2, {"x": jnp.arange(4.0) + 1}, metadata={"step": 2})
"""


def test_sigkill_while_saving_keeps_the_previous_checkpoint(tmp_path):
    script = [sys.executable, "-c", textwrap.dedent(_KILLED_WHILE_SAVING), str(tmp_path)]
    with subprocess.Popen(script, stdout=subprocess.PIPE, text=True) as proc:
        try:
            assert proc.stdout.readline().strip() == "writing"
        finally:
            proc.kill()
    assert latest_checkpoint(tmp_path).name == f"step_{1:012d}.ckpt"
    restored, meta, _ = load_checkpoint(tmp_path, {"x": np.zeros(4, np.float32)})
    assert meta == {"step": 1} and restored["x"].tolist() == [0.0, 1.0, 2.0, 3.0]
    assert any(p.name.endswith(".tmp") for p in tmp_path.iterdir())
    save_checkpoint(tmp_path, 3, {"x": np.zeros(4, np.float32)}, metadata={})
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir()), "stale temporary kept"


def test_call_length_is_one_divisor_of_the_window_until_calls_take_too_long():
    plan = ChunkPlan(window=1000, first_steps=8, target_seconds=10.0)
    assert [plan.next_length(s) for s in (0, 8, 992)] == [8, 8, 8]
    plan.measured(8, 0.08)  # fast calls: no second length (it would cost a compile)
    plan.measured(8, 0.08)
    assert plan.next_length(16) == 8
    assert plan.next_length(13) == 3, "a step off the grid (resume, changed window) realigns"

    slow = ChunkPlan(window=16, first_steps=12, target_seconds=10.0)
    assert slow.next_length(0) == 8, "a divisor of the window"
    slow.measured(8, 100.0)  # the first call of a length pays for loading: not used
    assert slow.length == 8
    slow.measured(8, 40.0)  # one slow call may be a suspended process: wait for another
    assert slow.length == 8
    slow.measured(8, 48.0)  # the faster of the two, 5 s per step: calls of 2 steps fit
    assert slow.length == 2 and slow.next_length(8) == 2
    slow.measured(2, 30.0)
    slow.measured(2, 30.0)
    slow.measured(2, 30.0)  # even one step is over the target: one step per call
    assert slow.length == 1
    slow.measured(1, 1000.0)
    slow.measured(1, 1000.0)
    assert slow.length == 1

    paused = ChunkPlan(window=1000, first_steps=8, target_seconds=10.0)
    for seconds in (1.0, 1.0, 1200.0, 1.0, 1.0, 1200.0):  # Ctrl-Z / sleep between fast calls
        paused.measured(8, seconds)
    assert paused.length == 8, "isolated slow calls (a suspended process) keep the length"
