"""Networks: TD-MPC2 architecture, initialisation, SimNorm, ensembles, dropout, model sizes."""

import dataclasses
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

from pompc_eqx.agent import init_agent
from pompc_eqx.config import MODEL_SIZES
from pompc_eqx.networks import MLP, Ensemble, NormedLinear, SimNorm, mish
from pompc_eqx.presets import PRESETS
from pompc_eqx.world_model import count_params, ensemble_values, make_networks, random_pair


CARTPOLE = dict(obs_dim=5, action_dim=1, episode_length=500)


def agent_config(preset="pompc", size="tiny", **model):
    cfg = dataclasses.replace(PRESETS[preset][1], model_size=size)
    if model:
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, **model))
    return cfg.agent_config(**CARTPOLE)


def expected_count(obs, act, enc_dim, mlp_dim, latent_dim, num_enc_layers, num_q, bins=101):
    """TD-MPC2's parameter count written from its architecture table (anchors §1.2):
    Linear = in*out + out, LayerNorm = 2*out; NormedLinear = Linear + LayerNorm."""
    lin = lambda i, o: i * o + o
    nl = lambda i, o: lin(i, o) + 2 * o
    enc_layers = max(num_enc_layers - 1, 1)
    enc = nl(obs, enc_dim) + (enc_layers - 1) * nl(enc_dim, enc_dim) + nl(enc_dim, latent_dim)
    za = latent_dim + act
    dyn = nl(za, mlp_dim) + nl(mlp_dim, mlp_dim) + nl(mlp_dim, latent_dim)
    head = nl(za, mlp_dim) + nl(mlp_dim, mlp_dim) + lin(mlp_dim, bins)
    pi = nl(latent_dim, mlp_dim) + nl(mlp_dim, mlp_dim) + lin(mlp_dim, 2 * act)
    return dict(encoder=enc, dynamics=dyn, reward=head, policy=pi, q=num_q * head)


@pytest.mark.slow
def test_param_count_5m_cartpole():
    """The 5M model on cartpole-swingup (obs 5, action 1): h, d, R, pi_s and 5 Q heads."""
    cfg = agent_config("bmpc", "5m")
    nets = make_networks(cfg, key=jr.key(0))
    parts = dict(
        encoder=nets.encoder,
        dynamics=nets.dynamics,
        reward=nets.reward,
        policy=nets.policy,
        q=nets.value,
    )
    counts = {name: count_params(part) for name, part in parts.items()}
    total = count_params(tuple(parts.values()))
    print(f"\n5M model on cartpole-swingup (obs 5, action 1): {total:,} parameters {counts}")
    assert abs(total - 4.93e6) / 4.93e6 < 0.01
    assert counts == expected_count(5, 1, **MODEL_SIZES["5m"])
    assert nets.value.heads.num_members == 5
    # PO-MPC's objective adds a prior (same size as pi_s) and Q^lambda with its target (as Q)
    full = eqx.filter_eval_shape(init_agent, agent_config("pompc", "5m"), key=jr.key(0))
    assert count_params(full.nets) == total
    assert count_params(full.objective.prior.net) == counts["policy"]
    assert (
        count_params(full.objective.qlam) == count_params(full.objective.target_qlam) == counts["q"]
    )


def _shape_count(tree):
    return sum(math.prod(x.shape) for x in jax.tree.leaves(tree) if hasattr(x, "shape"))


@pytest.mark.parametrize("size", sorted(MODEL_SIZES))
def test_model_sizes_build_with_table_dims(size):
    dims = MODEL_SIZES[size]
    cfg = agent_config("pompc", size)
    state = eqx.filter_eval_shape(init_agent, cfg, key=jr.key(0))
    nets, qlam = state.nets, state.objective.qlam
    lat, mlp, enc, nq = dims["latent_dim"], dims["mlp_dim"], dims["enc_dim"], dims["num_q"]
    assert len(nets.encoder.hidden) == max(dims["num_enc_layers"] - 1, 1)
    assert all(layer.linear.weight.shape[0] == enc for layer in nets.encoder.hidden)
    assert nets.encoder.hidden[0].linear.weight.shape == (enc, 5)
    assert nets.encoder.out.linear.weight.shape == (lat, enc)
    assert nets.dynamics.hidden[0].linear.weight.shape == (mlp, lat + 1)
    assert nets.dynamics.out.linear.weight.shape == (lat, mlp)
    assert nets.reward.out.weight.shape == (101, mlp)
    assert nets.policy.mlp.out.weight.shape == (2, mlp)
    for ens in (nets.value.heads, qlam):
        assert ens.members.hidden[0].linear.weight.shape == (nq, mlp, lat + 1)
        assert ens.members.out.weight.shape == (nq, 101, mlp)
        assert ens.members.hidden[0].dropout == 0.01 and ens.members.hidden[1].dropout == 0.0
    assert state.objective.prior.net.mlp.out.weight.shape == (2, mlp)
    counts = expected_count(5, 1, **dims)
    assert _shape_count(nets.value) == counts["q"] == _shape_count(qlam)
    assert _shape_count(nets.encoder) == counts["encoder"]
    assert _shape_count(nets.dynamics) == counts["dynamics"]


@pytest.fixture(scope="module")
def tiny_state():
    return eqx.filter_jit(init_agent)(agent_config("pompc", "tiny"), key=jr.key(1))


@pytest.fixture(scope="module")
def tiny_nets(tiny_state):
    return tiny_state.nets


@pytest.mark.slow
def test_reward_and_q_heads_read_zero_at_init(tiny_state):
    nets, qlam = tiny_state.nets, tiny_state.objective.qlam
    keys = jr.split(jr.key(2), 4)
    z = jax.vmap(nets.encode)(jr.normal(keys[0], (16, 5)))
    a = jr.uniform(keys[1], (16, 1), minval=-1, maxval=1)
    for head in (nets.reward, nets.value.heads.members, qlam.members):
        np.testing.assert_array_equal(head.out.weight, 0.0)
        np.testing.assert_array_equal(head.out.bias, 0.0)
    np.testing.assert_array_equal(jax.vmap(nets.reward_logits)(z, a), 0.0)
    # uniform logits: the expectation over the symmetric bins is 0 up to float32 summation error
    np.testing.assert_allclose(jax.vmap(nets.reward_value)(z, a), 0.0, atol=1e-6)
    for ens in (nets.value.heads, qlam):
        vals = jax.vmap(lambda zz, aa: ensemble_values(ens, nets.two_hot, zz, aa))(z, a)
        assert vals.shape == (16, 5)
        np.testing.assert_allclose(vals, 0.0, atol=1e-6)
        with_dropout = jax.vmap(
            lambda zz, aa, k: ensemble_values(ens, nets.two_hot, zz, aa, key=k)
        )(z, a, jr.split(keys[2], 16))
        np.testing.assert_allclose(with_dropout, 0.0, atol=1e-6)
    # the other last layers are not zero (trunc-normal 0.02)
    for w in (
        nets.policy.mlp.out.weight,
        nets.dynamics.out.linear.weight,
        nets.encoder.out.linear.weight,
    ):
        assert 0.005 < float(jnp.std(w)) < 0.03


def test_simnorm_groups_sum_to_one(tiny_nets, getkey):
    nets = tiny_nets
    z = nets.encode(3.0 * jr.normal(getkey(), (5,)))
    z2 = nets.next(z, jnp.array([0.3]))
    for latent in (z, z2):
        groups = latent.reshape(-1, 8)
        np.testing.assert_allclose(groups.sum(-1), 1.0, rtol=1e-5)
        assert bool(jnp.all(latent > 0))
    x = jr.normal(getkey(), (24,)) * 4
    y = SimNorm(6)(x)
    expected = np.exp(np.asarray(x).reshape(4, 6))
    expected = (expected / expected.sum(-1, keepdims=True)).reshape(-1)
    np.testing.assert_allclose(y, expected, rtol=1e-5)


def test_normed_linear_order_and_mish(getkey):
    """Linear -> LayerNorm -> activation, Mish = x tanh(softplus x)."""
    layer = NormedLinear(4, 6, key=getkey())
    x = jr.normal(getkey(), (4,))
    y = np.asarray(layer.linear.weight) @ np.asarray(x) + np.asarray(layer.linear.bias)
    y = (y - y.mean()) / np.sqrt(y.var() + 1e-5)
    expected = y * np.tanh(np.log1p(np.exp(y)))
    np.testing.assert_allclose(layer(x), expected, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(
        mish(jnp.array([0.0, 1.0])), [0.0, math.tanh(math.log1p(math.e))], rtol=1e-6
    )


def _head(key, dropout=0.0):
    return MLP(6, (8, 8), 3, dropout=dropout, key=key)


@eqx.filter_jit
def _ensemble_outputs(key):
    k1, k2, k3 = jr.split(key, 3)
    ens = Ensemble(_head, 4, key=k1)
    # random non-zero output layers so the outputs carry the member's identity
    ens = eqx.tree_at(
        lambda e: e.members.out.weight, ens, jr.normal(k2, ens.members.out.weight.shape)
    )
    x = jr.normal(k3, (6,))
    idx = jnp.array([3, 1])
    sub = ens.subset(idx)
    single = jax.tree.map(lambda leaf: leaf[2] if eqx.is_array(leaf) else leaf, ens.members)
    return ens, ens(x), sub(x), sub, single(x), idx


@pytest.mark.slow
def test_ensemble_members_differ_and_subset_picks_members(getkey):
    ens, out, sub_out, sub, single_out, idx = _ensemble_outputs(getkey())
    assert out.shape == (4, 3)
    w = ens.members.hidden[0].linear.weight
    for i in range(4):
        for j in range(i + 1, 4):
            assert not np.allclose(w[i], w[j])
            assert not np.allclose(out[i], out[j])
    assert sub.num_members == 2
    np.testing.assert_allclose(sub_out, out[idx], rtol=1e-6)
    np.testing.assert_array_equal(sub.members.hidden[0].linear.weight, w[idx])
    # member i alone equals a standalone MLP with member i's weights (up to float32 rounding:
    # the batched and the single matmul may sum in another order)
    np.testing.assert_allclose(single_out, out[2], rtol=1e-5)


def test_random_pair_distinct_and_covers_all_pairs(getkey):
    pairs = jax.vmap(lambda k: random_pair(k, 5))(jr.split(getkey(), 400))
    assert bool(jnp.all(pairs[:, 0] != pairs[:, 1]))
    assert bool(jnp.all((pairs >= 0) & (pairs < 5)))
    seen = {tuple(sorted(map(int, p))) for p in pairs}
    assert len(seen) == 10


def test_dropout_only_with_a_key(getkey):
    p = 0.5
    mlp = _head(getkey(), dropout=p)
    x = jr.normal(getkey(), (6,))
    no_key = mlp(x)
    np.testing.assert_array_equal(no_key, mlp(x))
    # without a key the network is the plain forward pass (no mask, no 1/(1-p) rescaling)
    h0 = mlp.hidden[0]
    plain = mlp.out(mlp.hidden[1](h0.activation(h0.norm(h0.linear(x)))))
    np.testing.assert_allclose(no_key, plain, rtol=1e-6)
    k1, k2 = getkey(), getkey()
    with_k1 = mlp(x, key=k1)
    assert not np.allclose(with_k1, no_key)
    np.testing.assert_array_equal(with_k1, mlp(x, key=k1))
    assert not np.allclose(with_k1, mlp(x, key=k2))
    # only the first hidden layer drops: its pre-norm activations lose about half their units
    y = h0.linear(x)
    keep = jr.bernoulli(k1, 1 - p, y.shape)
    dropped = jnp.where(keep, y / (1 - p), 0.0)
    expected = mlp.out(mlp.hidden[1](h0.activation(h0.norm(dropped))))
    np.testing.assert_allclose(with_k1, expected, rtol=1e-5, atol=1e-6)


@eqx.filter_jit
def _identical_members_outputs(key):
    k1, k2, k3 = jr.split(key, 3)
    ens = Ensemble(lambda k: _head(k, dropout=0.5), 3, key=k1)
    # identical members: any difference between outputs must come from the dropout masks
    ens = eqx.tree_at(
        lambda e: e.members,
        ens,
        jax.tree.map(
            lambda leaf: jnp.broadcast_to(leaf[:1], leaf.shape) if eqx.is_array(leaf) else leaf,
            ens.members,
        ),
    )
    ens = eqx.tree_at(lambda e: e.members.out.weight, ens, jnp.ones_like(ens.members.out.weight))
    x = jr.normal(k2, (6,))
    return ens(x), ens(x, key=k3)


def test_ensemble_heads_draw_their_own_dropout_masks(getkey):
    out, dropped = _identical_members_outputs(getkey())
    np.testing.assert_allclose(out[0], out[1], rtol=1e-6)
    np.testing.assert_allclose(out[0], out[2], rtol=1e-6)
    assert not np.allclose(dropped[0], dropped[1]) and not np.allclose(dropped[1], dropped[2])


def test_count_params_of_an_abstract_tree():
    cfg = agent_config("pompc", "tiny")
    abstract = eqx.filter_eval_shape(make_networks, cfg, key=jr.key(0))
    assert count_params(abstract) == _shape_count(abstract) > 0
