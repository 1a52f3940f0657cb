"""A test-only stand-in for the `humanoid_bench` package (no robot, no assets).

It mimics what the adapter relies on: gymnasium ids such as `h1hand-walk-v0`, the
gymnasium 5-tuple `step`, `reset(seed=...) -> (obs, info)`, spaces, a MuJoCo `model`/`data`,
`np_random`, a `task` object with a goal drawn from NumPy's *global* random state at reset
(as HumanoidBench's reach task does), and `camera_name`.

The body is a ball on a vertical slider starting at height 1 with gravity; the action pushes
it up (a = 1 hovers upwards, a = 0 falls). An episode terminates when the height drops below
0.5, as HumanoidBench's locomotion tasks do when the robot falls.
"""

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium.envs.registration import EnvSpec


FAKE_IDS = ("h1hand-walk-v0", "h1hand-stand-v0")
MAX_EPISODE_STEPS = 1000
OBS_DIM = 4
ACTION_DIM = 1
FALL_HEIGHT = 0.5

_XML = """
<mujoco>
  <option timestep="0.01"/>
  <worldbody>
    <body name="torso" pos="0 0 1">
      <joint name="z" type="slide" axis="0 0 1"/>
      <geom type="sphere" size="0.1" mass="1"/>
    </body>
  </worldbody>
  <actuator><motor joint="z" gear="20" ctrlrange="-1 1" ctrllimited="true"/></actuator>
</mujoco>
"""


class FakeTask:
    """Holds per-episode Python state, like HumanoidBench's task objects."""

    def __init__(self):
        self.goal = np.zeros(2)
        self.steps_taken = 0


class FakeHumanoidEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 20}

    def __init__(self, render_mode=None, frame_skip=5):
        self.render_mode = render_mode
        self.frame_skip = frame_skip
        self.model = mujoco.MjModel.from_xml_string(_XML)
        self.data = mujoco.MjData(self.model)
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (OBS_DIM,), np.float64)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (ACTION_DIM,), np.float32)
        self.task = FakeTask()
        self.camera_name = None

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        mujoco.mj_resetData(self.model, self.data)
        self.data.qpos[0] = self.np_random.uniform(-0.05, 0.05)
        self.task.goal = np.random.uniform(-1.0, 1.0, 2)
        self.task.steps_taken = 0
        mujoco.mj_forward(self.model, self.data)
        return self._obs(), {}

    def step(self, action):
        self.data.ctrl[:] = action
        mujoco.mj_step(self.model, self.data, self.frame_skip)
        self.task.steps_taken += 1
        height = 1.0 + self.data.qpos[0]
        reward = float(np.exp(-((height - 1.0) ** 2)))
        return self._obs(), reward, bool(height < FALL_HEIGHT), False, {"height": height}

    def _obs(self):
        height = 1.0 + self.data.qpos[0]
        return np.array([height, self.data.qvel[0], *self.task.goal], np.float64)


def registry_entries() -> dict[str, EnvSpec]:
    """Gymnasium registry entries for the fake ids (to insert with monkeypatch)."""
    return {
        env_id: EnvSpec(id=env_id, entry_point=FakeHumanoidEnv, max_episode_steps=MAX_EPISODE_STEPS)
        for env_id in FAKE_IDS
    }
