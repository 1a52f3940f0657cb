"""`lax` control flow over PyTrees that hold non-array leaves (activation functions, static
configuration): the arrays go through `lax`, everything else is closed over."""

from collections.abc import Callable, Sequence
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Int, PyTree


def filter_scan(
    f: Callable[[PyTree, Any], tuple[PyTree, PyTree]],
    init: PyTree,
    xs: Any,
    length: int | None = None,
):
    """`lax.scan` whose carry may contain non-array leaves (they must not change)."""
    dynamic, static = eqx.partition(init, eqx.is_array)

    def body(carry, x):
        new_carry, out = f(eqx.combine(carry, static), x)
        return eqx.filter(new_carry, eqx.is_array), out

    dynamic, outs = jax.lax.scan(body, dynamic, xs, length=length)
    return eqx.combine(dynamic, static), outs


def filter_switch(index: Int[Array, ""], branches: Sequence[Callable[[], PyTree]]) -> PyTree:
    """`lax.switch` over zero-argument branches whose outputs may contain non-array leaves.

    The branches must return the same structure and the same non-array leaves; only the
    chosen branch runs when `index` is not batched.
    """
    statics = []

    def arrays_only(branch):
        def run():
            dynamic, static = eqx.partition(branch(), eqx.is_array)
            statics.append(static)
            return dynamic

        return run

    dynamic = jax.lax.switch(index, [arrays_only(b) for b in branches])
    return eqx.combine(dynamic, statics[0])


def filter_cond(
    pred: Bool[Array, ""], true_fn: Callable[[], PyTree], false_fn: Callable[[], PyTree]
) -> PyTree:
    """`lax.cond` over zero-argument branches whose outputs may contain non-array leaves."""
    return filter_switch(pred.astype(jnp.int32), [false_fn, true_fn])


def filter_fori_loop(
    lower: int,
    upper: Int[Array, ""] | int,
    body: Callable[[Int[Array, ""], PyTree], PyTree],
    init: PyTree,
) -> PyTree:
    """`lax.fori_loop` whose carry may contain non-array leaves (they must not change)."""
    dynamic, static = eqx.partition(init, eqx.is_array)
    out = jax.lax.fori_loop(
        lower,
        upper,
        lambda i, c: eqx.filter(body(i, eqx.combine(c, static)), eqx.is_array),
        dynamic,
    )
    return eqx.combine(out, static)
