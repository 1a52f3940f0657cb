"""The scan-compiled, seed-vmapped training loop and its host driver (tiny configurations)."""

import csv
import dataclasses
import json
import os
import pathlib
import shutil
import subprocess
import sys

import equinox as eqx
import jax
import numpy as np
import pytest

from pompc_eqx.agent import metrics_skipped_in_pretraining
from pompc_eqx.checkpoint import CheckpointError
from pompc_eqx.compiling import tasks_in_flight
from pompc_eqx.config import TrainConfig, config_from_dict
from pompc_eqx.experiment import (
    ConfigError,
    NonFiniteError,
    Trainer,
    check_finite,
    config_dict,
    run,
)
from pompc_eqx.presets import PRESETS


ROOT = pathlib.Path(__file__).resolve().parents[1]
# First chunk: 12 random steps, a burst of 12 updates, then 4 planned steps with one update
# each (reanalyze on the 2nd and 4th). Later, discrete MPPI choices (top-k elites, the sampled
# elite) amplify float-rounding differences chaotically, so equality checks stop here.
CHUNK = 16
SEED_STEPS = 12


def small(preset: str = "pompc", **overrides) -> TrainConfig:
    """A configuration that compiles and runs in seconds: tiny networks, few MPPI samples,
    updates (burst + regular, with reanalyze) inside the first chunk."""
    base = PRESETS[preset][1]
    cfg = dataclasses.replace(
        base,
        task="jax/pendulum",
        model_size="tiny",
        steps=2 * CHUNK,
        seed_steps=SEED_STEPS,
        eval_every=CHUNK,
        eval_episodes=1,
        chunk_steps=CHUNK,
        aim=False,
        progress=False,
        planner=dataclasses.replace(
            base.planner, num_samples=32, num_elites=4, num_pi_trajs=4, iterations=2
        ),
        buffer=dataclasses.replace(
            base.buffer, batch_size=16, reanalyze_batch=4, reanalyze_interval=2
        ),
    )
    return dataclasses.replace(cfg, **overrides)


SMALL_FLAGS = [
    "--task",
    "jax/pendulum",
    "--model-size",
    "tiny",
    "--steps",
    str(2 * CHUNK),
    "--seed-steps",
    str(SEED_STEPS),
    "--eval-every",
    str(CHUNK),
    "--eval-episodes",
    "1",
    "--chunk-steps",
    str(CHUNK),
    "--no-progress",
    "--planner.num-samples",
    "32",
    "--planner.num-elites",
    "4",
    "--planner.num-pi-trajs",
    "4",
    "--planner.iterations",
    "2",
    "--buffer.batch-size",
    "16",
    "--buffer.reanalyze-batch",
    "4",
    "--buffer.reanalyze-interval",
    "2",
]


def first_chunk(cfg: TrainConfig, devices=None) -> dict[str, np.ndarray]:
    trainer = Trainer(cfg, devices=devices)
    _, metrics, _ = trainer.chunk_fn(CHUNK)(trainer.init_state())
    return jax.device_get(metrics)


@pytest.fixture(scope="module")
def batch_of_four() -> dict[str, np.ndarray]:
    return first_chunk(small(num_seeds=4, seed=0))


@pytest.mark.slow
def test_seed_gives_same_metrics_alone_or_in_a_batch(batch_of_four):
    alone = first_chunk(small(num_seeds=1, seed=2))
    assert np.isfinite(alone["world_model_loss"]).sum() > 0, "no update ran in the first chunk"
    for name, values in alone.items():
        np.testing.assert_allclose(
            values[:, 0],
            batch_of_four[name][:, 2],
            rtol=1e-4,
            atol=1e-5,
            equal_nan=True,
            err_msg=name,
        )


def test_different_seeds_differ(batch_of_four):
    losses = batch_of_four["world_model_loss"]
    rows = losses[np.isfinite(losses).all(axis=1)]
    assert len(rows) > 0
    assert len({tuple(np.round(r, 6)) for r in rows.T}) == 4


@pytest.mark.slow
def test_chunk_compiles_once_over_several_chunks():
    trainer = Trainer(small(num_seeds=2))
    state = trainer.init_state()
    fn = trainer.chunk_fn(CHUNK)
    for _ in range(3):
        state, metrics, finite = fn(state)
    assert int(state.step) == 3 * CHUNK
    assert trainer.num_traces(CHUNK) == 1
    assert np.asarray(finite).all()


@pytest.mark.slow
def test_sharded_seeds_match_single_device():
    """Two CPU devices (forced in a subprocess): per-seed metrics of the first chunk match."""
    code = f"""
import sys, numpy as np, jax
sys.path.insert(0, {str(ROOT / "tests")!r})
from test_training import first_chunk, small
assert len(jax.devices()) == 2, jax.devices()
cfg = small(num_seeds=2)
one = first_chunk(cfg, devices=jax.devices()[:1])
two = first_chunk(cfg, devices=jax.devices())
# One seed per device vs two on one: other batch shapes, other matmul kernels, other rounding,
# which 16 updates grow (1.5e-4 relative on a gradient norm at the last step).
for name in one:
    np.testing.assert_allclose(one[name], two[name], rtol=1e-3, atol=1e-5, equal_nan=True, err_msg=name)
losses = one["world_model_loss"][-1]
assert abs(losses[0] - losses[1]) > 1e-2 * abs(losses).max(), losses
print("OK", sorted(one)[:3])
"""
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=900
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "OK" in out.stdout


def _eval_rows(run_dir: pathlib.Path) -> list[dict]:
    with open(run_dir / "eval.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_resume_is_bit_identical(tmp_path):
    cfg = small(num_seeds=2, checkpoint_every=CHUNK, run_dir=tmp_path / "full")
    full = run(cfg)
    assert not tasks_in_flight(), "a finished run leaves no compile or call running"
    assert sorted(p.name for p in (full / "checkpoints").iterdir()) == [
        f"step_{CHUNK:012d}.ckpt",
        f"step_{2 * CHUNK:012d}.ckpt",
    ]
    # Interrupted copy: only the first checkpoint survives; its eval rows past it get dropped.
    part = tmp_path / "part"
    shutil.copytree(full, part)
    (part / "checkpoints" / f"step_{2 * CHUNK:012d}.ckpt").unlink()
    resumed = run(dataclasses.replace(cfg, run_dir=None, resume=part))
    assert _eval_rows(resumed) == _eval_rows(full)
    assert [r["agent_step"] for r in _eval_rows(full)] == [str(CHUNK)] * 2 + [str(2 * CHUNK)] * 2
    dropped = list(part.glob("eval.dropped-*.csv"))
    assert len(dropped) == 1, "rows past the checkpoint must be kept aside, not lost"


def _without_termination_head(cfg) -> dict:
    """`config_dict` as it was before `model.termination_head` existed."""
    data = config_dict(cfg)
    del data["model"]["termination_head"]
    return data


@pytest.mark.slow
def test_resume_errors(tmp_path, monkeypatch):
    with pytest.raises(CheckpointError, match="config.json"):
        run(small(resume=tmp_path))
    cfg = small(run_dir=tmp_path / "r", steps=CHUNK, eval_every=CHUNK)
    # Written as by an older version (config.json and checkpoint without a setting added
    # since): it resumes, the new setting taking its default.
    with monkeypatch.context() as m:
        m.setattr("pompc_eqx.driver.config_dict", _without_termination_head)
        m.setattr("pompc_eqx.outputs.config_dict", _without_termination_head)
        run(cfg)
    saved = json.loads((tmp_path / "r" / "config.json").read_text())["config"]
    assert "termination_head" not in saved["model"]
    run(dataclasses.replace(cfg, run_dir=None, resume=tmp_path / "r", steps=2 * CHUNK))
    assert [r["agent_step"] for r in _eval_rows(tmp_path / "r")][-1] == str(2 * CHUNK)
    with pytest.raises(ConfigError, match="already holds a run"):
        run(cfg)
    with pytest.raises(CheckpointError, match="lam"):
        run(dataclasses.replace(cfg, run_dir=None, resume=tmp_path / "r", lam=2.0))
    for ckpt in (tmp_path / "r" / "checkpoints").iterdir():
        ckpt.write_bytes(ckpt.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="corrupt|truncated"):
        run(dataclasses.replace(cfg, run_dir=None, resume=tmp_path / "r"))
    assert (tmp_path / "r" / "eval.csv").exists()


@pytest.mark.slow
def test_nan_guard_names_term_seed_and_step_and_keeps_checkpoint(tmp_path):
    # A NaN entropy weight poisons only the policy loss, which is not trained in the burst:
    # the first chunk finishes (and is checkpointed), the second stops at its first update.
    base = small(
        num_seeds=2, seed_steps=CHUNK, steps=3 * CHUNK, checkpoint_every=CHUNK, eval_every=3 * CHUNK
    )
    cfg = dataclasses.replace(
        base, run_dir=tmp_path, loss=dataclasses.replace(base.loss, entropy_coef=float("nan"))
    )
    with pytest.raises(NonFiniteError) as err:
        run(cfg)
    message = str(err.value)
    assert "pi_" in message and "seed 0" in message and f"agent step {CHUNK + 1}" in message
    assert f"step_{CHUNK:012d}.ckpt" in message
    assert (tmp_path / "checkpoints" / f"step_{CHUNK:012d}.ckpt").exists()


@pytest.mark.parametrize("preset", ["tdmpc2", "bmpc", "pompc"])
def test_metrics_skipped_in_pretraining_are_named_by_the_agent(preset):
    """The burst skips the prior's fit and (unless TD-MPC2) the policy's step: the metrics of
    exactly those steps are the ones NaN there by design."""
    cfg = small(preset).agent_config(3, 1, 200)
    skipped = metrics_skipped_in_pretraining(cfg)
    policy = {"pi_loss", "pi_grad_norm", "pi_entropy", "pi_scaled_entropy", "pi_std"}
    expected = {
        "tdmpc2": set(),
        "bmpc": policy | {"kl_mean", "kl_std", "prior_std", "prior_mean_gap"},
        "pompc": policy
        | {"pi_q", "kl_mean", "kl_std", "prior_std", "prior_mean_gap"}
        | {"prior_loss", "prior_kl", "prior_grad_norm"},
    }[preset]
    assert skipped == expected


def test_check_finite_skips_placeholders_and_reports_first_bad_value():
    steps, seeds = 5, 2
    metrics = {
        "world_model_loss": np.full((steps, seeds), np.nan),
        "pi_loss": np.full((steps, seeds), np.nan),
        "lam": np.full((steps, seeds), np.inf),
        "num_updates": np.zeros((steps, seeds)),
        "pretrain": np.zeros((steps, seeds)),
        "episode_return": np.full((steps, seeds), np.nan),
    }
    check_finite(metrics, 100, [7, 8], {"pi_loss"})  # no update ran: NaNs are placeholders
    metrics["num_updates"][3:] = 1
    metrics["world_model_loss"][3:] = 1.0
    metrics["pi_loss"][3:] = 1.0
    check_finite(metrics, 100, [7, 8], {"pi_loss"})  # lam = inf (BMPC) is legitimate
    metrics["pi_loss"][4, 1] = np.inf
    with pytest.raises(NonFiniteError, match="pi_loss .* seed 8 at agent step 105"):
        check_finite(metrics, 100, [7, 8], {"pi_loss"})
    # An action is taken before the update of its step: it is named first.
    metrics["nonfinite_action"] = np.zeros((steps, seeds), np.int32)
    metrics["nonfinite_action"][4, 1] = 1
    with pytest.raises(NonFiniteError, match="non-finite action for seed 8 at agent step 105"):
        check_finite(metrics, 100, [7, 8], {"pi_loss"})


def _cli(*args, cwd):
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "train.py"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=900,
    )


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["tdmpc2", "bmpc", "pompc"])
def test_cli_smoke_run_of_each_preset(preset, tmp_path):
    aim = [] if preset == "pompc" else ["--no-aim"]
    out = _cli(preset, *SMALL_FLAGS, "--num-seeds", "2", "--run-dir", "run", *aim, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    run_dir = tmp_path / "run"
    rows = _eval_rows(run_dir)
    assert list(rows[0]) == ["agent_step", "env_step", "seed", "episode", "return"]
    assert {(r["agent_step"], r["seed"]) for r in rows} == {
        (str(s), d) for s in (CHUNK, 2 * CHUNK) for d in ("0", "1")
    }
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["config"]["preset"] == preset and saved["config"]["num_seeds"] == 2
    with open(run_dir / "train.csv") as f:
        train = list(csv.DictReader(f))
    assert len(train) == 4 and {"world_model_loss", "pi_loss", "s_q", "episode_return"} <= set(
        train[0]
    )
    assert all(
        np.isfinite(float(r["world_model_loss"]))
        for r in train
        if r["agent_step"] == str(2 * CHUNK)
    )
    if preset == "pompc":
        assert (run_dir / ".aim").is_dir()
        assert {"kl_mean", "kl_std", "prior_loss", "qlam_loss"} <= set(train[0])


@pytest.mark.parametrize(
    "args, expected",
    [
        (["pompc", "--task", "dmc/cartpole-swingupp"], "cartpole-swingup"),
        (["bmpc", "--prior-loss", "forward"], "--prior-loss applies only to --prior learned"),
        (["pompc", "--lam", "-1"], "--lam must be >= 0"),
        (["pompc", "--model.latent-dim", "20"], "multiple of"),
        (["pompc", "--steps", "10", "--seed-steps", "20"], "--steps"),
    ],
)
def test_cli_rejects_bad_input_with_one_line(args, expected, tmp_path):
    out = _cli(*args, "--no-aim", cwd=tmp_path)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    assert expected in lines[0]


@pytest.mark.parametrize("preset", ["tdmpc2", "bmpc", "pompc"])
def test_config_survives_its_json_round_trip(preset):
    """config.json -> TrainConfig gives back an equal, hashable config (tuples stay tuples)."""
    cfg = PRESETS[preset][1]
    back = config_from_dict(json.loads(json.dumps(config_dict(cfg))))
    assert back == cfg
    assert hash(back.planner) == hash(cfg.planner)
    # Settings missing from an older config.json take their defaults.
    older = config_dict(cfg)
    del older["model"]["termination_head"], older["eval_policy"]
    assert config_from_dict(older) == dataclasses.replace(
        cfg, model=dataclasses.replace(cfg.model, termination_head=True), eval_policy=False
    )


def test_cli_help_documents_options(tmp_path):
    out = _cli("pompc", "--help", cwd=tmp_path)
    assert out.returncode == 0
    for flag in (
        "--task",
        "--num-seeds",
        "--steps",
        "--seed",
        "--run-dir",
        "--model-size",
        "--lam",
        "--prior",
        "--prior-loss",
        "--seed-steps",
        "--eval-every",
        "--eval-episodes",
        "--resume",
        "--planner.num-samples",
        "--loss.rho",
        "--optim.enc-lr-scale",
        "--buffer.reanalyze-interval",
    ):
        assert flag in out.stdout, flag


@pytest.mark.slow
def test_loop_trains_on_dm_control_with_two_seeds():
    """A few hundred agent steps of dmc/cartpole-swingup (host simulator, one batched callback
    per step) inside the compiled loop: updates run and the model's losses go down."""
    cfg = small(task="dmc/cartpole-swingup", num_seeds=2, seed_steps=100, steps=300)
    trainer = Trainer(cfg)
    state = trainer.init_state()
    fn = trainer.chunk_fn(100)
    history = []
    for _ in range(3):
        state, metrics, finite = fn(state)
        history.append(jax.device_get(metrics))
        assert np.asarray(finite).all()
    assert int(state.step) == 300 and int(state.updates) == 200
    assert trainer.num_traces(100) == 1
    burst = history[0]["reward_loss"][99]  # last of the 100 pretraining updates
    late = np.nanmean(history[2]["reward_loss"][-20:], axis=0)
    assert np.all(np.isfinite(late)) and np.all(late < burst), (burst, late)
    # The two seeds are independent simulators: their observations differ.
    obs = np.asarray(state.seeds.obs)
    assert not np.allclose(obs[0], obs[1])


@pytest.mark.slow
def test_nonfinite_action_never_reaches_the_simulator():
    """Seed 1's encoder is NaN, so its planned actions are NaN: MuJoCo gets 0 instead (it would
    raise PhysicsError mid-chunk), seed 0 is unaffected, and the host check names seed 1."""
    cfg = small(task="dmc/cartpole-swingup", num_seeds=2, seed_steps=SEED_STEPS)
    trainer = Trainer(cfg)
    state = trainer.init_state()
    encoder = lambda s: s.seeds.agent.nets.encoder
    poisoned = jax.tree.map(
        lambda x: x.at[1].set(np.nan) if eqx.is_inexact_array(x) else x, encoder(state)
    )
    state = eqx.tree_at(encoder, state, poisoned)
    state, metrics, finite = trainer.chunk_fn(CHUNK)(state)
    metrics = jax.device_get(metrics)
    flags = metrics["nonfinite_action"]
    assert flags[:SEED_STEPS].sum() == 0, "random seed-phase actions are finite"
    assert flags[SEED_STEPS:, 1].all() and not flags[:, 0].any()
    assert np.isfinite(np.asarray(state.seeds.obs)).all()
    assert list(np.asarray(finite)) == [True, False]
    with pytest.raises(NonFiniteError, match="seed 1 at agent step"):
        check_finite(metrics, 0, [0, 1], metrics_skipped_in_pretraining(trainer.agent_cfg))


def test_forward_prior_loss_refuses_tanh_squashed_prior():
    cfg = small(
        prior_loss="forward",
        policy=dataclasses.replace(PRESETS["pompc"][1].policy, distribution="tanh-gaussian"),
    )
    with pytest.raises(ConfigError, match="clipped-gaussian"):
        Trainer(cfg)


def _evaluate_script(*args, cwd):
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "evaluate.py"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "MUJOCO_GL": "egl"},
    )


@pytest.mark.slow
def test_evaluate_script_reproduces_the_runs_final_evaluation(tmp_path):
    run_dir = run(small(num_seeds=2, eval_episodes=2, run_dir=tmp_path / "run"))
    out = _evaluate_script(
        str(run_dir), "--episodes", "2", "--returns-csv", "returns.csv", cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr[-3000:]
    final = [r for r in _eval_rows(run_dir) if r["agent_step"] == str(2 * CHUNK)]
    with open(tmp_path / "returns.csv", newline="") as f:
        episodes = list(csv.DictReader(f))
    assert [(r["seed"], r["episode"]) for r in episodes] == [
        (s, e) for s in ("0", "1") for e in ("0", "1")
    ]
    for seed in (0, 1):
        mean = np.mean([float(r["return"]) for r in final if r["seed"] == str(seed)])
        assert f"seed {seed}: {mean:.1f}" in out.stdout, (mean, out.stdout)
        written = [float(r["return"]) for r in episodes if r["seed"] == str(seed)]
        assert np.mean(written) == pytest.approx(mean, abs=0.05)
    noisy = _evaluate_script(str(run_dir), "--episodes", "2", "--noisy", cwd=tmp_path)
    assert noisy.returncode == 0, noisy.stderr[-3000:]
    assert "(with sigma_0 noise)" in noisy.stdout and "seed 1: " in noisy.stdout
    missing = _evaluate_script(str(tmp_path / "nowhere"), cwd=tmp_path)
    assert missing.returncode == 2 and "config.json" in missing.stderr


@pytest.mark.slow
def test_evaluate_script_writes_a_video_of_a_dm_control_run(tmp_path):
    from pompc_eqx.envs.registry import make_env

    env = make_env("dmc/cartpole-swingup", 1)
    try:
        env.reset(jax.random.key(0)[None])
        env.render(0, 24, 32)
    except Exception as err:  # no OpenGL backend on this machine
        pytest.skip(f"MuJoCo cannot render here ({type(err).__name__}: {err})")
    run_dir = run(
        small(task="dmc/cartpole-swingup", seed_steps=CHUNK, steps=CHUNK, run_dir=tmp_path / "run")
    )
    out = _evaluate_script(
        str(run_dir), "--episodes", "1", "--video", "ep.gif", "--size", "48", "64", cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr[-3000:]
    import imageio.v2 as imageio

    assert "501 frames" in out.stdout  # the first observation + 500 agent steps
    frames = imageio.mimread(tmp_path / "ep.gif", memtest=False)  # GIF merges identical frames
    assert len(frames) > 400 and frames[0].shape[:2] == (48, 64)
    assert np.asarray(frames[0]).std() > 1.0, "blank frames"


@pytest.mark.slow
def test_agent_learns_the_target_probe_end_to_end():
    """jax/probe-target: reward 1 - mean((a - target)^2) with the target in the observation.
    A random policy scores about 3.3 per 10-step episode, the optimum is 10; after 600 updates
    with the test's coarse planner (32 samples, 2 iterations) the agent reaches about 8."""
    from pompc_eqx.envs import PROBE_OPTIMAL_RETURNS

    cfg = small(
        "tdmpc2",
        task="jax/probe-target",
        num_seeds=2,
        seed_steps=200,
        steps=800,
        eval_every=800,
        eval_episodes=5,
    )
    trainer = Trainer(cfg)
    state = trainer.init_state()
    fn = trainer.chunk_fn(200)
    for _ in range(4):
        state, _, _ = fn(state)
    returns = trainer.evaluate(state)
    assert returns.mean() > 0.7 * PROBE_OPTIMAL_RETURNS["jax/probe-target"], returns
