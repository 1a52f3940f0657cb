"""Environments: the batched `AbstractEnv` interface, JAX-native tasks, host simulators
(dm_control, HumanoidBench) and the task registry.

`dmc` and `humanoid_bench` are submodules imported on first use (see `registry`).
"""

from .base import AbstractEnv as AbstractEnv
from .base import EnvSpec as EnvSpec
from .base import TimeStep as TimeStep
from .errors import (
    MissingDependencyError as MissingDependencyError,
)
from .errors import (
    UnknownTaskError as UnknownTaskError,
)
from .host import (
    AbstractHostSlot as AbstractHostSlot,
)
from .host import (
    HostBatch as HostBatch,
)
from .host import (
    HostEnv as HostEnv,
)
from .host import (
    HostEnvState as HostEnvState,
)
from .host import (
    StaleEnvStateError as StaleEnvStateError,
)
from .jax_envs import (
    JAX_TASKS as JAX_TASKS,
)
from .jax_envs import (
    PROBE_OPTIMAL_RETURNS as PROBE_OPTIMAL_RETURNS,
)
from .jax_envs import (
    AbstractJaxTask as AbstractJaxTask,
)
from .jax_envs import (
    ConstantProbe as ConstantProbe,
)
from .jax_envs import (
    CountdownProbe as CountdownProbe,
)
from .jax_envs import (
    JaxEnv as JaxEnv,
)
from .jax_envs import (
    JaxEnvState as JaxEnvState,
)
from .jax_envs import (
    Pendulum as Pendulum,
)
from .jax_envs import (
    TargetProbe as TargetProbe,
)
from .registry import (
    PREFIXES as PREFIXES,
)
from .registry import (
    canonical_task_name as canonical_task_name,
)
from .registry import (
    list_tasks as list_tasks,
)
from .registry import (
    make_env as make_env,
)
from .registry import (
    task_spec as task_spec,
)
