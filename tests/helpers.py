"""Small helpers shared by several test modules."""

import jax


def rollout(env, keys, actions):
    """Reset `env` with `keys`, then step through `actions` (time, seed, action) in one jit.

    **Returns:** `(first obs, final env state, stacked TimeSteps, stacked step counters)`.
    """

    @jax.jit
    def run(keys, actions):
        state, obs = env.reset(keys)

        def body(state, action):
            state, timestep = env.step(state, action)
            return state, (timestep, state.t)

        final_state, (timesteps, t) = jax.lax.scan(body, state, actions)
        return obs, final_state, timesteps, t

    return run(keys, actions)
