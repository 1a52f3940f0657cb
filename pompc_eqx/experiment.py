"""Host side of a training run: everything between compiled chunks.

`Trainer` builds the environments, the compiled chunk and evaluation functions and the
(optionally device-sharded) loop state. `run` drives it: one chunk of agent steps at a time
(compiled once), then logging (CSV + Aim), evaluation, checkpointing and the progress bar.
No host<->device copies happen inside a chunk except the host-simulator callback.
"""

import dataclasses
import datetime
import json
import math
import pathlib
import sys
import time
from collections.abc import Callable

import equinox as eqx
import jax
import jax.random as jr
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from .buffer import buffer_bytes, default_capacity
from .checkpoint import (
    CheckpointError,
    atomic_write,
    config_differences,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    to_json,
)
from .config import AgentConfig, TrainConfig
from .envs.base import EnvSpec
from .envs.registry import make_env, task_spec
from .loop import (
    LoopState,
    Schedule,
    all_finite,
    init_loop,
    make_evaluate,
    make_train_chunk,
    seed_keys,
)
from .objectives import objective_class
from .priors import PRIORS
from .tracking import AimTracker, CsvLog, ProgressBar
from .world_model import count_params


EVAL_COLUMNS = ("agent_step", "env_step", "seed", "episode", "return")
# Options a resumed run may change; everything else must match the saved config.
RESUMABLE = (
    "steps",
    "eval_every",
    "eval_episodes",
    "checkpoint_every",
    "chunk_steps",
    "run_dir",
    "resume",
    "progress",
    "aim",
    "aim_repo",
    "experiment",
    "buffer.memory_budget_gb",
)
# Update metrics that are NaN by design during the pretraining burst (not trained there).
_POLICY_PREFIXES = ("pi_", "prior_", "kl_")
# Per-step metrics that are bookkeeping, not update terms (not logged as window means).
_BOOKKEEPING = ("episode_return", "num_updates", "pretrain", "nonfinite_action")


class ConfigError(ValueError):
    """An invalid configuration; the message is one line saying what is valid."""


class NonFiniteError(RuntimeError):
    """A loss or parameter became NaN or infinite."""


def validate(cfg: TrainConfig, spec: EnvSpec) -> None:
    """Reject invalid option combinations with one clear line each."""
    p = cfg.planner
    lam = cfg.lam
    if lam != "auto" and not lam >= 0:
        raise ConfigError(f"--lam must be >= 0, inf or auto (got {lam})")
    if cfg.num_seeds < 1:
        raise ConfigError(f"--num-seeds must be >= 1 (got {cfg.num_seeds})")
    if cfg.prior not in PRIORS:
        raise ConfigError(f"unknown --prior {cfg.prior!r}; choose one of: {', '.join(PRIORS)}")
    if cfg.prior == "replay" and cfg.prior_loss == "forward":
        raise ConfigError(
            "--prior-loss applies only to --prior learned (the replay prior is not fitted)"
        )
    if cfg.prior_loss == "forward" and cfg.policy.distribution == "tanh-gaussian":
        raise ConfigError(
            "--prior-loss forward needs --policy.distribution clipped-gaussian: the forward KL from the"
            " planner's Gaussian (mass at the action bounds) to a tanh-squashed prior has no usable estimate"
        )
    if lam == "auto" and not cfg.loss.kl_target > 0:
        raise ConfigError(
            f"--loss.kl-target must be > 0 with --lam auto (got {cfg.loss.kl_target})"
        )
    if not 0 < p.num_elites <= p.num_samples or not 0 <= p.num_pi_trajs <= p.num_samples:
        raise ConfigError(
            "planner needs 0 < num_elites <= num_samples and 0 <= num_pi_trajs <= num_samples "
            f"(got elites {p.num_elites}, pi trajectories {p.num_pi_trajs}, samples {p.num_samples})"
        )
    if spec.episode_length <= p.horizon:
        raise ConfigError(
            f"episodes of {spec.name} ({spec.episode_length} steps) are not longer than the horizon {p.horizon}"
        )
    seed_steps = cfg.resolved_seed_steps(spec.episode_length)
    if seed_steps <= p.horizon + 1:
        raise ConfigError(
            f"--seed-steps must exceed horizon + 1 = {p.horizon + 1} (got {seed_steps})"
        )
    if cfg.steps < seed_steps:
        raise ConfigError(f"--steps ({cfg.steps}) must be at least --seed-steps ({seed_steps})")
    for name in ("eval_every", "chunk_steps", "eval_episodes"):
        if getattr(cfg, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1")
    if cfg.checkpoint_every is not None and cfg.checkpoint_every < 1:
        raise ConfigError("--checkpoint-every must be >= 1")
    if cfg.buffer.reanalyze_batch > cfg.buffer.batch_size:
        raise ConfigError("--buffer.reanalyze-batch must not exceed --buffer.batch-size")
    model = cfg.model.resolve(cfg.model_size)
    if model.latent_dim % model.simnorm_dim:
        raise ConfigError(
            f"--model.latent-dim ({model.latent_dim}) must be a multiple of --model.simnorm-dim ({model.simnorm_dim})"
        )


def config_dict(cfg: TrainConfig) -> dict:
    """The config as plain JSON-able data (paths as strings, inf as a string)."""
    return json.loads(to_json(dataclasses.asdict(cfg)))


class Trainer:
    """Compiled training and evaluation for one `TrainConfig` (all seeds in one process).

    **Arguments:**
    - `cfg`: the run's configuration (validated here).
    - `devices`: devices to shard the seed axis over (default: all visible devices that
      divide `num_seeds`).
    """

    def __init__(self, cfg: TrainConfig, devices: list | None = None):
        self.cfg = cfg
        self.spec = task_spec(cfg.task)
        validate(cfg, self.spec)
        self.agent_cfg: AgentConfig = cfg.agent_config(
            self.spec.obs_dim, self.spec.action_dim, self.spec.episode_length
        )
        capacity = cfg.buffer.capacity or default_capacity(cfg.steps, self.spec.episode_length)
        self.schedule = Schedule(
            seed_steps=cfg.resolved_seed_steps(self.spec.episode_length),
            capacity=capacity,
            reanalyze_interval=cfg.buffer.reanalyze_interval
            if objective_class(self.agent_cfg).reads_planner_gaussians
            else 0,
            reanalyze_batch=cfg.buffer.reanalyze_batch,
        )
        self.buffer_gb = (
            cfg.num_seeds * buffer_bytes(capacity, self.spec.obs_dim, self.spec.action_dim) / 1e9
        )
        if self.buffer_gb > cfg.buffer.memory_budget_gb:
            raise ConfigError(
                f"replay buffers need {self.buffer_gb:.2f} GB for {cfg.num_seeds} seeds x {capacity} rows, "
                f"over --buffer.memory-budget-gb {cfg.buffer.memory_budget_gb}; lower --buffer.capacity or raise the budget"
            )
        self.env = make_env(cfg.task, cfg.num_seeds)
        self.eval_env = make_env(cfg.task, cfg.num_seeds)
        self.keys = seed_keys(cfg.seed, cfg.num_seeds)
        self.devices = devices if devices is not None else _usable_devices(cfg.num_seeds)
        self.mesh = Mesh(np.array(self.devices), ("seed",))
        self._chunks: dict[int, tuple[Callable, Callable]] = {}
        self._evaluate = eqx.filter_jit(
            make_evaluate(self.agent_cfg, self.eval_env, cfg.eval_episodes)
        )

    @property
    def seeds(self) -> list[int]:
        return [self.cfg.seed + i for i in range(self.cfg.num_seeds)]

    def init_state(self) -> LoopState:
        state = eqx.filter_jit(init_loop, donate="none")(
            self.agent_cfg, self.schedule, self.env, self.keys
        )
        return self.shard(state)

    def shard(self, state: LoopState) -> LoopState:
        """Place per-seed arrays along the device mesh; counters are replicated."""
        batched = NamedSharding(self.mesh, PartitionSpec("seed"))
        replicated = NamedSharding(self.mesh, PartitionSpec())
        put = lambda sharding: lambda x: jax.device_put(x, sharding) if eqx.is_array(x) else x
        return eqx.tree_at(
            lambda s: (s.seeds, s.env_state, s.step, s.updates),
            state,
            (
                jax.tree.map(put(batched), state.seeds),
                jax.tree.map(put(batched), state.env_state),
                jax.device_put(state.step, replicated),
                jax.device_put(state.updates, replicated),
            ),
        )

    def chunk_fn(self, num_steps: int) -> Callable:
        """The compiled chunk of `num_steps` agent steps (compiled once per length)."""
        if num_steps not in self._chunks:
            chunk = make_train_chunk(self.agent_cfg, self.schedule, self.env, num_steps)

            def with_health(state: LoopState):
                state, metrics = chunk(state)
                finite = eqx.filter_vmap(lambda a: all_finite(a.nets))(state.seeds.agent)
                return state, metrics, finite

            # Counted (not limited) so that `num_traces` can show a chunk compiles once.
            counted = eqx.debug.assert_max_traces(with_health, max_traces=None)
            self._chunks[num_steps] = (eqx.filter_jit(counted, donate="all"), counted)
        return self._chunks[num_steps][0]

    def num_traces(self, num_steps: int) -> int:
        """How many times the chunk of `num_steps` steps has been traced (compiled)."""
        return eqx.debug.get_num_traces(self._chunks[num_steps][1])

    def evaluate(self, state: LoopState) -> np.ndarray:
        """Eval-mode returns of shape (seed, episode) at the state's current step."""
        step = int(state.step)
        keys = jax.vmap(lambda k: jr.fold_in(jr.fold_in(k, 3), step))(self.keys)
        return np.asarray(self._evaluate(state.seeds.agent, keys).returns)


def _usable_devices(num_seeds: int) -> list:
    """The largest prefix of the visible devices whose count divides the number of seeds."""
    devices = jax.devices()
    count = max(n for n in range(1, len(devices) + 1) if num_seeds % n == 0)
    return devices[:count]


def _chunk_length(cfg: TrainConfig, start: int) -> int:
    every = cfg.checkpoint_every or cfg.eval_every
    return math.gcd(cfg.chunk_steps, cfg.eval_every, every, cfg.steps, start or cfg.steps)


def check_finite(metrics: dict[str, np.ndarray], first_step: int, seeds: list[int]) -> None:
    """Raise `NonFiniteError` naming the term, seed and agent step of the first bad value.

    Metrics are (step, seed). Steps without an update are NaN placeholders and skipped; in the
    pretraining burst only the world-model terms are trained and checked. A non-finite action
    (flagged by `nonfinite_action`; the simulator got 0 instead) counts as a bad value too.
    """
    num_learn = metrics["num_updates"][:, 0]
    burst = metrics["pretrain"][:, 0] > 0
    found = []  # (step index, order within the step, seed index, name) of each term's first bad value
    for name, values in metrics.items():
        if name == "nonfinite_action":
            bad, order = values > 0, 0  # the action is taken before the step's update
        elif name in _BOOKKEEPING or name == "plan_std":
            continue
        else:
            checked = (num_learn > 0) & ~(burst & name.startswith(_POLICY_PREFIXES))
            bad = (np.isnan(values) if name == "lam" else ~np.isfinite(values)) & checked[:, None]
            order = 1
        if bad.any():
            t, s = np.argwhere(bad)[0]
            found.append((t, order, s, name))
    if found:
        t, _, s, name = min(found)
        what = "action" if name == "nonfinite_action" else f"{name} ({metrics[name][t, s]})"
        raise NonFiniteError(
            f"non-finite {what} for seed {seeds[s]} at agent step {first_step + t + 1}"
        )


def _window_rows(
    metrics: dict[str, np.ndarray], step: int, env_step: int, seeds: list[int], seconds: float
) -> list[dict]:
    """One row per seed: window means of every update metric and finished-episode returns."""
    rows = []
    steps = metrics["episode_return"].shape[0]
    for i, seed in enumerate(seeds):
        row = {"agent_step": step, "env_step": env_step, "seed": seed}
        returns = metrics["episode_return"][:, i]
        finished = returns[np.isfinite(returns)]
        row["episodes"] = int(finished.size)
        row["episode_return"] = float(finished.mean()) if finished.size else None
        row["steps_per_second"] = steps / seconds
        for name, values in sorted(metrics.items()):
            if name in _BOOKKEEPING:
                continue
            column = values[:, i]
            column = column[~np.isnan(column)]
            row[name] = float(column.mean()) if column.size else None
        rows.append(row)
    return rows


def _default_run_dir(cfg: TrainConfig) -> pathlib.Path:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return pathlib.Path("runs") / cfg.task.replace("/", "-") / f"{cfg.preset}-{stamp}"


def _prepare_run_dir(cfg: TrainConfig) -> tuple[pathlib.Path, dict | None]:
    """The run directory and, when resuming, its saved config file contents."""
    if cfg.resume is not None:
        run_dir = cfg.resume
        config_file = run_dir / "config.json"
        if not config_file.exists():
            raise CheckpointError(
                f"{run_dir} has no config.json: --resume expects a run directory written by scripts/train.py"
            )
        return run_dir, json.loads(config_file.read_text())
    run_dir = cfg.run_dir or _default_run_dir(cfg)
    if (run_dir / "config.json").exists():
        raise ConfigError(
            f"{run_dir} already holds a run; continue it with --resume {run_dir} or choose another --run-dir"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir, None


def _log(progress: ProgressBar | None, message: str) -> None:
    if progress is not None:
        progress.write(message)
    else:
        print(message, flush=True)


def run(cfg: TrainConfig, *, devices: list | None = None) -> pathlib.Path:
    """Train `cfg.num_seeds` seeds of one configuration; returns the run directory.

    Writes `config.json`, `eval.csv`, `train.csv`, `checkpoints/` and an Aim run into the run
    directory. With `cfg.resume` it continues the run found there from its latest checkpoint.
    """
    trainer = Trainer(cfg, devices=devices)  # validates before anything is written
    run_dir, saved = _prepare_run_dir(cfg)
    spec, seeds = trainer.spec, trainer.seeds
    now = config_dict(cfg)
    if saved is not None:
        diffs = config_differences(saved["config"], now, RESUMABLE)
        if diffs:
            raise CheckpointError(
                f"--resume {run_dir}: the command's config differs from the saved run: "
                + "; ".join(diffs)
            )
    ckpt_dir = run_dir / "checkpoints"
    state = trainer.init_state()
    host_blob = None
    start = 0
    if saved is not None:
        path = latest_checkpoint(ckpt_dir)
        if path is None:
            raise CheckpointError(
                f"--resume {run_dir}: no checkpoint in {ckpt_dir}; nothing to resume from"
            )
        state, meta, host_blob = load_checkpoint(
            path, state, expected_config=saved["config"], ignore_keys=RESUMABLE
        )
        state = trainer.shard(state)
        trainer.env.load_host_state(host_blob)
        start = int(meta["step"])
    info = {
        "config": now,
        "task": dataclasses.asdict(spec),
        "agent": json.loads(to_json(dataclasses.asdict(trainer.agent_cfg))),
        "seeds": seeds,
        "seed_steps": trainer.schedule.seed_steps,
        "buffer_capacity": trainer.schedule.capacity,
        "command": sys.argv,
        "aim_run_hash": None if saved is None else saved.get("aim_run_hash"),
    }

    eval_log = CsvLog(run_dir / "eval.csv", EVAL_COLUMNS)
    train_log: CsvLog | None = None
    if saved is not None:
        eval_log.drop_after("agent_step", start)

    aim = None
    if cfg.aim:
        aim = AimTracker(
            cfg.aim_repo or run_dir,
            cfg.experiment,
            run_name=f"{cfg.preset} {cfg.task} lam={cfg.lam} prior={cfg.prior}/{cfg.prior_loss}",
            hparams=now,
            run_hash=info["aim_run_hash"],
        )
        info["aim_run_hash"] = aim.run_hash
    with atomic_write(run_dir / "config.json", "w") as f:
        f.write(to_json(info))

    params = count_params(
        jax.tree.map(lambda x: x[0] if eqx.is_array(x) else x, state.seeds.agent.nets)
    )
    summary = (
        f"{cfg.preset} on {cfg.task} (obs {spec.obs_dim}, action {spec.action_dim}, {spec.episode_length} steps x"
        f" repeat {spec.action_repeat}) | lam={cfg.lam} prior={cfg.prior}/{cfg.prior_loss} | model {cfg.model_size}"
        f" ({params / 1e6:.2f}M params per seed) | seeds {seeds} on {len(trainer.devices)} device(s)"
        f" | {cfg.steps} agent steps, {trainer.schedule.seed_steps} seed steps"
        f" | replay {trainer.schedule.capacity} rows/seed = {trainer.buffer_gb:.3f} GB | {run_dir}"
    )
    print(summary, flush=True)
    if start:
        print(f"resuming at agent step {start} from {ckpt_dir}", flush=True)

    progress = (
        ProgressBar(cfg.steps, num_seeds=cfg.num_seeds, initial=start) if cfg.progress else None
    )
    every_ckpt = cfg.checkpoint_every or cfg.eval_every
    step = start
    try:
        while step < cfg.steps:
            length = min(_chunk_length(cfg, start), cfg.steps - step)
            if step < trainer.schedule.seed_steps <= step + length:
                _log(
                    progress,
                    f"pretraining: {trainer.schedule.seed_steps} updates at agent step {trainer.schedule.seed_steps}",
                )
            tick = time.perf_counter()
            state, metrics, finite = trainer.chunk_fn(length)(state)
            metrics = jax.device_get(metrics)
            seconds = time.perf_counter() - tick
            check_finite(metrics, step, seeds)
            finite = np.asarray(finite)
            if not finite.all():
                bad = seeds[int(np.argmin(finite))]
                raise NonFiniteError(
                    f"non-finite parameters for seed {bad} between agent steps {step} and {step + length}"
                )
            step += length
            env_step = step * spec.action_repeat
            rows = _window_rows(metrics, step, env_step, seeds, seconds)
            if train_log is None:
                train_log = CsvLog(run_dir / "train.csv", list(rows[0]))
                if saved is not None:
                    train_log.drop_after("agent_step", start)
            train_log.append(rows)
            if aim is not None:
                numeric = {
                    k: np.array([np.nan if r[k] is None else r[k] for r in rows], float)
                    for k in rows[0]
                    if k not in ("agent_step", "env_step", "seed")
                }
                aim.track(numeric, step=step, seeds=seeds, context={"subset": "train"})
            if step % cfg.eval_every == 0 or step == cfg.steps:
                returns = trainer.evaluate(state)
                eval_log.append(
                    {"agent_step": step, "env_step": env_step, "seed": s, "episode": e, "return": r}
                    for i, s in enumerate(seeds)
                    for e, r in enumerate(returns[i])
                )
                if aim is not None:
                    aim.track(
                        {"return": returns.mean(axis=1)},
                        step=step,
                        seeds=seeds,
                        context={"subset": "eval"},
                    )
                if progress is not None:
                    progress.set_eval(returns.mean(axis=1))
                _log(
                    progress,
                    f"eval at agent step {step}: "
                    + ", ".join(f"seed {s}: {returns[i].mean():.1f}" for i, s in enumerate(seeds)),
                )
            if step % every_ckpt == 0 or step == cfg.steps:
                save_checkpoint(
                    ckpt_dir,
                    step,
                    state,
                    metadata={"config": now, "step": step},
                    host_state=trainer.env.save_host_state(),
                )
            if progress is not None:
                progress.update(step)
    except NonFiniteError as err:
        last = latest_checkpoint(ckpt_dir)
        raise NonFiniteError(
            f"{err}; stopping. The last good checkpoint is {last or 'none (no checkpoint yet)'}"
        ) from None
    finally:
        if progress is not None:
            progress.close()
        if aim is not None:
            aim.close()
    return run_dir
