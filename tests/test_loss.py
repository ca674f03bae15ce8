"""The four-bound clip rule and its presets, checked against the formulas they claim to reproduce."""
import math

import pytest
import torch

from abcx.methods import clip as C, stats as S
from abcx.methods.runtime import bounds_for
from abcx.errors import UserError

INF = math.inf


def random_batch(seed=0, b=16, t=12):
    g = torch.Generator().manual_seed(seed)
    ratio = torch.exp(torch.randn(b, t, generator=g) * 0.5).requires_grad_(True)
    adv = torch.randn(b, 1, generator=g)
    adv[::5] = 0.0
    return ratio, adv


def grad_of(fn, ratio):
    r = ratio.detach().clone().requires_grad_(True)
    value = fn(r).sum()
    value.backward()
    return value.detach(), r.grad


def ppo(r, a, lo, hi):
    return -torch.min(r * a, torch.clamp(r, 1 - lo, 1 + hi) * a)


def test_abc_clips_every_quadrant_and_zeroes_the_gradient_there():
    ratio, adv = random_batch()
    b = C.Bounds(0.2, 0.2, 0.2, 0.2)
    value, grad = grad_of(lambda r: C.per_token_loss(r, adv, b), ratio)
    outside = (ratio < 0.8) | (ratio > 1.2)
    assert torch.all(grad[outside.expand_as(grad)] == 0)
    inside = ~outside & (adv != 0)
    assert torch.allclose(grad[inside], (-adv.expand_as(grad))[inside])
    expected = -torch.clamp(ratio, 0.8, 1.2) * adv
    assert torch.allclose(C.per_token_loss(ratio, adv, b), expected)


@pytest.mark.parametrize("lo,hi", [(0.2, 0.2), (0.2, 0.28), (0.1, 0.4)])
def test_grpo_preset_equals_ppo_clip_in_value_and_gradient(lo, hi):
    ratio, adv = random_batch(1)
    b = bounds_for("grpo", {"eps_low": lo, "eps_high": hi})
    v1, g1 = grad_of(lambda r: C.per_token_loss(r, adv, b), ratio)
    v2, g2 = grad_of(lambda r: ppo(r, adv, lo, hi), ratio)
    assert torch.allclose(v1, v2) and torch.allclose(g1, g2)


def test_dual_clip_preset_equals_verls_dual_clip():
    ratio, adv = random_batch(2)
    ratio = (ratio.detach() * 2).requires_grad_(True)  # reach past c = 3
    c, lo, hi = 3.0, 0.2, 0.28

    def verl(r):
        clip1 = torch.max(-adv * r, -adv * torch.clamp(r, 1 - lo, 1 + hi))
        clip2 = torch.min(-adv * c, clip1)
        return torch.where(adv < 0, clip2, clip1)

    b = bounds_for("dual_clip", {"eps_low": lo, "eps_high": hi, "clip_ratio_c": c})
    v1, g1 = grad_of(lambda r: C.per_token_loss(r, adv, b), ratio)
    v2, g2 = grad_of(verl, ratio)
    assert torch.allclose(v1, v2) and torch.allclose(g1, g2)
    assert (ratio > c).any(), "the test must reach the dual-clip bound"


def test_two_sided_preset_equals_trls_delta_clip():
    ratio, adv = random_batch(3)
    ratio = (ratio.detach() * 2).requires_grad_(True)
    delta, lo, hi = 2.0, 0.2, 0.2

    def trl_delta(r):
        return -torch.min(torch.clamp(r, max=delta) * adv, torch.clamp(r, 1 - lo, 1 + hi) * adv)

    b = bounds_for("two_sided", {"eps_low": lo, "eps_high": hi, "delta": delta})
    v1, g1 = grad_of(lambda r: C.per_token_loss(r, adv, b), ratio)
    v2, g2 = grad_of(trl_delta, ratio)
    assert torch.allclose(v1, v2) and torch.allclose(g1, g2)


def test_grpo_quadrant_counts_show_the_unclipped_blind_spots():
    ratio = torch.tensor([[1.5, 0.5, 1.0], [0.5, 1.5, 1.0]])
    adv = torch.tensor([[1.0], [-1.0]])
    mask = torch.ones_like(ratio)
    grpo = bounds_for("grpo", {"eps_low": 0.2, "eps_high": 0.2})
    abc = C.Bounds(0.2, 0.2, 0.2, 0.2)
    g = S.quadrant_fractions(S.quadrant_counts(ratio, adv, mask, grpo))
    a = S.quadrant_fractions(S.quadrant_counts(ratio, adv, mask, abc))
    for f in (g, a):
        assert f["clip/q1"] == f["clip/q2"] == f["clip/q3"] == f["clip/q4"] == pytest.approx(1 / 6)
    assert g["clip/clipped"] == pytest.approx(2 / 6)  # Q1 and Q3 only
    assert a["clip/clipped"] == pytest.approx(4 / 6)
    assert g["ratio/min"] == 0.5 and g["ratio/max"] == 1.5 and g["ratio/mean"] == pytest.approx(1.0)


def test_quadrant_counts_ignore_padding_and_count_zero_advantages():
    ratio = torch.tensor([[3.0, 3.0], [1.0, 9.0]])
    adv = torch.tensor([[0.0], [1.0]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    f = S.quadrant_fractions(S.quadrant_counts(ratio, adv, mask, C.Bounds(0.2, 0.2, 0.2, 0.2)))
    assert f["clip/zero_adv"] == pytest.approx(2 / 3)
    assert f["clip/q4"] == pytest.approx(2 / 3)  # A = 0 belongs to the A <= 0 branch
    assert f["clip/q1"] == 0 and f["ratio/max"] == 3.0


def test_sequence_level_ratio_is_exp_of_masked_mean_log_ratio():
    log_ratio = torch.tensor([[0.2, 0.4, 9.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    r = C.importance_ratio(log_ratio, mask, "sequence")
    assert r.shape == (1, 1) and torch.allclose(r, torch.exp(torch.tensor([[0.3]])))


@pytest.mark.parametrize(
    "field,value,lower,fragment",
    [("eps1", -0.1, False, "negative"), ("eps2", 1.0, True, "lower bound"), ("eps3", math.nan, False, "nan"),
     ("eps4", "abc", True, "not a number")],
)
def test_bad_epsilons_are_one_line_errors_naming_the_field(field, value, lower, fragment):
    with pytest.raises(UserError) as err:
        C.check_eps(field, value, lower=lower)
    assert field in str(err.value) and fragment in str(err.value) and "\n" not in str(err.value)


def test_absent_bounds_are_inf_and_upper_bounds_may_exceed_one():
    b = C.Bounds(eps1=2.0, eps2=INF, eps3=INF, eps4=0.2)
    ratio = torch.tensor([[0.01, 2.5, 9.0], [0.01, 2.5, 9.0]])
    adv = torch.tensor([[1.0], [-1.0]])
    clipped = C.clipped_ratio(ratio, adv, b)
    assert clipped[0].tolist() == pytest.approx([0.01, 2.5, 3.0])  # A>0: no lower bound, upper 1+2.0
    assert clipped[1].tolist() == pytest.approx([0.8, 2.5, 9.0])  # A<=0: lower 1-0.2, no upper bound


def test_unknown_method_lists_the_valid_ones():
    with pytest.raises(UserError, match="abc_grpo"):
        bounds_for("ppo2", {})


@pytest.mark.parametrize("loss_type", S.LOSS_TYPES)
def test_aggregation_ignores_padding(loss_type):
    per_token = torch.tensor([[1.0, 2.0, 100.0], [3.0, 100.0, 100.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    got = S.aggregate(per_token, mask, loss_type, max_completion_length=3, num_items=torch.tensor(3.0))
    expected = {"grpo": (1.5 + 3) / 2, "bnpo": 6 / 3, "dr_grpo": 6 / 6, "dapo": 6 / 3}[loss_type]
    assert got.item() == pytest.approx(expected)
