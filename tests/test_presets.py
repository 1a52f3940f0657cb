"""Each preset's settings, pinned (docs/paper-to-code.md lists where each comes from)."""

import dataclasses
import math

import pytest

from pompc_eqx.objectives import KLOnly, KLRegularized, MaxQ, objective_class
from pompc_eqx.presets import PRESETS


# setting -> value per preset: tdmpc2, tdmpc2-repo, bmpc, bmpc-repo, pompc
SETTINGS = {
    "lam": (0.0, 0.0, math.inf, math.inf, 1.0),
    "prior": ("learned", "learned", "replay", "replay", "learned"),
    "prior_loss": ("reverse",) * 5,
    "model.value": ("q", "q", "q", "v", "q"),
    "model.num_q": (None, None, None, 2, None),
    "policy.distribution": ("tanh-gaussian", "tanh-gaussian") + ("clipped-gaussian",) * 3,
    "policy.log_std_min": (-10.0, -10.0, -3.0, -3.0, -3.0),
    "policy.log_std_max": (2.0, 2.0, 1.0, 1.0, 1.0),
    "planner.temperature": (1.0, 0.5, 1.0, 0.5, 1.0),
    "planner.reanalyze_log_std": (None, None) + ((-2.0, 1.0),) * 3,
    "planner.iterations": (6,) * 5,
    "planner.num_samples": (512,) * 5,
    "planner.num_elites": (64,) * 5,
    "planner.num_pi_trajs": (24,) * 5,
    "loss.discount": (0.99, "heuristic", 0.99, "heuristic", 0.99),
    "loss.policy_latents": ("horizon+1", "horizon+1", "horizon", "horizon", "horizon"),
    "loss.pretrain_policy": (True, True, False, False, False),
    "loss.kl_reduction": ("sum", "sum", "sum", "mean", "sum"),
    "loss.entropy_coef": (1e-4,) * 5,
    "optim.enc_lr_scale": (0.3,) * 5,
    "optim.grad_clip": (20.0,) * 5,
    "buffer.reanalyze_interval": (10,) * 5,
    "eval_at_start": (False, True, False, True, False),
    "eval_policy": (False, False, False, True, False),
}
NAMES = ("tdmpc2", "tdmpc2-repo", "bmpc", "bmpc-repo", "pompc")
OBJECTIVES = (MaxQ, MaxQ, KLOnly, KLOnly, KLRegularized)


def _get(cfg, dotted):
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


def test_every_preset_is_pinned():
    assert set(PRESETS) == set(NAMES)


@pytest.mark.parametrize("setting", sorted(SETTINGS))
def test_preset_settings(setting):
    for name, expected in zip(NAMES, SETTINGS[setting]):
        assert _get(PRESETS[name][1], setting) == expected, (name, setting)


@pytest.mark.parametrize("name, objective", list(zip(NAMES, OBJECTIVES)))
def test_preset_objective_and_discount(name, objective):
    cfg = PRESETS[name][1]
    dmc = dataclasses.replace(cfg, model_size="tiny").agent_config(5, 1, 500)
    hb = dataclasses.replace(cfg, model_size="tiny").agent_config(5, 1, 1000)
    assert objective_class(dmc) is objective
    heuristic = cfg.loss.discount == "heuristic"
    assert dmc.discount == 0.99 and hb.discount == (0.995 if heuristic else 0.99)
    assert cfg.preset == name
