"""Typed configuration: frozen dataclasses only (no JAX here).

`TrainConfig` is what `scripts/train.py` parses with tyro. Its nested groups (`model`, `policy`,
`planner`, `loss`, `optim`, `buffer`) hold every hyperparameter of the method; the presets
(`presets.PRESETS`) differ only in these values. Pure functions receive the sub-config they need
as a static (hashable) argument.
"""

import dataclasses
import json
import pathlib
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Annotated, Any, Literal

import tyro

from .files import plain


if TYPE_CHECKING:
    from .envs.base import EnvSpec


ModelSize = Literal["tiny", "1m", "5m", "19m", "48m", "317m"]

# TD-MPC2's model-size table (`tdmpc2/common/__init__.py`), plus `tiny` for tests.
MODEL_SIZES: dict[str, dict[str, int]] = {
    "tiny": dict(enc_dim=32, mlp_dim=32, latent_dim=16, num_enc_layers=2, num_q=5),
    "1m": dict(enc_dim=256, mlp_dim=384, latent_dim=128, num_enc_layers=2, num_q=2),
    "5m": dict(enc_dim=256, mlp_dim=512, latent_dim=512, num_enc_layers=2, num_q=5),
    "19m": dict(enc_dim=1024, mlp_dim=1024, latent_dim=768, num_enc_layers=3, num_q=5),
    "48m": dict(enc_dim=1792, mlp_dim=1792, latent_dim=768, num_enc_layers=4, num_q=5),
    "317m": dict(enc_dim=4096, mlp_dim=4096, latent_dim=1376, num_enc_layers=5, num_q=8),
}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Network shapes. Fields left at `None` come from the `--model-size` table."""

    latent_dim: int | None = None
    """Latent state size (a multiple of `simnorm_dim`)."""
    mlp_dim: int | None = None
    """Hidden width of dynamics, reward, Q, policy and prior networks."""
    enc_dim: int | None = None
    """Hidden width of the encoder."""
    num_enc_layers: int | None = None
    """Encoder depth as in TD-MPC2: max(num_enc_layers - 1, 1) hidden layers."""
    num_q: int | None = None
    """Heads in each Q ensemble (Q and Q^lambda)."""
    num_bins: int = 101
    """Two-hot bins for reward and Q regression."""
    vmin: float = -10.0
    """Lowest bin, in symlog space."""
    vmax: float = 10.0
    """Highest bin, in symlog space."""
    simnorm_dim: int = 8
    """SimNorm group size."""
    dropout: float = 0.01
    """Dropout on the first hidden layer of every Q (and V) head."""
    value: Literal["q", "v"] = "q"
    """The world model's value function: TD-MPC2's Q(z, a) ensemble (`q`), or BMPC's
    state-value V(z) ensemble (`v`, its repository's default) with a one-step model-based
    target; `num_q` heads either way."""
    termination_head: bool = True
    """With `--episodic`, learn TD-MPC2's termination head (off: imagined rollouts never end)."""

    def resolve(self, size: ModelSize) -> "ModelConfig":
        """This config with every `None` filled from the size table."""
        table = MODEL_SIZES[size]
        return dataclasses.replace(
            self, **{k: v for k, v in table.items() if getattr(self, k) is None}
        )


@dataclasses.dataclass(frozen=True)
class PolicyConfig:
    """Distribution family of the sampling policy and of the learned prior (spec §2)."""

    distribution: Literal["tanh-gaussian", "clipped-gaussian"] = "clipped-gaussian"
    """`tanh-gaussian`: TD-MPC2's squashed Gaussian; `clipped-gaussian`: BMPC's Gaussian with a
    tanh mean and clipped samples."""
    log_std_min: float = -3.0
    log_std_max: float = 1.0


@dataclasses.dataclass(frozen=True)
class PlannerConfig:
    """MPPI (spec §4, paper Table 3)."""

    horizon: int = 3
    num_samples: int = 512
    num_pi_trajs: int = 24
    """Trajectories drawn from the sampling policy (included in num_samples)."""
    num_elites: int = 64
    iterations: int = 6
    large_action_dim: int = 20
    """From this action dimension on, `extra_iterations` are added (TD-MPC2)."""
    extra_iterations: int = 2
    min_std: float = 0.05
    max_std: float = 2.0
    temperature: float = 1.0
    """Elite weights are softmax(temperature * value)."""
    reanalyze_log_std: tuple[float, float] | None = (-2.0, 1.0)
    """Log-std bounds of the policy's trajectories inside lazy reanalyze (BMPC's `expl_log_std_*`:
    wider than its own [-3, 1], so the re-planned Gaussians keep exploring); `None`: its own."""

    def num_iterations(self, action_dim: int) -> int:
        bonus = self.extra_iterations if action_dim >= self.large_action_dim else 0
        return self.iterations + bonus


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """Loss coefficients and the KL-regularised RL settings (spec §3)."""

    consistency_coef: float = 20.0
    reward_coef: float = 0.1
    value_coef: float = 0.1
    termination_coef: float = 1.0
    """Coefficient of the termination head's loss (`--episodic` only; TD-MPC2)."""
    qlam_coef: float = 0.1
    """Coefficient of the KL-regularised value loss (Eq. 16), part of the world-model loss."""
    rho: float = 0.5
    """Temporal weight rho^t over the horizon."""
    discount: float | Literal["heuristic"] = 0.99
    """A number, or `heuristic`: clip((T/5 - 1)/(T/5), 0.95, 0.995) for episode length T."""
    entropy_coef: float = 1e-4
    tau: float = 0.01
    """Polyak rate of the Q and Q^lambda targets."""
    scale_tau: float = 0.01
    """EMA rate of the running percentile scales S_Q, S_KL, S_p."""
    kl_reduction: Literal["sum", "mean"] = "sum"
    """How KL is reduced over action dimensions."""
    policy_latents: Literal["horizon", "horizon+1"] = "horizon"
    """Latents in the policy loss: z_0..z_{H-1} (paper Eq. 18) or z_0..z_H (TD-MPC2)."""
    pretrain_policy: bool = False
    """Also update the sampling policy during the pretraining burst (TD-MPC2 does)."""
    kl_target: float = 1.0
    """Target of KL(pi_s || pi_p) when `--lam auto` (per latent state, after reduction)."""
    lam_lr: float = 3e-4
    """Learning rate of log(lambda) when `--lam auto`."""
    lam_init: float = 1.0
    """Initial lambda when `--lam auto`."""

    def discount_for(self, episode_length: int) -> float:
        if self.discount == "heuristic":
            frac = episode_length / 5
            return min(max((frac - 1) / frac, 0.95), 0.995)
        return float(self.discount)


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """Optimisers: Adam for the world model (+Q, Q^lambda), the policy and the prior."""

    lr: float = 3e-4
    enc_lr_scale: float = 0.3
    """Encoder learning rate = lr x this (TD-MPC2)."""
    grad_clip: float = 20.0
    """Global gradient-norm clip, separately for each optimiser."""
    policy_eps: float = 1e-5
    """Adam epsilon of the policy and prior optimisers."""


@dataclasses.dataclass(frozen=True)
class BufferConfig:
    """Replay buffer and reanalyze (spec §3, §5)."""

    capacity: int | None = None
    """Rows per seed; default: enough for the whole run, at most 1M."""
    batch_size: int = 256
    reanalyze_interval: int = 10
    """Re-plan stored states every this many updates (0 disables lazy reanalyze)."""
    reanalyze_batch: int = 20
    """Sequences of the batch whose H states are re-planned."""
    memory_budget_gb: float = 16.0
    """Refuse to start when the buffers of all seeds need more than this."""


@dataclasses.dataclass(frozen=True)
class AgentConfig:
    """Everything the pure agent functions need (built from `TrainConfig` and the task)."""

    obs_dim: int
    action_dim: int
    episode_length: int
    model: ModelConfig
    policy: PolicyConfig
    planner: PlannerConfig
    loss: LossConfig
    optim: OptimConfig
    lam: float | Literal["auto"]
    """Selects the policy objective (`objectives.objective_class`)."""
    prior: str
    """A name in `priors.PRIORS`."""
    prior_loss: Literal["reverse", "forward"]
    batch_size: int
    episodic: bool = False

    @property
    def discount(self) -> float:
        return self.loss.discount_for(self.episode_length)

    @property
    def num_policy_latents(self) -> int:
        h = self.planner.horizon
        return h + 1 if self.loss.policy_latents == "horizon+1" else h


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """A training run: N seeds vmapped in one process (Algorithm 2)."""

    task: str = "jax/pendulum"
    """Task name, e.g. jax/pendulum, dmc/cartpole-swingup, hb/h1hand-walk-v0 (see scripts/list_tasks.py)."""
    num_seeds: int = 1
    """Independent seeds, trained as one vmapped axis."""
    steps: int = 100_000
    """Agent steps per seed (env steps = agent steps x action repeat)."""
    seed: int = 0
    """Seed of the first run; run i uses seed + i."""
    run_dir: pathlib.Path | None = None
    """Output directory (default: runs/<task>/<preset>-<time>)."""
    model_size: ModelSize = "5m"
    """TD-MPC2 model size."""
    lam: float | Literal["auto"] = 1.0
    """KL weight lambda: 0 = TD-MPC2, inf = KL only (BMPC), auto = tuned; several = one-program sweep."""
    prior: Annotated[str, tyro.conf.arg(metavar="{learned,replay}")] = "learned"
    """Prior: `learned` (the adaptive prior, a Gaussian policy network) or `replay` (the stored
    planner Gaussians); any other name registered in `pompc_eqx.priors.PRIORS` works too."""
    prior_loss: Literal["reverse", "forward"] = "reverse"
    """How the learned prior is fitted to the planner: reverse KL (Eq. 12) or forward KL (Eq. 13)."""
    seed_steps: int | None = None
    """Random-action steps before learning (default max(1000, 5 x episode length))."""
    eval_every: int = 50_000
    """Evaluate every this many agent steps (and at the end)."""
    eval_episodes: int = 10
    """Evaluation episodes per seed (planner in eval mode)."""
    eval_at_start: bool = False
    """Also evaluate at agent step 0 (as TD-MPC2's and BMPC's repositories do)."""
    eval_policy: bool = False
    """Also evaluate the policy's mean action alone into eval_policy.csv (BMPC's `eval_pi`)."""
    resume: pathlib.Path | None = None
    """Continue the run in this directory from its latest checkpoint."""
    episodic: bool = False
    """Episodic tasks: terminations cut TD targets and a termination head ends imagined rollouts."""
    chunk_steps: int = 1000
    """Agent steps per logging window (a row of train.csv per seed)."""
    checkpoint_every: int | None = None
    """Checkpoint every this many agent steps (default: eval_every) and at the end."""
    aim_repo: pathlib.Path | None = None
    """Aim repository (default: the run directory)."""
    aim: bool = True
    """Track metrics in Aim (`--no-aim` to disable)."""
    experiment: str = "pompc-eqx"
    """Aim experiment name."""
    progress: bool = True
    """Show a progress bar."""
    model: ModelConfig = ModelConfig()
    policy: PolicyConfig = PolicyConfig()
    planner: PlannerConfig = PlannerConfig()
    loss: LossConfig = LossConfig()
    optim: OptimConfig = OptimConfig()
    buffer: BufferConfig = BufferConfig()
    preset: tyro.conf.Suppress[str] = "pompc"
    """Name of the preset this config started from (informational)."""

    def agent_config(self, obs_dim: int, action_dim: int, episode_length: int) -> AgentConfig:
        return AgentConfig(
            obs_dim=obs_dim,
            action_dim=action_dim,
            episode_length=episode_length,
            model=self.model.resolve(self.model_size),
            policy=self.policy,
            planner=self.planner,
            loss=self.loss,
            optim=self.optim,
            lam=self.lam,
            prior=self.prior,
            prior_loss=self.prior_loss,
            batch_size=self.buffer.batch_size,
            episodic=self.episodic,
        )

    def resolved_seed_steps(self, episode_length: int) -> int:
        if self.seed_steps is not None:
            return self.seed_steps
        return max(1000, 5 * episode_length)


def config_from_dict(data: dict) -> TrainConfig:
    """A `TrainConfig` from its `asdict` form (a run's config.json); missing settings: defaults."""
    kwargs = {}
    for field in (f for f in dataclasses.fields(TrainConfig) if f.name in data):
        value = data[field.name]
        if dataclasses.is_dataclass(field.type):
            # JSON turns tuples into lists; configs must stay hashable (static jit arguments).
            value = field.type(
                **{k: tuple(v) if isinstance(v, list) else v for k, v in value.items()}
            )
        elif field.name in ("run_dir", "resume", "aim_repo") and value is not None:
            value = pathlib.Path(value)
        kwargs[field.name] = value
    return TrainConfig(**kwargs)


class ConfigError(ValueError):
    """An invalid configuration; the message is one line saying what is valid."""


def config_dict(cfg: TrainConfig) -> dict:
    """The config as plain JSON-able data (paths as strings, inf as a string)."""
    return plain(dataclasses.asdict(cfg))


def _flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    if not (isinstance(config, dict) and config):
        return {prefix[:-1]: config}
    return {
        k: v for key, sub in config.items() for k, v in _flatten(sub, f"{prefix}{key}.").items()
    }


_ABSENT = object()


def _show(flat: dict[str, Any], key: str) -> str:
    return json.dumps(flat[key]) if key in flat else "<absent>"


def config_differences(
    saved: Mapping[str, Any], now: Mapping[str, Any], ignore_keys: Collection[str] = ()
) -> list[str]:
    """Lines `a.b.c: saved X, now Y` for every differing dotted key of two nested dicts,
    sorted by key; compared after a JSON round trip (tuples equal lists). A key in
    `ignore_keys` also skips everything below it."""
    old, new = _flatten(plain(saved)), _flatten(plain(now))
    ignored = lambda key: any(key == k or key.startswith(k + ".") for k in ignore_keys)
    # Compare the JSON texts too: 1 == 1.0 stays equal, and so does NaN == NaN.
    return [
        f"{key}: saved {_show(old, key)}, now {_show(new, key)}"
        for key in sorted(old.keys() | new.keys())
        if old.get(key, _ABSENT) != new.get(key, _ABSENT)
        and _show(old, key) != _show(new, key)
        and not ignored(key)
    ]


def validate(cfg: TrainConfig, spec: "EnvSpec") -> None:
    """Raise `ConfigError` (one clear line) for an invalid option combination."""
    p = cfg.planner
    lam = cfg.lam
    if lam != "auto" and not lam >= 0:
        raise ConfigError(f"--lam must be >= 0, inf or auto (got {lam})")
    if cfg.num_seeds < 1:
        raise ConfigError(f"--num-seeds must be >= 1 (got {cfg.num_seeds})")
    from .priors import PRIORS  # here: priors.py imports this module

    if cfg.prior not in PRIORS:
        raise ConfigError(f"unknown --prior {cfg.prior!r}; choose one of: {', '.join(PRIORS)}")
    if cfg.prior == "replay" and cfg.prior_loss == "forward":
        raise ConfigError(
            "--prior-loss applies only to --prior learned (the replay prior is not fitted)"
        )
    if cfg.model.value == "v" and lam == 0:
        raise ConfigError("--model.value v needs --lam > 0: lambda = 0 maximises Q(z, a)")
    if cfg.prior_loss == "forward" and cfg.policy.distribution == "tanh-gaussian":
        raise ConfigError(
            "--prior-loss forward needs --policy.distribution clipped-gaussian: the forward KL from the"
            " planner's Gaussian (mass at the action bounds) to a tanh-squashed prior has no usable estimate"
        )
    if lam == "auto" and not cfg.loss.kl_target > 0:
        raise ConfigError(f"--loss.kl-target must be > 0 with --lam auto, not {cfg.loss.kl_target}")
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
    for name in ("eval_every", "chunk_steps", "eval_episodes", "checkpoint_every"):
        if getattr(cfg, name) is not None and getattr(cfg, name) < 1:  # None: the default
            raise ConfigError(f"--{name.replace('_', '-')} must be >= 1")
    if cfg.buffer.reanalyze_batch > cfg.buffer.batch_size:
        raise ConfigError("--buffer.reanalyze-batch must not exceed --buffer.batch-size")
    model = cfg.model.resolve(cfg.model_size)
    if model.latent_dim % model.simnorm_dim:
        raise ConfigError(
            f"--model.latent-dim ({model.latent_dim}) must be a multiple of --model.simnorm-dim ({model.simnorm_dim})"
        )
