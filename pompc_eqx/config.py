"""Typed configuration: frozen dataclasses only (no JAX here).

`TrainConfig` is what `scripts/train.py` parses with tyro. Its nested groups (`model`,
`policy`, `planner`, `loss`, `optim`, `buffer`) hold every hyperparameter of the method; the
three presets `tdmpc2`, `bmpc` and `pompc` differ only in the values below (see `PRESETS`).
Pure functions receive the sub-config they need as a static (hashable) argument.
"""

import dataclasses
import math
import pathlib
from typing import Annotated, Literal

import tyro


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
    """Log-std bounds of the sampling policy when it draws its trajectories inside lazy
    reanalyze (BMPC's `expl_log_std_min/max`: a wider policy than its own [-3, 1], so the
    re-planned Gaussians the prior is fitted to keep exploring); `None` keeps the policy's own."""

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
    """KL weight lambda: 0 = TD-MPC2 policy loss, inf = KL only (BMPC), auto = tuned (dual)."""
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
    resume: pathlib.Path | None = None
    """Continue the run in this directory from its latest checkpoint."""
    episodic: bool = False
    """Episodic tasks (HumanoidBench): terminations cut TD targets, and a learned termination
    head ends imagined rollouts in the planner (TD-MPC2); otherwise bootstrap through them."""
    chunk_steps: int = 1000
    """Agent steps per compiled chunk = logging window."""
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


_TDMPC2 = TrainConfig(
    preset="tdmpc2",
    lam=0.0,
    policy=PolicyConfig(distribution="tanh-gaussian", log_std_min=-10.0, log_std_max=2.0),
    planner=PlannerConfig(reanalyze_log_std=None),
    loss=LossConfig(policy_latents="horizon+1", pretrain_policy=True),
)

PRESETS: dict[str, tuple[str, TrainConfig]] = {
    "tdmpc2": (
        "TD-MPC2 with the PO-MPC paper's Table 3 settings (MPPI temperature 1.0, discount 0.99)"
        " and PyTorch TD-MPC2's encoder lr 0.3x: lambda = 0, tanh-squashed Gaussian policy,"
        " policy loss over H+1 latents.",
        _TDMPC2,
    ),
    "tdmpc2-repo": (
        "TD-MPC2 as its PyTorch repository runs it: the tdmpc2 preset with MPPI temperature 0.5"
        " and the episode-length discount heuristic (0.99 on DMC, 0.995 on HumanoidBench).",
        dataclasses.replace(
            _TDMPC2,
            preset="tdmpc2-repo",
            planner=dataclasses.replace(_TDMPC2.planner, temperature=0.5),
            loss=dataclasses.replace(_TDMPC2.loss, discount="heuristic"),
        ),
    ),
    "bmpc": (
        "BMPC as the PO-MPC paper's lambda -> inf limit (BMPC's Variant 3, with Q): lambda = inf,"
        " prior = stored planner Gaussians, reverse KL summed over action dimensions, 5 Q heads,"
        " MPPI temperature 1.0.",
        TrainConfig(preset="bmpc", lam=math.inf, prior="replay"),
    ),
    "bmpc-repo": (
        "BMPC as its repository runs it: lambda = inf, prior = stored planner Gaussians, a"
        " state-value V(z) ensemble of 2 heads with a one-step model-based target (planner"
        " bootstrap: mean V), MPPI temperature 0.5, KL averaged over action dimensions, the"
        " episode-length discount heuristic.",
        TrainConfig(
            preset="bmpc-repo",
            lam=math.inf,
            prior="replay",
            model=ModelConfig(value="v", num_q=2),
            planner=PlannerConfig(temperature=0.5),
            loss=LossConfig(kl_reduction="mean", discount="heuristic"),
        ),
    ),
    "pompc": (
        "PO-MPC: lambda = 1, learned adaptive prior fitted by reverse KL (Eq. 12).",
        TrainConfig(preset="pompc", lam=1.0, prior="learned", prior_loss="reverse"),
    ),
}


def config_from_dict(data: dict) -> TrainConfig:
    """Rebuild a `TrainConfig` from its `dataclasses.asdict` form (e.g. a run's config.json)."""
    kwargs = {}
    for field in dataclasses.fields(TrainConfig):
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
