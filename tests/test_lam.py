"""lambda as a module: fixed values and the dual (auto-tuned) update."""

import dataclasses
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest

from pompc_eqx.agent import init_agent
from pompc_eqx.lam import DualLambda, FixedLambda, make_lambda
from pompc_eqx.objectives import KLOnly, KLRegularized, MaxQ, objective_class
from pompc_eqx.presets import PRESETS
from pompc_eqx.priors import LearnedPrior, ReplayPrior


def test_fixed_lambda_never_changes():
    lam = FixedLambda(9.0)
    assert float(lam.update(jnp.asarray(123.0)).value()) == 9.0
    assert math.isinf(float(FixedLambda(math.inf).value()))


def test_dual_update_is_one_adam_step_on_the_lagrangian():
    lam = DualLambda(lam_init=2.0, kl_target=0.5, lr=0.1)
    # Reference: optax Adam on L(u) = u * (target - KL), u = log(lambda), written independently.
    u = jnp.log(2.0)
    opt = optax.adam(0.1)
    state = opt.init(u)
    for kl in [1.5, 1.2, 0.1, 0.9]:
        grad = jax.grad(lambda v: v * (0.5 - kl))(u)
        step, state = opt.update(grad, state, u)
        u = u + step
        lam = lam.update(jnp.asarray(kl))
        np.testing.assert_allclose(float(lam.value()), float(jnp.exp(u)), rtol=1e-6)


@pytest.mark.parametrize("kl, direction", [(2.0, 1), (0.01, -1)])
def test_dual_lambda_moves_toward_the_constraint(kl, direction):
    lam = DualLambda(lam_init=1.0, kl_target=0.5, lr=0.05)
    values = [float(lam.value())]
    for _ in range(20):
        lam = lam.update(jnp.asarray(kl))
        values.append(float(lam.value()))
    diffs = np.diff(values)
    assert np.all(np.sign(diffs) == direction), values


@pytest.mark.slow
def test_dual_lambda_settles_where_the_kl_meets_the_target():
    # A toy policy whose KL to its prior falls as lambda grows: KL = 2 / (1 + lambda).
    lam = DualLambda(lam_init=0.1, kl_target=0.5, lr=0.05)
    for _ in range(3000):
        lam = lam.update(2.0 / (1.0 + lam.value()))
    assert abs(float(lam.value()) - 3.0) < 0.3  # 2 / (1 + 3) = 0.5


def test_make_lambda_follows_the_config():
    base = PRESETS["pompc"][1]
    auto = dataclasses.replace(base, lam="auto").agent_config(3, 1, 200)
    assert isinstance(make_lambda(auto), DualLambda)
    assert isinstance(make_lambda(base.agent_config(3, 1, 200)), FixedLambda)


@pytest.mark.parametrize(
    "preset, lam, kind, prior",
    [
        ("tdmpc2", None, MaxQ, None),
        ("bmpc", None, KLOnly, ReplayPrior),
        ("pompc", None, KLRegularized, LearnedPrior),
        ("pompc", "auto", KLRegularized, LearnedPrior),
        ("pompc", 0.1, KLRegularized, LearnedPrior),
    ],
)
def test_lambda_selects_the_objective_and_its_modules(preset, lam, kind, prior):
    cfg = PRESETS[preset][1]
    if lam is not None:
        cfg = dataclasses.replace(cfg, lam=lam)
    agent_cfg = dataclasses.replace(cfg, model_size="tiny").agent_config(3, 1, 200)
    objective = eqx.filter_eval_shape(init_agent, agent_cfg, key=jr.key(0)).objective
    assert type(objective) is kind is objective_class(agent_cfg)
    assert kind.reads_planner_gaussians == (prior is not None)
    if prior is None:
        assert not hasattr(objective, "prior") and objective.critic() is None
    else:
        assert type(objective.prior) is prior
    # Q^lambda exists only where it is used (0 < lambda < inf)
    assert hasattr(objective, "qlam") == (kind is KLRegularized)
