"""PO-MPC in JAX + Equinox: TD-MPC2 (lambda = 0), BMPC (lambda = inf) and PO-MPC in one code path.

Set `POMPC_TYPECHECK=1` to check every jaxtyping annotation with beartype at trace time in your
own scripts (the test suite always does).
"""

import os


if os.environ.get("POMPC_TYPECHECK") == "1":
    from jaxtyping import install_import_hook

    with install_import_hook("pompc_eqx", "beartype.beartype"):
        from . import agent, config, experiment, loop, objectives, planner, priors  # noqa: F401

from .agent import AgentState as AgentState, act as act, init_agent as init_agent, update as update
from .buffer import Batch as Batch, ReplayBuffer as ReplayBuffer, Transition as Transition
from .config import AgentConfig as AgentConfig, TrainConfig as TrainConfig
from .envs.registry import make_env as make_env, task_spec as task_spec
from .experiment import Trainer as Trainer, run as run
from .loop import make_evaluate as make_evaluate, make_train_chunk as make_train_chunk
from .objectives import (
    AbstractPolicyObjective as AbstractPolicyObjective,
    KLOnly as KLOnly,
    KLRegularized as KLRegularized,
    MaxQ as MaxQ,
)
from .planner import plan as plan, reanalyze as reanalyze
from .presets import PRESETS as PRESETS
from .priors import (
    PRIORS as PRIORS,
    AbstractPrior as AbstractPrior,
    LearnedPrior as LearnedPrior,
    ReplayPrior as ReplayPrior,
)
from .world_model import Networks as Networks, make_networks as make_networks


__version__ = "0.1.0"
