"""The example plugin's tests, written to be copied: replace the rule, its hand-worked numbers and its
limit. They check what abcx cannot check for you:

1. the declaration is one abcx accepts (the same check abcx runs when it loads a plugin);
2. the weights and loss values on tokens worked by hand, one token per case, distinct values;
3. the gradient abcx trains with is the declared weight, and the loss value's own derivative;
4. a limit where the rule is a built-in method (tau -> 0 is grpo).

That it trains and logs abcx's metrics is abcx's own test (tests/test_plugins.py).
"""
import math

import pytest
import torch

import abcx_example_rule
from abcx import methods
from abcx.methods.plugins import declared
from abcx.methods.terms import LossInputs, surrogate

EPS_LOW, EPS_HIGH, TAU = 0.1, 0.3, 0.5  # distinct, so a swapped parameter fails
HIGH, LOW = 1 + EPS_HIGH, 1 - EPS_LOW

# (ratio r, advantage A, weight, loss value -A f(r)): each token its own sequence, so each has its own A
CASES = [
    (1.1, 2.0, 1.1, -2.0 * 1.1),  # A > 0 inside the band: plain r
    (1.5, 2.0, 1.5 * math.exp(-(1.5 - HIGH) / TAU), -2.0 * (HIGH + TAU * (1 - math.exp(-(1.5 - HIGH) / TAU)))),
    (0.5, 2.0, 0.5, -2.0 * 0.5),  # A > 0 below the band: GRPO does not cut it, neither does the taper
    (0.7, -1.0, 0.7 * math.exp(-(LOW - 0.7) / TAU), 1.0 * (LOW - TAU * (1 - math.exp(-(LOW - 0.7) / TAU)))),
    (1.6, -1.0, 1.6, 1.0 * 1.6),  # A <= 0 above the band: not cut
]


def batch(ratios, advantages):
    """One token per sequence, pi_old = 1 so that log pi = log r."""
    logp = torch.tensor(ratios, dtype=torch.float64).log().unsqueeze(-1).requires_grad_()
    adv = torch.tensor(advantages, dtype=torch.float64).unsqueeze(-1)
    return LossInputs(logp=logp, old_logp=torch.zeros_like(logp.detach()), advantages=adv,
                      mask=torch.ones_like(adv))


def flat(tensor):
    return tensor.squeeze(-1).tolist()


def rule(inputs, tau=TAU):
    return abcx_example_rule.example_rule(inputs, eps_low=EPS_LOW, eps_high=EPS_HIGH, tau=tau)


def test_the_declaration_is_one_abcx_accepts():
    (method,) = declared(abcx_example_rule)
    assert method.name == "example_rule"
    assert {p.name: p.default for p in method.params} == {"eps_low": 0.2, "eps_high": 0.2, "tau": 0.1}
    assert method.reference


def test_weights_and_values_on_tokens_worked_by_hand():
    ratios, advantages, weights, values = zip(*CASES)
    terms = rule(batch(ratios, advantages))
    assert flat(terms.weight) == pytest.approx(weights, rel=1e-12)
    assert flat(terms.value) == pytest.approx(values, rel=1e-12)


def test_the_gradient_is_the_weight_and_the_derivative_of_the_value():
    ratios, advantages, weights, _ = zip(*CASES)
    inputs = batch(ratios, advantages)
    surrogate(rule(inputs), inputs.logp, inputs.advantages).sum().backward()
    expected = [-w * a for w, a in zip(weights, advantages)]
    assert flat(inputs.logp.grad) == pytest.approx(expected, rel=1e-12)
    step = 1e-6  # central difference of the value in log r
    up, down = (rule(batch([r * math.exp(s) for r in ratios], advantages)).value for s in (step, -step))
    assert flat((up - down) / (2 * step)) == pytest.approx(expected, rel=1e-6)


def test_a_vanishing_taper_is_grpo():
    ratios = [0.5, 0.85, 1.05, 1.35, 1.8, 0.6, 0.95, 1.25, 1.9]
    advantages = [1.5] * 5 + [-0.5] * 4
    inputs = batch(ratios, advantages)
    grpo = methods.get("grpo").fn(inputs, eps_low=EPS_LOW, eps_high=EPS_HIGH)
    tapered = rule(inputs, tau=1e-9)
    assert flat(tapered.weight) == pytest.approx(flat(grpo.weight), abs=1e-9)
    assert flat(tapered.value) == pytest.approx(flat(grpo.value), abs=1e-6)  # abcx's bounds are float32
    assert 0 in flat(grpo.weight)  # the limit is tested where GRPO really cuts
