"""Evaluate a trained run from its checkpoint, and optionally record a video of one episode.

    python scripts/evaluate.py RUN_DIR                         # --episodes per seed, planner in eval mode
    python scripts/evaluate.py SWEEP_DIR                       # every run of a lambda sweep
    python scripts/evaluate.py RUN_DIR --episodes 20 --checkpoint RUN_DIR/checkpoints/step_000000050000.ckpt
    python scripts/evaluate.py RUN_DIR --episodes 50 --returns-csv returns.csv   # every episode's return
    python scripts/evaluate.py RUN_DIR --noisy   # the planner's action with its sigma_0 noise, as in training
    MUJOCO_GL=egl python scripts/evaluate.py RUN_DIR --video cartpole.mp4 --video-seed 0

Videos need a host-simulator task (dmc/ or hb/) and an OpenGL backend: on a machine without a
display use MUJOCO_GL=egl (default here) or osmesa. `.mp4` (H.264, through the imageio-ffmpeg
dependency) and `.gif` are written; anything that would stop the video (task, file name, size,
encoder, renderer) is reported in one line before the evaluation starts.
"""

import argparse
import csv
import dataclasses
import json
import os
import pathlib
import sys


os.environ.setdefault("MUJOCO_GL", "egl")  # before anything imports MuJoCo's renderer
# Frames are rendered from this thread only. dm_control's default hands GL calls to a thread
# pool, which Python shuts down before dm_control's exit handler frees the context through it
# (a "cannot schedule new futures after shutdown" traceback at exit with osmesa).
os.environ.setdefault("DISABLE_RENDER_THREAD_OFFLOADING", "1")

import equinox as eqx  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import jax.random as jr  # noqa: E402

from pompc_eqx.agent import act  # noqa: E402
from pompc_eqx.analysis.video import render_problem, video_problem, write_video  # noqa: E402
from pompc_eqx.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint  # noqa: E402
from pompc_eqx.config import config_from_dict  # noqa: E402
from pompc_eqx.experiment import RESUMABLE, Trainer  # noqa: E402
from pompc_eqx.files import atomic_write  # noqa: E402
from pompc_eqx.loop import make_evaluate  # noqa: E402
from pompc_eqx.planner import shift_warm_start  # noqa: E402
from pompc_eqx.sweep import SWEEP_FILE, Sweep  # noqa: E402


def record(
    trainer: Trainer, agents, seed_index: int, path: pathlib.Path, size: tuple[int, int], fps: int
) -> tuple[float, int]:
    """Run one eval-mode episode of every seed on the evaluation env; film `seed_index`."""
    env = trainer.eval_env
    cfg = trainer.agent_cfg

    @eqx.filter_jit
    def act_all(agents, obs, warm, keys):
        def one(agent, o, w, k):
            p = act(agent, o, w, cfg=cfg, eval_mode=True, key=k)
            return p.action, shift_warm_start(p.mean)

        return eqx.filter_vmap(one)(agents, obs, warm, keys)

    step = eqx.filter_jit(env.step)
    keys = jax.vmap(lambda k: jr.fold_in(k, 7))(trainer.keys)
    env_state, obs = env.reset(keys)
    warm = jnp.zeros((len(trainer.seeds), cfg.planner.horizon, cfg.action_dim))
    frames, total = [env.render(seed_index, *size)], 0.0
    for t in range(env.spec.episode_length):
        keys = jax.vmap(lambda k: jr.fold_in(k, t))(keys)
        action, warm = act_all(agents, obs, warm, keys)
        env_state, ts = step(env_state, action)
        obs = ts.obs
        total += float(ts.reward[seed_index])
        frames.append(env.render(seed_index, *size))
        if bool(ts.done[seed_index]):
            break
    write_video(path, frames, fps)
    return total, len(frames)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run_dir", type=pathlib.Path)
    parser.add_argument(
        "--checkpoint",
        type=pathlib.Path,
        default=None,
        help="default: the latest in RUN_DIR/checkpoints",
    )
    parser.add_argument("--episodes", type=int, default=10, help="evaluation episodes per seed")
    parser.add_argument(
        "--video", type=pathlib.Path, default=None, help="write one episode to this .mp4/.gif"
    )
    parser.add_argument(
        "--video-seed", type=int, default=0, help="index of the seed to film (0-based)"
    )
    parser.add_argument(
        "--size", type=int, nargs=2, default=(240, 320), metavar=("HEIGHT", "WIDTH")
    )
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument(
        "--noisy",
        action="store_true",
        help="execute the planner's action with its sigma_0 noise, as in training (default: "
        "eval mode, without it; the same start states either way)",
    )
    parser.add_argument(
        "--returns-csv",
        type=pathlib.Path,
        default=None,
        help="also write every episode's return to this CSV (columns seed, episode, return)",
    )
    args = parser.parse_args()
    manifest = args.run_dir / SWEEP_FILE
    if not manifest.exists():
        manifest = args.run_dir / "config.json"
    try:
        saved_file = json.loads(manifest.read_text())
    except FileNotFoundError:
        print(
            f"error: {args.run_dir} has no config.json (expected a run directory of scripts/train.py)",
            file=sys.stderr,
        )
        return 2
    if saved_file.get("sweep"):
        print(
            f"error: {args.run_dir} is one run of a sweep: evaluate the sweep, {args.run_dir.parent}",
            file=sys.stderr,
        )
        return 2
    saved = saved_file["config"]
    if args.video is not None:
        size = tuple(args.size)
        problem = video_problem(args.video, saved["task"], size)
        runs = saved["num_seeds"] * len(saved_file.get("values", [0]))
        if problem is None and not 0 <= args.video_seed < runs:
            problem = f"--video-seed must be in 0..{runs - 1} (the index of a seed, or of a run of a sweep)"
        problem = problem or render_problem(saved["task"], size)
        if problem is not None:
            print(f"error: {problem}", file=sys.stderr)
            return 2
    cfg = dataclasses.replace(
        config_from_dict(saved), eval_episodes=args.episodes, aim=False, progress=False
    )
    sweep = None
    if manifest.name == SWEEP_FILE:
        sweep = Sweep(cfg, saved_file["option"], tuple(saved_file["values"]))
    trainer = Trainer(cfg, sweep=sweep)
    path = args.checkpoint or latest_checkpoint(args.run_dir / "checkpoints")
    try:
        if path is None:
            raise CheckpointError(f"no checkpoint in {args.run_dir / 'checkpoints'}")
        state, meta, _ = load_checkpoint(
            path, trainer.init_state(), expected_config=saved, ignore_keys=RESUMABLE
        )
    except CheckpointError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    state = trainer.shard(state)
    noisy = None
    if args.noisy:
        noisy = eqx.filter_jit(
            make_evaluate(trainer.agent_cfg, trainer.eval_env, args.episodes, noisy=True)
        )
    returns = trainer.evaluate(state, noisy)
    mode = "with sigma_0 noise" if args.noisy else "eval mode"
    print(
        f"{cfg.task} {cfg.preset} at agent step {meta['step']} ({path.name}), {args.episodes} episodes per seed ({mode}):"
    )
    for i, label in enumerate(trainer.labels):
        print(f"  seed {label}: {returns[i].mean():.1f} ± {returns[i].std():.1f}")
    print(f"  mean over {'runs' if sweep else 'seeds'}: {returns.mean(axis=1).mean():.1f}")
    if args.returns_csv is not None:
        with atomic_write(args.returns_csv, "w") as f:
            writer = csv.writer(f)
            writer.writerow(["seed", "episode", "return"])
            for i, label in enumerate(trainer.labels):
                writer.writerows([label, j, float(r)] for j, r in enumerate(returns[i]))
        print(f"wrote {args.returns_csv}: {returns.size} episodes")
    if args.video is not None:
        total, num_frames = record(
            trainer, state.seeds.agent, args.video_seed, args.video, tuple(args.size), args.fps
        )
        print(
            f"wrote {args.video}: {num_frames} frames, seed {trainer.labels[args.video_seed]}, return {total:.1f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
