"""Replay buffer of one seed, as fixed-shape device arrays (a ring over `capacity` rows).

Row k holds the transition that *starts* at observation o_k: (o_k, a_k, r_k, terminated_k)
and the planner Gaussian (a_bar_k, sigma_k) computed at o_k. When an episode ends, one more
row holds its final observation (with zero action/reward and placeholder planner statistics),
so an episode of T agent steps takes T + 1 rows. A subsequence of H + 1 observations starting
at row s is valid when rows s..s+H belong to one episode; `valid_start[s]` is kept up to date
on every write, so sampling never crosses an episode boundary (or the write pointer).
"""

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Bool, Float, Int, Key


class Batch(eqx.Module):
    """B subsequences of H+1 observations inside one episode (time-major).

    `plan_mean[t]`, `plan_std[t]` are the planner Gaussian stored for observation t.
    """

    obs: Float[Array, "time batch obs"]
    action: Float[Array, "horizon batch action"]
    reward: Float[Array, "horizon batch"]
    terminated: Float[Array, "horizon batch"]
    plan_mean: Float[Array, "time batch action"]
    plan_std: Float[Array, "time batch action"]


class Transition(eqx.Module):
    """One agent step, as the buffer stores it (`*seed`: a leading seed axis when batched)."""

    obs: Float[Array, "*seed obs"]
    """The observation the action was planned at."""
    action: Float[Array, "*seed action"]
    reward: Float[Array, "*seed"]
    terminated: Bool[Array, "*seed"]
    plan_mean: Float[Array, "*seed action"]
    plan_std: Float[Array, "*seed action"]
    """The planner Gaussian (a_bar_0, sigma_0) computed at `obs`."""
    position: Int[Array, "*seed"]
    """Step index of `obs` in its episode."""
    done: Bool[Array, "*seed"]
    """The episode ended with this step; `final_obs` is its last observation."""
    final_obs: Float[Array, "*seed obs"]


class ReplayBuffer(eqx.Module):
    obs: Float[Array, "capacity obs"]
    action: Float[Array, "capacity action"]
    reward: Float[Array, " capacity"]
    terminated: Bool[Array, " capacity"]
    plan_mean: Float[Array, "capacity action"]
    plan_std: Float[Array, "capacity action"]
    valid_start: Bool[Array, " capacity"]
    pointer: Int[Array, ""]
    """Next row to write."""
    horizon: int = eqx.field(static=True)

    @staticmethod
    def empty(capacity: int, obs_dim: int, action_dim: int, horizon: int) -> "ReplayBuffer":
        if capacity < horizon + 2:
            raise ValueError(
                f"replay capacity {capacity} is smaller than horizon + 2 = {horizon + 2}"
            )
        return ReplayBuffer(
            obs=jnp.zeros((capacity, obs_dim), jnp.float32),
            action=jnp.zeros((capacity, action_dim), jnp.float32),
            reward=jnp.zeros((capacity,), jnp.float32),
            terminated=jnp.zeros((capacity,), bool),
            plan_mean=jnp.zeros((capacity, action_dim), jnp.float32),
            plan_std=jnp.zeros((capacity, action_dim), jnp.float32),
            valid_start=jnp.zeros((capacity,), bool),
            pointer=jnp.zeros((), jnp.int32),
            horizon=horizon,
        )

    @property
    def capacity(self) -> int:
        return self.reward.shape[0]

    def _write(
        self,
        row: Int[Array, ""],
        position: Int[Array, ""],
        write: Bool[Array, ""],
        obs: Float[Array, " obs"],
        action: Float[Array, " action"],
        reward: Float[Array, ""],
        terminated: Bool[Array, ""],
        plan_mean: Float[Array, " action"],
        plan_std: Float[Array, " action"],
    ) -> "ReplayBuffer":
        """Write one row when `write`; `position` is the row's step index in its episode."""

        def put(array, value):
            return array.at[row].set(jnp.where(write, value, array[row]))

        valid = put(self.valid_start, False)
        # The window of H + 1 rows ending here is now complete and inside one episode.
        start = (row - self.horizon) % self.capacity
        valid = valid.at[start].set(
            jnp.where(write & (position >= self.horizon), True, valid[start])
        )
        return eqx.tree_at(
            lambda b: (
                b.obs,
                b.action,
                b.reward,
                b.terminated,
                b.plan_mean,
                b.plan_std,
                b.valid_start,
            ),
            self,
            (
                put(self.obs, obs),
                put(self.action, action),
                put(self.reward, reward),
                put(self.terminated, terminated),
                put(self.plan_mean, plan_mean),
                put(self.plan_std, plan_std),
                valid,
            ),
        )

    def add(self, t: Transition, placeholder_std: float) -> "ReplayBuffer":
        """Store a transition; when its episode ends (`t.done`), also store the final
        observation in the next row (zero action and reward, planner std `placeholder_std`)."""
        yes = jnp.ones((), bool)
        buf = self._write(
            self.pointer,
            t.position,
            yes,
            t.obs,
            t.action,
            t.reward,
            t.terminated,
            t.plan_mean,
            t.plan_std,
        )
        zeros = jnp.zeros_like(t.action)
        buf = buf._write(
            (self.pointer + 1) % self.capacity,
            t.position + 1,
            t.done,
            t.final_obs,
            zeros,
            jnp.zeros(()),
            jnp.zeros((), bool),
            zeros,
            jnp.full_like(t.action, placeholder_std),
        )
        pointer = (self.pointer + 1 + t.done.astype(jnp.int32)) % self.capacity
        return eqx.tree_at(lambda b: b.pointer, buf, pointer)

    def sample_starts(self, batch_size: int, *, key: Key[Array, ""]) -> Int[Array, " batch"]:
        """Uniform over valid start rows (requires at least one).

        Draws the k-th valid row by an integer count, not `jr.choice(p=...)`: its float32
        cumulative sum over the whole buffer can round upward across a run of invalid rows and
        return one of them (an empty row, whose zero planner std made the KL terms NaN).
        """
        counts = jnp.cumsum(self.valid_start.astype(jnp.int32))
        k = jr.randint(key, (batch_size,), 0, counts[-1])
        return jnp.searchsorted(counts, k, side="right").astype(jnp.int32)

    def gather(self, starts: Int[Array, " batch"]) -> Batch:
        """The time-major batch of rows starts + 0..H."""
        rows = (starts[None, :] + jnp.arange(self.horizon + 1)[:, None]) % self.capacity
        h = self.horizon
        return Batch(
            obs=self.obs[rows],
            action=self.action[rows[:h]],
            reward=self.reward[rows[:h]],
            terminated=self.terminated[rows[:h]].astype(jnp.float32),
            plan_mean=self.plan_mean[rows],
            plan_std=self.plan_std[rows],
        )

    def write_plans(
        self,
        starts: Int[Array, " seq"],
        plan_mean: Float[Array, "horizon seq action"],
        plan_std: Float[Array, "horizon seq action"],
    ) -> "ReplayBuffer":
        """Overwrite the planner Gaussians of rows starts + 0..H-1 (lazy reanalyze)."""
        rows = (starts[None, :] + jnp.arange(plan_mean.shape[0])[:, None]) % self.capacity
        return eqx.tree_at(
            lambda b: (b.plan_mean, b.plan_std),
            self,
            (self.plan_mean.at[rows].set(plan_mean), self.plan_std.at[rows].set(plan_std)),
        )

    @property
    def num_valid_starts(self) -> Int[Array, ""]:
        return jnp.sum(self.valid_start)


def buffer_bytes(capacity: int, obs_dim: int, action_dim: int) -> int:
    """Device memory of one seed's buffer."""
    floats = obs_dim + 3 * action_dim + 1
    return capacity * (4 * floats + 2) + 4


def default_capacity(steps: int, episode_length: int, limit: int = 1_000_000) -> int:
    """Rows for a whole run (one extra row per episode for its final observation), at most 1M."""
    return min(limit, steps + steps // episode_length + 2)
