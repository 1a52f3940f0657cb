"""Building blocks of TD-MPC2's networks: NormedLinear, MLP, SimNorm and ensembles.

All modules act on one sample (callers `vmap`). Initialisation follows TD-MPC2: weights
~ truncated normal (std 0.02), biases 0, LayerNorm affine (1, 0); heads that regress two-hot
logits get a zero last-layer weight (`zero_last_layer`).
"""

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import optax
from jaxtyping import Array, Float, Int, Key, PyTree


def mish(x: Float[Array, "*shape"]) -> Float[Array, "*shape"]:
    """x * tanh(softplus(x)), written with one exp: tanh(log(1 + e^x)) = (e^2x + 2e^x) / (e^2x + 2e^x + 2).

    For x > 20 the ratio is 1 to float32 precision (and e^2x would overflow), so mish(x) = x."""
    e = jnp.exp(jnp.minimum(x, 20.0))
    n = e * (e + 2.0)
    return jnp.where(x > 20.0, x, x * n / (n + 2.0))


class SimNorm(eqx.Module):
    """Softmax over consecutive groups of `group_size` entries (simplicial normalisation)."""

    group_size: int = eqx.field(static=True)

    def __call__(self, x: Float[Array, " dim"]) -> Float[Array, " dim"]:
        groups = x.reshape(-1, self.group_size)
        return jax.nn.softmax(groups, axis=-1).reshape(x.shape)


def _trunc_normal(key: Key[Array, ""], shape: tuple[int, ...]) -> Float[Array, "..."]:
    return 0.02 * jr.truncated_normal(key, -2.0, 2.0, shape)


class Linear(eqx.Module):
    """y = W x + b with TD-MPC2's initialisation."""

    weight: Float[Array, "out in"]
    bias: Float[Array, " out"]

    def __init__(self, in_dim: int, out_dim: int, *, key: Key[Array, ""]):
        self.weight = _trunc_normal(key, (out_dim, in_dim))
        self.bias = jnp.zeros((out_dim,))

    def __call__(self, x: Float[Array, " in"]) -> Float[Array, " out"]:
        # x @ W.T, not W @ x: vmapped over batch and seeds it yields (seed, batch, out) directly;
        # W @ x made XLA:CPU copy a transpose after every layer (docs/results/peer.md).
        return x @ self.weight.T + self.bias


class NormedLinear(eqx.Module):
    """Linear -> Dropout (if p > 0 and a key is given) -> LayerNorm -> activation."""

    linear: Linear
    norm: eqx.nn.LayerNorm
    activation: Callable
    dropout: float = eqx.field(static=True)

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        activation: Callable = mish,
        dropout: float = 0.0,
        *,
        key: Key[Array, ""],
    ):
        self.linear = Linear(in_dim, out_dim, key=key)
        self.norm = eqx.nn.LayerNorm(out_dim, eps=1e-5)
        self.activation = activation
        self.dropout = dropout

    def __call__(
        self, x: Float[Array, " in"], *, key: Key[Array, ""] | None = None
    ) -> Float[Array, " out"]:
        y = self.linear(x)
        if self.dropout > 0 and key is not None:
            keep = jr.bernoulli(key, 1.0 - self.dropout, y.shape)
            y = jnp.where(keep, y / (1.0 - self.dropout), 0.0)
        return self.activation(self.norm(y))


class MLP(eqx.Module):
    """TD-MPC2's `mlp`: NormedLinear hidden layers (dropout on the first only), then either a
    NormedLinear with `out_activation` or, when that is None, a plain Linear.

    `key` only drives dropout: pass `None` for evaluation mode (planning, targets).
    """

    hidden: tuple[NormedLinear, ...]
    out: NormedLinear | Linear

    def __init__(
        self,
        in_dim: int,
        hidden_dims: tuple[int, ...],
        out_dim: int,
        out_activation: Callable | None = None,
        dropout: float = 0.0,
        *,
        key: Key[Array, ""],
    ):
        keys = jr.split(key, len(hidden_dims) + 1)
        dims = (in_dim, *hidden_dims)
        self.hidden = tuple(
            NormedLinear(dims[i], dims[i + 1], dropout=dropout if i == 0 else 0.0, key=keys[i])
            for i in range(len(hidden_dims))
        )
        if out_activation is None:
            self.out = Linear(dims[-1], out_dim, key=keys[-1])
        else:
            self.out = NormedLinear(dims[-1], out_dim, out_activation, key=keys[-1])

    def __call__(
        self, x: Float[Array, " in"], *, key: Key[Array, ""] | None = None
    ) -> Float[Array, " out"]:
        for i, layer in enumerate(self.hidden):
            x = layer(x, key=key if i == 0 else None)
        return self.out(x)


def zero_last_layer(mlp: MLP) -> MLP:
    """Zero the output weight (TD-MPC2 does this for reward and Q heads: uniform logits)."""
    return eqx.tree_at(lambda m: m.out.weight, mlp, jnp.zeros_like(mlp.out.weight))


class Ensemble(eqx.Module):
    """`num_members` copies of one MLP with independent weights, stacked on a leading axis."""

    members: MLP

    def __init__(
        self, make: Callable[[Key[Array, ""]], MLP], num_members: int, *, key: Key[Array, ""]
    ):
        self.members = eqx.filter_vmap(make)(jr.split(key, num_members))

    @property
    def num_members(self) -> int:
        return self.members.out.bias.shape[0]

    def __call__(
        self, x: Float[Array, " in"], *, key: Key[Array, ""] | None = None
    ) -> Float[Array, "member out"]:
        """All members' outputs; with a key, each member draws its own dropout mask."""
        if key is None:
            return eqx.filter_vmap(lambda m: m(x))(self.members)
        keys = jr.split(key, self.num_members)
        return eqx.filter_vmap(lambda m, k: m(x, key=k))(self.members, keys)

    def subset(self, index: Int[Array, " k"]) -> "Ensemble":
        """The ensemble restricted to the members in `index` (e.g. a random pair)."""
        members = jax.tree.map(
            lambda leaf: leaf[index] if eqx.is_array(leaf) else leaf, self.members
        )
        return eqx.tree_at(lambda e: e.members, self, members)


def tree_copy(tree: PyTree) -> PyTree:
    """A copy whose arrays do not share buffers with `tree` (targets must never alias)."""
    return jax.tree.map(lambda x: jnp.copy(x) if eqx.is_array(x) else x, tree)


def polyak(online: PyTree, target: PyTree, tau: float) -> PyTree:
    """target <- (1 - tau) target + tau online, over floating-point arrays only."""
    params, static = eqx.partition(target, eqx.is_inexact_array)
    online_params = eqx.filter(online, eqx.is_inexact_array)
    new = jax.tree.map(lambda o, t: t + tau * (o - t), online_params, params)
    return eqx.combine(new, static)


def adam_with_clip(lr: float, grad_clip: float, eps: float = 1e-8) -> optax.GradientTransformation:
    """Adam after a global-norm gradient clip (each trained part of the agent has its own)."""
    return optax.chain(optax.clip_by_global_norm(grad_clip), optax.adam(lr, eps=eps))


def vmap2(f: Callable) -> Callable:
    """Map over the two leading (time, batch) axes."""
    return jax.vmap(jax.vmap(f))


def keys2(key: Key[Array, ""], t: int, b: int) -> Key[Array, "t b"]:
    """One key per (time, batch) entry."""
    return jr.split(key, (t, b))
