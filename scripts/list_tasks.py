"""Print every available task with its observation and action sizes, episode length (agent
steps) and action repeat. HumanoidBench tasks are listed if it is installed; otherwise the
script says how to install it.

    python scripts/list_tasks.py
"""

import logging
import warnings

from pompc_eqx.envs import list_tasks
from pompc_eqx.envs.humanoid_bench import (
    H1HAND_LOCOMOTION_TASKS,
    MissingDependencyError,
    import_humanoid_bench,
)


def main() -> None:
    # Headless machines: GLFW warns about the missing display; MuJoCo warns about deprecated
    # XML attributes of some suite models. Neither matters for listing tasks.
    warnings.filterwarnings("ignore", message=".*DISPLAY environment variable is missing")
    logging.getLogger("absl").setLevel(logging.ERROR)
    header = f"{'task':<34} {'obs':>5} {'action':>6} {'episode':>8} {'repeat':>6}  runs on"
    print(header)
    print("-" * len(header))
    for spec in list_tasks():
        where = "device" if spec.name.startswith("jax/") else "host"
        print(
            f"{spec.name:<34} {spec.obs_dim:>5} {spec.action_dim:>6} {spec.episode_length:>8} "
            f"{spec.action_repeat:>6}  {where}"
        )
    try:
        import_humanoid_bench()
    except MissingDependencyError as error:
        print(
            f"\nHumanoidBench ({len(H1HAND_LOCOMOTION_TASKS)} h1hand tasks, e.g. "
            f"{H1HAND_LOCOMOTION_TASKS[0]}): not installed. {error}"
        )
    else:
        print("\nOther ids registered by humanoid_bench also work as hb/<id>.")


if __name__ == "__main__":
    main()
