"""How often an episodic run's termination head fires, on real and on imagined transitions.

    python scripts/termination_rates.py RUN_DIR [--skip 5000] [--samples 16]

For every seed of the run's latest checkpoint, over its replay rows after the first `--skip`:
the share of stored transitions that terminated; the share the head calls terminal one model
step after the stored action, and the share of the terminal ones it catches (recall); and, from
every 10th of those states, `--samples` imagined H-step rollouts with actions drawn from the
stored planner Gaussian (clipped to [-1, 1]): the share of rollouts the head calls ended at
each step. A head that fires where the planner looks and not where episodes end cannot help.
"""

import argparse
import dataclasses
import json
import pathlib

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr

from pompc_eqx.checkpoint import latest_checkpoint, load_checkpoint
from pompc_eqx.config import config_from_dict
from pompc_eqx.experiment import Trainer


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("run_dir", type=pathlib.Path)
    parser.add_argument("--skip", type=int, default=5000, help="replay rows left out (seed phase)")
    parser.add_argument("--samples", type=int, default=16, help="imagined rollouts per state")
    args = parser.parse_args()
    saved = json.loads((args.run_dir / "config.json").read_text())["config"]
    cfg = dataclasses.replace(config_from_dict(saved), aim=False, progress=False)
    if not (cfg.episodic and cfg.model.termination_head):
        raise SystemExit(f"error: {args.run_dir} has no termination head (needs --episodic)")
    trainer = Trainer(cfg)
    path = latest_checkpoint(args.run_dir / "checkpoints")
    if path is None:
        raise SystemExit(f"error: no checkpoint in {args.run_dir / 'checkpoints'}")
    state, meta, _ = load_checkpoint(path, trainer.init_state())
    horizon = cfg.planner.horizon
    print(f"{args.run_dir} at agent step {meta['step']}")
    for s in range(cfg.num_seeds):
        pick = lambda x: x[s] if eqx.is_array(x) else x
        nets = jax.tree.map(pick, state.seeds.agent.nets)
        buf = jax.tree.map(pick, state.seeds.buffer)
        # Transitions: the first H rows of every window of H + 1 rows inside one episode.
        real = sum(jnp.roll(buf.valid_start, j) for j in range(horizon)) > 0
        rows = jnp.nonzero(real)[0]
        rows = rows[rows >= args.skip]
        z_next = jax.vmap(nets.next)(jax.vmap(nets.encode)(buf.obs[rows]), buf.action[rows])
        ended = jax.vmap(nets.termination.ended)(z_next)
        terminated = buf.terminated[rows].astype(jnp.float32)
        caught = jnp.sum(ended * terminated) / jnp.maximum(jnp.sum(terminated), 1.0)

        def imagine(row, key):
            z, out = nets.encode(buf.obs[row]), []
            for k in jr.split(key, horizon):
                noise = jr.normal(k, buf.plan_mean[row].shape)
                z = nets.next(z, jnp.clip(buf.plan_mean[row] + buf.plan_std[row] * noise, -1, 1))
                out.append(nets.termination.ended(z))
            return jnp.cumsum(jnp.stack(out)) > 0

        starts = rows[::10]
        keys = jr.split(jr.key(s), (starts.shape[0], args.samples))
        imagined = jax.jit(jax.vmap(jax.vmap(imagine, in_axes=(None, 0))))(starts, keys)
        per_step = " / ".join(f"{float(v):.4f}" for v in imagined.mean(axis=(0, 1)))
        print(
            f"seed {s}: {rows.shape[0]} transitions, terminated {float(terminated.mean()):.4f}; head"
            f" fires after the stored action {float(ended.mean()):.4f}, on terminal ones"
            f" {float(caught):.3f}; imagined rollouts ended by step 1..{horizon}: {per_step}"
        )


if __name__ == "__main__":
    main()
