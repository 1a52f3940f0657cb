"""Host side of a training run: everything between compiled chunks.

`Trainer` builds the environments, the compiled chunk and evaluation functions and the
(optionally device-sharded) loop state. `run` drives it: one chunk of agent steps at a time
(compiled once), then logging (CSV + Aim), evaluation, checkpointing and the progress bar.
No host<->device copies happen inside a chunk except the host-simulator callback.
"""

import json
import pathlib
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from .buffer import buffer_bytes, default_capacity
from .checkpoint import CheckpointError, load_checkpoint
from .compiling import Compilation, free_compiled_programs
from .config import (  # ConfigError, validate and config_dict are re-exported for older imports
    AgentConfig,
    ConfigError as ConfigError,
    TrainConfig,
    config_dict as config_dict,
    config_differences,
    config_from_dict,
    validate as validate,
)
from .console import ConsoleLogger, final_report
from .distributed import any_process, gather, is_main, place
from .driver import train_loop
from .envs.registry import make_sharded_env, task_spec
from .loggers import Loggers
from .loop import (
    LoopState,
    Schedule,
    all_finite,
    init_loop,
    make_evaluate,
    make_train_chunk,
    seed_keys,
    stream,
)
from .metrics import NonFiniteError as NonFiniteError, check_finite as check_finite
from .objectives import objective_class
from .outputs import code_commit, open_outputs
from .run_dir import open_run_dir, peek_run_dir, read_sub_run
from .signals import StopRequest
from .sweep import SWEEP_FILE, Sweep
from .world_model import count_params


# Options a resumed run may change; everything else must match the saved config.
RESUMABLE = (
    "steps",
    "eval_every",
    "eval_episodes",
    "eval_at_start",
    "eval_policy",
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


class Trainer:
    """Compiled training and evaluation for one `TrainConfig` (all seeds in one process).

    **Arguments:**
    - `cfg`: the run's configuration (validated here).
    - `devices`: devices to shard the seed axis over (default: all visible devices that
      divide `num_seeds`).
    """

    def __init__(
        self,
        cfg: TrainConfig,
        devices: list | None = None,
        capacity: int | None = None,
        sweep: Sweep | None = None,
    ):
        self.cfg = cfg
        self.sweep = sweep
        self.num_values = len(sweep.values) if sweep else 1
        num_runs = self.num_values * cfg.num_seeds
        self.spec = task_spec(cfg.task)
        validate(cfg, self.spec)
        self.spec_dims = (self.spec.obs_dim, self.spec.action_dim, self.spec.episode_length)
        self.agent_cfg: AgentConfig = cfg.agent_config(*self.spec_dims)
        capacity = (
            capacity or cfg.buffer.capacity or default_capacity(cfg.steps, self.spec.episode_length)
        )
        self.schedule = Schedule(
            seed_steps=cfg.resolved_seed_steps(self.spec.episode_length),
            capacity=capacity,
            reanalyze_interval=cfg.buffer.reanalyze_interval
            if objective_class(self.agent_cfg).reads_planner_gaussians
            else 0,
            reanalyze_batch=cfg.buffer.reanalyze_batch,
        )
        self.buffer_gb = (
            num_runs * buffer_bytes(capacity, self.spec.obs_dim, self.spec.action_dim) / 1e9
        )
        if self.buffer_gb > cfg.buffer.memory_budget_gb:
            raise ConfigError(
                f"replay buffers need {self.buffer_gb:.2f} GB for {num_runs} runs x {capacity} rows, "
                f"over --buffer.memory-budget-gb {cfg.buffer.memory_budget_gb}; lower --buffer.capacity or raise the budget"
            )
        # Run r is seed r % num_seeds of value r // num_seeds, with that seed's key.
        self.keys = jnp.tile(seed_keys(cfg.seed, cfg.num_seeds), self.num_values)
        self.swept = (
            None
            if sweep is None
            else jnp.repeat(jnp.asarray(sweep.values, jnp.float32), cfg.num_seeds)
        )
        self.devices = devices if devices is not None else _usable_devices(num_runs)
        self.mesh = Mesh(np.array(self.devices), ("seed",))
        self.env = make_sharded_env(cfg.task, num_runs, self.mesh)
        self.eval_env = make_sharded_env(cfg.task, num_runs, self.mesh)
        self._chunks: dict[int, tuple[Callable, Callable]] = {}
        # Keyed by `policy_only`: the planner in eval mode, or the policy's mean action alone.
        self._evaluate = {
            policy_only: eqx.filter_jit(
                make_evaluate(
                    self.agent_cfg, self.eval_env, cfg.eval_episodes, policy_only=policy_only
                )
            )
            for policy_only in (False, True)
        }

    @property
    def seeds(self) -> list[int]:
        """The seed of each run of the batch (in a sweep: repeated for every value)."""
        return [self.cfg.seed + i for i in range(self.cfg.num_seeds)] * self.num_values

    @property
    def labels(self) -> list[int | str]:
        """How messages name each run: its seed, or `seed (lam=value)` in a sweep."""
        if self.sweep is None:
            return self.seeds
        per_value = [label for label in self.sweep.labels for _ in range(self.cfg.num_seeds)]
        return [f"{s} ({v})" for s, v in zip(self.seeds, per_value)]

    def init_state(self) -> LoopState:
        state = eqx.filter_jit(init_loop, donate="none")(
            self.agent_cfg, self.schedule, self.env, self.keys, self.swept
        )
        return self.shard(state)

    def shard(self, state: LoopState) -> LoopState:
        """Place per-seed arrays along the device mesh (which may span several processes,
        see `distributed`); counters are replicated."""
        batched = NamedSharding(self.mesh, PartitionSpec("seed"))
        replicated = NamedSharding(self.mesh, PartitionSpec())
        put = lambda sharding: lambda x: place(x, sharding) if eqx.is_array(x) else x
        return eqx.tree_at(
            lambda s: (s.seeds, s.env_state, s.step, s.updates),
            state,
            (
                jax.tree.map(put(batched), state.seeds),
                jax.tree.map(put(batched), state.env_state),
                place(state.step, replicated),
                place(state.updates, replicated),
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

    def compile_chunk(self, num_steps: int, state: LoopState) -> Compilation:
        """Compile the chunk of `num_steps` steps for arguments like `state` in the background
        (see `Compilation`)."""
        lower = lambda: self.chunk_fn(num_steps).lower(state)
        return Compilation(f"chunk of {num_steps} agent steps", lower)

    def compile_evaluate(self, state: LoopState, *, policy_only: bool = False) -> Compilation:
        """Compile the evaluation for `state` in the background (see `Compilation`)."""
        label = "policy-only evaluation" if policy_only else "evaluation"
        lower = lambda: self._evaluate[policy_only].lower(state.seeds.agent, self._eval_keys(0))
        return Compilation(label, lower)

    def _eval_keys(self, step: int) -> jax.Array:
        keys = jax.vmap(lambda k: jr.fold_in(k, step))(stream(self.keys, "eval"))
        return place(keys, NamedSharding(self.mesh, PartitionSpec("seed")))

    def evaluate(
        self, state: LoopState, compiled: Callable | None = None, *, policy_only: bool = False
    ) -> np.ndarray:
        """Eval-mode returns of shape (seed, episode) at the state's current step.

        **Arguments:**

        - `state`: the loop state to evaluate (not modified).
        - `compiled`: the result of `compile_evaluate` (default: compiled on first use).
        - `policy_only`: the sampling policy's mean action alone instead of the planner (the
            same start states).
        """
        evaluate = compiled or self._evaluate[policy_only]
        step = int(gather(state.step))
        return np.asarray(gather(evaluate(state.seeds.agent, self._eval_keys(step))))


def _usable_devices(num_seeds: int) -> list:
    """The largest prefix of the visible devices whose count divides the number of seeds (with
    several processes: the devices of every process, so the count must divide it)."""
    devices = jax.devices()
    count = max(n for n in range(1, len(devices) + 1) if num_seeds % n == 0)
    if jax.process_count() > 1 and count != len(devices):
        raise ConfigError(
            f"{num_seeds} runs cannot be split evenly over the {len(devices)} devices of "
            f"{jax.process_count()} processes; choose --num-seeds (x swept values) divisible by it"
        )
    return devices[:count]


def with_defaults(saved_config: Mapping[str, Any]) -> dict:
    """A saved config with every setting added since it was written at its default (an added
    setting's default keeps the earlier behaviour), so that older runs still resume."""
    return config_dict(config_from_dict(dict(saved_config)))


def _restore(trainer: Trainer, run_dir: pathlib.Path, saved: dict | None) -> tuple[LoopState, int]:
    """The initial state, or the latest checkpoint's state of a resumed run, and its step."""
    state = trainer.init_state()
    if saved is None:
        return state, 0
    state, meta, host_blob = load_checkpoint(
        run_dir / "checkpoints",
        state,
        expected_config=saved["config"],
        ignore_keys=RESUMABLE,
        fill_config=with_defaults,
    )
    trainer.env.load_host_state(host_blob)
    return trainer.shard(state), int(meta["step"])


def _summary(trainer: Trainer, state: LoopState, run_dir: pathlib.Path) -> str:
    cfg, spec, schedule = trainer.cfg, trainer.spec, trainer.schedule
    first = jax.tree.map(lambda x: x[0] if eqx.is_array(x) else x, state.seeds.agent.nets)
    sweep = trainer.sweep
    lam = f"{sweep.option.removeprefix('--')} {list(sweep.values)}" if sweep else f"lam={cfg.lam}"
    return (
        f"{cfg.preset} on {cfg.task} (obs {spec.obs_dim}, action {spec.action_dim}, {spec.episode_length} steps x"
        f" repeat {spec.action_repeat}) | {lam} prior={cfg.prior}/{cfg.prior_loss} | model {cfg.model_size}"
        f" ({count_params(first) / 1e6:.2f}M params per seed) | seeds {trainer.seeds[: cfg.num_seeds]}"
        f"{f' x {trainer.num_values} values' if sweep else ''} on {len(trainer.devices)} device(s)"
        f"{f' of {jax.process_count()} processes' if jax.process_count() > 1 else ''} | {cfg.steps} agent steps, {schedule.seed_steps} seed steps"
        f" | replay {schedule.capacity} rows/run = {trainer.buffer_gb:.3f} GB | {run_dir}"
    )


def _saved_capacity(run_dir: pathlib.Path, manifest: str) -> int | None:
    config_file = run_dir / manifest
    if not config_file.exists():
        return None  # open_run_dir says what is wrong
    return json.loads(config_file.read_text()).get("buffer_capacity")


def run(
    cfg: TrainConfig | Sweep,
    *,
    devices: list | None = None,
    overwrite: int = 0,
    command: list[str] | None = None,
) -> pathlib.Path:
    """Train `cfg.num_seeds` seeds of one configuration (or every run of a sweep) in one
    program; returns the run (or sweep) directory.

    Writes `config.json`, `eval.csv`, `train.csv`, `checkpoints/` and one Aim run per seed into
    the run directory, which it locks while it runs. A sweep writes `sweep.json` and
    `checkpoints/` there and the other files into one sub-run directory per value (see
    `pompc_eqx.sweep`). With `cfg.resume` it continues the run found there from its latest
    checkpoint. On SIGINT, SIGTERM or SIGUSR1 it checkpoints the current step and raises
    `Interrupted` (see `signals`); a partial logging window is not written to train.csv.

    **Arguments:**

    - `cfg`: the configuration, or a `Sweep`.
    - `devices`: devices to shard the seeds over (default: see `Trainer`).
    - `overwrite`: start over in a directory that holds a run (see `run_dir.open_run_dir`).
    - `command`: the command line, recorded in config.json (default: `sys.argv`).
    """
    wall = time.perf_counter()
    sweep = cfg if isinstance(cfg, Sweep) else None
    base = sweep.base if sweep else cfg
    manifest = SWEEP_FILE if sweep else "config.json"
    # A resumed run keeps its replay capacity, which by default depends on --steps.
    capacity = _saved_capacity(base.resume, manifest) if base.resume is not None else None
    if jax.process_count() > 1 and base.run_dir is None and base.resume is None:
        raise ConfigError("a run over several processes needs --run-dir (the same in each)")
    trainer = Trainer(base, devices=devices, capacity=capacity, sweep=sweep)  # validates first
    if is_main():
        run_dir, lock, saved = open_run_dir(base, overwrite, manifest)
    else:  # reads what the main process locks (a filesystem that every host sees, to resume)
        run_dir, lock, saved = peek_run_dir(base, manifest)
    try:
        # (configuration, directory, saved config.json) of each run of the program.
        if sweep is None:
            members = [(base, run_dir, saved)]
        else:
            members = [
                (
                    sweep.member(i, run_dir),
                    run_dir / name,
                    None if saved is None else read_sub_run(run_dir, name),
                )
                for i, name in enumerate(sweep.names)
            ]
        for member_cfg, member_dir, member_saved in members:
            diffs = member_saved and config_differences(
                with_defaults(member_saved["config"]), config_dict(member_cfg), RESUMABLE
            )
            if diffs:
                raise CheckpointError(
                    f"--resume {member_dir}: options that cannot change on resume differ from "
                    f"the saved run: {'; '.join(diffs)}"
                )
        state, start = _restore(trainer, run_dir, members[0][2])
        command = list(sys.argv if command is None else command)
        earlier = [] if saved is None else [saved["command"], *saved.get("resume_commands", [])]
        history = {
            "command": command if saved is None else saved["command"],
            "resume_commands": earlier[1:] + ([command] if saved else []),
            # The code of each invocation (runs saved before this was recorded: None).
            "commits": [*(saved or {}).get("commits", [None] * len(earlier)), code_commit()],
        }
        main = is_main()
        if main:  # with several processes, the main one writes every file
            run_outputs, first_csv = open_outputs(trainer, members, run_dir, start, history)
        console = ConsoleLogger(base.steps, trainer.labels, start, base.progress, silent=not main)
        outputs = Loggers(run_outputs, console) if main else Loggers(console)
        # Step 0 (with --eval-at-start), or an evaluation cut short by an interrupt.
        due = start > 0 or base.eval_at_start
        missing = main and due and start % base.eval_every == 0 and not first_csv.evaluated(start)
        missing = any_process(missing)
        console.message(_summary(trainer, state, run_dir))
        if start:
            console.message(f"resuming at agent step {start} from {run_dir / 'checkpoints'}")
        try:
            with StopRequest() as stop:
                returns = train_loop(
                    trainer, state, start, run_dir, outputs, console, stop, missing
                )
        finally:
            outputs.close()
    finally:
        if lock is not None:
            lock.close()
        free_compiled_programs()  # a process that runs many runs must not run out of mappings
    groups = sweep.labels if sweep else ("",)
    seconds = time.perf_counter() - wall
    if is_main():
        print(final_report(returns, trainer.seeds, seconds, run_dir, groups), flush=True)
    return run_dir
