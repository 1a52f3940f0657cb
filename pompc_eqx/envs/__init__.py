"""Environments: the batched `AbstractEnv` interface, JAX-native tasks, host simulators
(dm_control, HumanoidBench) and the task registry.

`dmc` and `humanoid_bench` are submodules imported on first use (see `registry`).
"""

from .base import AbstractEnv as AbstractEnv, EnvSpec as EnvSpec, TimeStep as TimeStep
from .errors import (
    MissingDependencyError as MissingDependencyError,
    UnknownTaskError as UnknownTaskError,
)
from .host import (
    AbstractHostSlot as AbstractHostSlot,
    HostBatch as HostBatch,
    HostEnv as HostEnv,
    HostEnvState as HostEnvState,
    StaleEnvStateError as StaleEnvStateError,
)
from .jax_envs import (
    JAX_TASKS as JAX_TASKS,
    PROBE_OPTIMAL_RETURNS as PROBE_OPTIMAL_RETURNS,
    AbstractJaxTask as AbstractJaxTask,
    ConstantProbe as ConstantProbe,
    CountdownProbe as CountdownProbe,
    JaxEnv as JaxEnv,
    JaxEnvState as JaxEnvState,
    Pendulum as Pendulum,
    TargetProbe as TargetProbe,
)
from .registry import (
    PREFIXES as PREFIXES,
    canonical_task_name as canonical_task_name,
    list_tasks as list_tasks,
    make_env as make_env,
    task_spec as task_spec,
)
