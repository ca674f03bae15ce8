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


def test_quadrant_counts_ignore_padding_and_count_zero_advantages_on_their_own():
    ratio = torch.tensor([[3.0, 3.0], [1.0, 9.0]])
    adv = torch.tensor([[0.0], [1.0]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    f = S.quadrant_fractions(S.quadrant_counts(ratio, adv, mask, C.Bounds(0.2, 0.2, 0.2, 0.2)))
    assert f["clip/zero_adv"] == f["clip/zero_adv_out"] == pytest.approx(2 / 3)
    assert f["clip/q4"] == 0  # A = 0 carries no gradient: no clip event, in no quadrant
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


# --- Four distinct bounds: a swapped epsilon (in the clip, the gradient or the counts) must fail ----------
# eps1 = 0.1 (A>0 up), eps2 = 0.2 (A>0 down), eps3 = 0.3 (A<=0 up), eps4 = 0.4 (A<=0 down), so
# A>0 keeps [0.8, 1.1] and A<=0 keeps [0.6, 1.3]. Row 0 has A > 0, row 1 A < 0.
DISTINCT = C.Bounds(eps1=0.1, eps2=0.2, eps3=0.3, eps4=0.4)
GRID = torch.tensor([[0.70, 0.75, 0.79, 0.90, 1.00, 1.12, 1.05, 1.00],
                     [0.50, 0.55, 0.70, 1.31, 1.40, 1.50, 1.20, 1.60]])
GRID_ADV = torch.tensor([[1.5], [-0.5]])
KEEP = {True: (0.8, 1.1), False: (0.6, 1.3)}  # written out by hand from the four epsilons above


def terms_and_grad(ratio, adv, bounds, level="token"):
    from abcx.methods.terms import LossInputs, surrogate

    logp = ratio.log().clone().requires_grad_(True)
    inputs = LossInputs(logp=logp, old_logp=torch.zeros_like(ratio), advantages=adv, mask=torch.ones_like(ratio))
    terms = C.four_bound_terms(inputs, bounds, level)
    surrogate(terms, logp, adv).sum().backward()
    return terms, logp.grad


def reference_grad(ratio, adv, keep):
    """d/d log pi of -clamp(r, lo, hi) * A with lo, hi picked by the sign of A from `keep`."""
    logp = ratio.log().clone().requires_grad_(True)
    r = logp.exp()
    lo = torch.tensor([[keep[bool(a > 0)][0]] for a in adv[:, 0]])
    hi = torch.tensor([[keep[bool(a > 0)][1]] for a in adv[:, 0]])
    (-torch.clamp(r, lo, hi) * adv).sum().backward()
    return torch.clamp(r, lo, hi).detach(), logp.grad


def test_distinct_bounds_clip_each_sign_by_its_own_pair():
    clipped = C.clipped_ratio(GRID, GRID_ADV, DISTINCT)
    assert clipped[0].tolist() == pytest.approx([0.8, 0.8, 0.8, 0.9, 1.0, 1.1, 1.05, 1.0])
    assert clipped[1].tolist() == pytest.approx([0.6, 0.6, 0.7, 1.3, 1.3, 1.3, 1.2, 1.3])


def test_distinct_bounds_value_and_gradient_of_the_policy_terms():
    terms, grad = terms_and_grad(GRID, GRID_ADV, DISTINCT)
    clipped, expected = reference_grad(GRID, GRID_ADV, KEEP)
    assert torch.allclose(terms.value, -clipped * GRID_ADV)
    assert torch.allclose(grad, expected)
    zero = grad == 0
    assert zero[0].tolist() == [True, True, True, False, False, True, False, False]
    assert zero[1].tolist() == [True, True, False, True, True, True, False, True]


def test_distinct_bounds_quadrant_counts():
    counts = S.quadrant_counts(GRID, GRID_ADV, torch.ones_like(GRID), DISTINCT)
    got = [int(counts[f"clip/q{i}"]) for i in range(1, 5)]
    # Q1: A>0, r > 1.1 -> 1.12; Q2: A>0, r < 0.8 -> 3; Q3: A<0, r < 0.6 -> 2; Q4: A<0, r > 1.3 -> 4
    assert got == [1, 3, 2, 4]
    assert int(counts["clip/clipped"]) == 10


# A third row with A = 0: the rule bounds it with the A <= 0 pair [0.6, 1.3] (0.70 and 1.20 are inside
# that band though outside A > 0's [0.8, 1.1]); 0.50 (below), 1.31 and 1.40 (above) are outside it.
ZERO_ROW = [0.50, 0.70, 0.79, 1.00, 1.12, 1.20, 1.31, 1.40]
GRID3, GRID3_ADV = torch.cat([GRID, torch.tensor([ZERO_ROW])]), torch.tensor([[1.5], [-0.5], [0.0]])


def test_a_clip_event_has_a_nonzero_advantage_and_zero_advantage_tokens_are_counted_on_their_own():
    counts = S.quadrant_counts(GRID3, GRID3_ADV, torch.ones_like(GRID3), DISTINCT)
    assert [int(counts[f"clip/q{i}"]) for i in range(1, 5)] == [1, 3, 2, 4]  # the A = 0 row adds to none
    assert int(counts["clip/zero_adv"]) == 8 and int(counts["clip/zero_adv_out"]) == 3
    # The bounds the loss applies are unchanged: the three A = 0 tokens outside [0.6, 1.3] are clipped.
    assert int(counts["clip/clipped"]) == 10 + 3
    assert torch.allclose(C.clipped_ratio(GRID3, GRID3_ADV, DISTINCT)[2],
                          torch.tensor([0.6, 0.7, 0.79, 1.0, 1.12, 1.2, 1.3, 1.3]))


def test_gradient_shares_leave_zero_advantage_tokens_out_of_the_quadrants():
    from abcx.methods.terms import PolicyTerms

    penalty = torch.zeros_like(GRID3)
    penalty[2] = 0.25  # a penalty (KL-like) gives the A = 0 row a gradient; A itself gives none
    terms = PolicyTerms(value=torch.zeros_like(GRID3), weight=GRID3.clone(), natural=GRID3, penalty=penalty)
    f = S.quadrant_fractions(S.quadrant_counts(GRID3, GRID3_ADV, torch.ones_like(GRID3), DISTINCT, terms))
    mass = (GRID3 * GRID3_ADV - penalty).abs()
    total = mass.sum().item()
    by_hand = {"q1": mass[0, 5], "q2": mass[0, :3].sum(), "q3": mass[1, :2].sum(), "q4": mass[1, [3, 4, 5, 7]].sum(),
               "zero_adv_out": mass[2, [0, 6, 7]].sum()}
    for part, value in by_hand.items():
        assert f[f"grad/share_{part}"] == pytest.approx(value.item() / total)
    assert f["grad/share_zero_adv_out"] == pytest.approx(3 * 0.25 / total)
    assert f["grad/share_in"] == pytest.approx(1 - sum(v.item() for v in by_hand.values()) / total)


# inf on one side at a time: that bound vanishes from the clip; the band borrows the same side's other bound
@pytest.mark.parametrize("absent,keep,band_counts", [
    ("eps1", {True: (0.8, math.inf), False: (0.6, 1.3)}, [0, 3, 2, 4]),   # Q1 band 1 + eps3 = 1.3
    ("eps2", {True: (0.0, 1.1), False: (0.6, 1.3)}, [1, 0, 2, 4]),        # Q2 band 1 - eps4 = 0.6
    ("eps3", {True: (0.8, 1.1), False: (0.6, math.inf)}, [1, 3, 2, 5]),   # Q4 band 1 + eps1 = 1.1
    ("eps4", {True: (0.8, 1.1), False: (0.0, 1.3)}, [1, 3, 3, 4]),        # Q3 band 1 - eps2 = 0.8
])
def test_an_absent_bound_on_each_side(absent, keep, band_counts):
    bounds = C.Bounds(**{**vars(DISTINCT), absent: INF})
    terms, grad = terms_and_grad(GRID, GRID_ADV, bounds)
    clipped, expected = reference_grad(GRID, GRID_ADV, keep)
    assert torch.allclose(C.clipped_ratio(GRID, GRID_ADV, bounds), clipped)
    assert torch.allclose(grad, expected)
    counts = S.quadrant_counts(GRID, GRID_ADV, torch.ones_like(GRID), bounds, terms)
    got = [int(counts[f"clip/q{i}"]) for i in range(1, 5)]
    assert got == band_counts
    assert int(counts["clip/clipped"]) == int((expected == 0).sum())


def test_gradient_share_goes_to_the_quadrants_a_method_leaves_unclipped():
    grpo = C.Bounds(eps1=0.1, eps2=INF, eps3=INF, eps4=0.4)
    terms, _ = terms_and_grad(GRID, GRID_ADV, grpo)
    f = S.quadrant_fractions(S.quadrant_counts(GRID, GRID_ADV, torch.ones_like(GRID), grpo, terms))
    mass = (terms.weight * GRID_ADV).abs()
    total = mass.sum()
    # by hand: Q2's band borrows eps4 (r < 0.6: none of row 0); Q4's borrows eps1 (row 1, r > 1.1: columns 3-7)
    q4 = mass[1, 3:8].sum() / total
    assert f["grad/share_q1"] == f["grad/share_q3"] == 0
    assert f["grad/share_q4"] == pytest.approx(q4.item()) and f["grad/share_q4"] > 0
    assert f["grad/share_q2"] == 0 and f["grad/share_in"] == pytest.approx(1 - q4.item())
    assert f["grad/zeroed"] == pytest.approx(1 / 16 + 2 / 16)  # 1.12 (Q1) and 0.50, 0.55 (Q3)


def test_a_soft_weight_is_scaled_down_not_zeroed():
    from abcx.methods.terms import PolicyTerms

    weight = GRID * torch.tensor([[1.0, 0.5, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0], [1.0] * 8])
    terms = PolicyTerms(value=torch.zeros_like(GRID), weight=weight, natural=GRID)
    f = S.quadrant_fractions(S.quadrant_counts(GRID, GRID_ADV, torch.ones_like(GRID), DISTINCT, terms))
    assert f["grad/zeroed"] == pytest.approx(1 / 16) and f["grad/scaled_down"] == pytest.approx(1 / 16)


# --- abc_adaptive's controller and epsilon schedules ----------------------------------------------------

def test_the_controller_moves_each_epsilon_by_its_own_quadrant():
    from abcx.methods.adaptive import adaptive_update

    eps = (0.1, 0.2, 0.3, 0.4)
    fractions = (0.05, 0.01, 0.08, 0.0)  # Q1, Q2, Q3, Q4
    targets = dict(target_q1=0.02, target_q2=0.03, target_q3=0.04, target_q4=0.01)
    new = adaptive_update(eps, fractions, **targets, eta=10.0, eps_min=0.01, eps_max=5.0)
    # eps1 <- Q1, eps2 <- Q2, eps3 <- Q4, eps4 <- Q3 (abcx.methods.clip's table)
    expected = (0.1 * math.exp(10 * (0.05 - 0.02)), 0.2 * math.exp(10 * (0.01 - 0.03)),
                0.3 * math.exp(10 * (0.0 - 0.01)), 0.4 * math.exp(10 * (0.08 - 0.04)))
    assert new == pytest.approx(expected)


def test_the_controller_clamps_and_keeps_lower_bounds_below_one():
    from abcx.methods.adaptive import adaptive_update

    new = adaptive_update((0.9, 0.9, 0.9, 0.011), (1.0, 1.0, 1.0, 0.0), target_q1=0.0, target_q2=0.0,
                          target_q3=0.0, target_q4=0.0, eta=10.0, eps_min=0.01, eps_max=2.0)
    assert new[0] == 2.0 and new[1] == 0.99 and new[3] == 0.99 and new[2] == pytest.approx(0.9)


@pytest.mark.parametrize("kind,mid", [("constant", 0.2), ("linear", 0.3), ("cosine", 0.3)])
def test_an_epsilon_schedule_runs_from_the_value_to_its_end(kind, mid):
    from abcx.methods.runtime import MethodRun

    run = MethodRun("abc_grpo", {"eps3": 0.2, "schedule": kind, "eps3_end": 0.4 if kind != "constant" else None},
                    max_steps=10)
    assert run.bounds(0).eps3 == pytest.approx(0.2)
    assert run.bounds(5).eps3 == pytest.approx(mid)
    assert run.bounds(10).eps3 == pytest.approx(0.2 if kind == "constant" else 0.4)
    assert (run.bounds(5).eps1, run.bounds(5).eps2, run.bounds(5).eps4) == (0.2, 0.2, 0.2)
    if kind == "cosine":
        assert run.bounds(2).eps3 == pytest.approx(0.4 + (0.2 - 0.4) * (1 + math.cos(math.pi * 0.2)) / 2)


# --- Edges: a ratio exactly on a bound is inside (torch.clamp passes its gradient there) -----------------
EXACT = C.Bounds(eps1=0.25, eps2=0.5, eps3=0.125, eps4=0.75)  # binary fractions: 1 +- eps is exact


def test_a_ratio_exactly_on_its_bound_is_inside_for_the_clip_the_gradient_and_the_counts():
    ratio = torch.tensor([[1.25, 0.5, 1.0], [1.125, 0.25, 1.0]])
    adv = torch.tensor([[1.0], [-1.0]])
    terms, grad = terms_and_grad(ratio, adv, EXACT)
    assert torch.equal(terms.weight, ratio) and torch.all(grad != 0)
    counts = S.quadrant_counts(ratio, adv, torch.ones_like(ratio), EXACT, terms)
    assert [int(counts[f"clip/q{i}"]) for i in range(1, 5)] == [0, 0, 0, 0]
    assert int(counts["clip/clipped"]) == 0 and int(S.quadrant_counts(ratio, adv, torch.ones_like(ratio), EXACT)["clip/clipped"]) == 0
    nudged = ratio * torch.tensor([[1.001, 0.999, 1.0], [1.001, 0.999, 1.0]])
    counts = S.quadrant_counts(nudged, adv, torch.ones_like(ratio), EXACT)
    assert [int(counts[f"clip/q{i}"]) for i in range(1, 5)] == [1, 1, 1, 1] and int(counts["clip/clipped"]) == 4


def test_zeroed_and_scaled_down_compare_the_weight_with_the_method_s_own_natural_weight():
    from abcx.methods.terms import PolicyTerms

    ratio = torch.ones(1, 4)
    natural = torch.tensor([[1.0, 2.0, 2.0, 2.0]])  # e.g. VESPO: the natural weight is w, not r
    weight = torch.tensor([[0.0, 2.0, 1.0, 0.0]])
    terms = PolicyTerms(value=torch.zeros(1, 4), weight=weight, natural=natural)
    f = S.quadrant_fractions(S.quadrant_counts(ratio, torch.ones(1, 1), torch.ones(1, 4), EXACT, terms))
    assert f["grad/zeroed"] == 0.5 and f["grad/scaled_down"] == 0.25
    assert f["clip/clipped"] == 0.5


def test_luspo_aggregation_sums_each_sequence_and_averages_over_sequences():
    per_token = torch.tensor([[1.0, 2.0, 100.0, 100.0], [3.0, 100.0, 100.0, 100.0], [0.5, 0.5, 0.5, 0.5]])
    mask = torch.tensor([[1.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    assert S.aggregate(per_token, mask, "luspo").item() == pytest.approx((3 + 3 + 2) / 3)
    assert S.aggregation_of("luspo") == "luspo" and S.aggregation_of("cispo") == S.aggregation_of("vespo") == "dapo"
    assert S.aggregation_of("sapo") == "grpo" and S.aggregation_of("bnpo") == "bnpo"


def test_a_zero_advantage_token_is_bounded_by_the_a_le_0_pair():
    ratio = torch.tensor([[1.2, 0.7]])  # inside [0.6, 1.3] (A <= 0), outside [0.8, 1.1] (A > 0)
    adv = torch.zeros(1, 1)
    terms, _ = terms_and_grad(ratio, adv, DISTINCT)
    assert torch.equal(terms.weight, ratio)
    assert int(S.quadrant_counts(ratio, adv, torch.ones_like(ratio), DISTINCT)["clip/clipped"]) == 0


def test_four_bound_terms_read_the_ratio_against_old_log_probs_and_at_the_sequence_level():
    from abcx.methods.terms import LossInputs

    logp = torch.tensor([[-1.0, -2.0, -3.0]])
    old = torch.tensor([[-1.1, -2.3, 5.0]])  # the third token is padding
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    adv = torch.tensor([[1.0]])
    token = C.four_bound_terms(LossInputs(logp=logp, old_logp=old, advantages=adv, mask=mask), DISTINCT)
    r = torch.exp(logp - old)
    assert torch.allclose(token.natural, r) and not token.sequence
    seq = C.four_bound_terms(LossInputs(logp=logp, old_logp=old, advantages=adv, mask=mask), C.Bounds(1, 0.5, 1, 0.5),
                             "sequence")
    s = math.exp((0.1 + 0.3) / 2)  # exp of the masked mean log-ratio
    assert seq.sequence and seq.weight.shape == (1, 3) and torch.allclose(seq.weight, torch.full((1, 3), s))
    assert torch.allclose(seq.value, torch.full((1, 3), -s)) and torch.allclose(seq.natural, torch.full((1, 3), s))
    assert torch.allclose(C.sequence_log_ratio(logp - old, mask), torch.tensor([[0.2]]))
    two = torch.cat([logp - old, torch.tensor([[0.5, 0.7, 0.9]])])  # two sequences, the second 3 tokens long
    assert torch.allclose(C.sequence_log_ratio(two, torch.cat([mask, torch.ones(1, 3)])), torch.tensor([[0.2], [0.7]]))
    assert C.importance_ratio(logp - old, mask).shape == (1, 3)  # token level by default
    one = torch.tensor([[1.0, 0.0, 0.0]])  # a one-token sequence: its own log-ratio
    assert torch.allclose(C.sequence_log_ratio(logp - old, one), torch.tensor([[0.1]]))
    with pytest.raises(UserError, match="importance_sampling_level='tok'.*token, sequence"):
        C.importance_ratio(logp - old, mask, "tok")


def test_bound_checks_name_the_bound_and_its_rule():
    assert C.Bounds(0.0, 0.0, 0.0, 0.0).band() == C.Bounds(0.0, 0.0, 0.0, 0.0)  # zero is a valid eps
    assert C.Bounds(INF, INF, INF, INF).band() == C.Bounds(*(C.DEFAULT_BAND_EPS,) * 4)
    for name in ("eps2", "eps4"):
        with pytest.raises(UserError, match=f"^{name}=1.0 puts the lower bound 1-eps at 0 <= 0; valid: 0 <= eps < 1, "
                                            "or inf for no lower bound$"):
            C.Bounds(**{**vars(DISTINCT), name: 1.0})
    with pytest.raises(UserError, match="eps1=True is not a number"):
        C.check_eps("eps1", True, lower=False)


def test_aggregation_edges_and_errors():
    one = torch.tensor([[2.0, 9.0]])
    mask = torch.tensor([[1.0, 0.0]])
    assert S.aggregate(one, mask, "bnpo").item() == 2.0 and S.aggregate(one, mask, "grpo").item() == 2.0
    with pytest.raises(ValueError, match="^dr_grpo aggregation needs max_completion_length$"):
        S.aggregate(one, mask, "dr_grpo")
    with pytest.raises(ValueError, match="^dapo aggregation needs num_items$"):
        S.aggregate(one, mask, "dapo")
    with pytest.raises(UserError, match="train.loss_type='x' is not supported; valid: grpo, bnpo, dr_grpo, dapo"):
        S.aggregate(one, mask, "x")


def test_fractions_of_one_token_with_a_small_or_no_gradient_and_a_penalty():
    from abcx.methods.terms import PolicyTerms

    ratio, adv, mask = torch.tensor([[1.0, 7.0]]), torch.tensor([[0.01]]), torch.tensor([[1.0, 0.0]])
    small = PolicyTerms(value=torch.zeros(1, 2), weight=torch.ones(1, 2), natural=torch.ones(1, 2))
    f = S.quadrant_fractions(S.quadrant_counts(ratio, adv, mask, DISTINCT, small))
    assert f["grad/share_in"] == 1.0 and f["ratio/mean"] == 1.0 and f["clip/zero_adv"] == 0.0
    none = PolicyTerms(value=torch.zeros(1, 2), weight=torch.zeros(1, 2), natural=torch.ones(1, 2))
    f = S.quadrant_fractions(S.quadrant_counts(ratio, adv, mask, DISTINCT, none))
    assert f["grad/share_in"] == 0.0 and f["grad/share_q1"] == 0.0 and f["grad/zeroed"] == 1.0
    ratio2 = torch.tensor([[1.5, 1.0]])  # Q1 token with weight 1 and a penalty 0.5: |1 * 1 - 0.5| = 0.5
    pen = PolicyTerms(value=torch.zeros(1, 2), weight=torch.ones(1, 2), natural=ratio2,
                      penalty=torch.tensor([[0.5, 0.0]]))
    f = S.quadrant_fractions(S.quadrant_counts(ratio2, torch.ones(1, 1), torch.ones(1, 2), DISTINCT, pen))
    assert f["grad/share_q1"] == pytest.approx(0.5 / 1.5)


def test_a_schedule_holds_its_end_past_the_last_step():
    from abcx.methods.adaptive import scheduled

    assert scheduled(0.2, 0.4, "linear", 3, 1) == pytest.approx(0.4)
    assert scheduled(0.2, 0.4, "linear", 1, 1) == pytest.approx(0.4)
    assert scheduled(0.2, 0.4, "cosine", 15, 10) == pytest.approx(0.4)


def test_abc_adaptive_clips_with_the_controller_s_current_epsilons():
    from abcx.methods.adaptive import abc_adaptive, adaptive_bounds
    from abcx.methods.terms import LossInputs

    inputs = LossInputs(logp=GRID.log(), old_logp=torch.zeros_like(GRID), advantages=GRID_ADV,
                        mask=torch.ones_like(GRID), state={"eps": [0.1, 0.2, 0.3, 0.4]})
    got = abc_adaptive(inputs)  # the state's eps, not the (default) starting ones
    assert torch.equal(got.weight, C.four_bound_terms(inputs, DISTINCT).weight)
    fresh = abc_adaptive(LossInputs(logp=GRID.log(), old_logp=torch.zeros_like(GRID), advantages=GRID_ADV,
                                    mask=torch.ones_like(GRID)), eps1=0.1, eps2=0.2, eps3=0.3, eps4=0.4)
    assert torch.equal(fresh.weight, got.weight)
    assert adaptive_bounds(eps1=0.1, eps2=0.2, eps3=0.3, eps4=0.4) == DISTINCT


def test_without_a_natural_weight_the_ratio_is_the_reference_and_a_small_gradient_still_has_shares():
    from abcx.methods.terms import PolicyTerms

    ratio = torch.tensor([[1.5, 1.0]])  # a Q1 token and an in-band one
    terms = PolicyTerms(value=torch.zeros(1, 2), weight=torch.tensor([[0.75, 1.0]]))  # natural: r
    f = S.quadrant_fractions(S.quadrant_counts(ratio, torch.tensor([[0.001]]), torch.ones(1, 2), DISTINCT, terms))
    assert f["grad/scaled_down"] == 0.5 and f["grad/zeroed"] == 0.0  # 0.75 < r = 1.5; 1.0 == r = 1.0
    assert f["grad/share_q1"] == pytest.approx(0.75 / 1.75) and f["grad/share_in"] == pytest.approx(1 / 1.75)


def test_abc_adaptive_at_the_sequence_level_uses_the_sequence_ratio():
    from abcx.methods.adaptive import abc_adaptive
    from abcx.methods.terms import LossInputs

    inputs = LossInputs(logp=GRID.log(), old_logp=torch.zeros_like(GRID), advantages=GRID_ADV, mask=torch.ones_like(GRID))
    assert abc_adaptive(inputs, importance_sampling_level="sequence").sequence


def test_the_published_defaults_are_the_registry_s():
    from abcx import methods as M

    published = {  # TRL 1.16 GRPOConfig / the papers; abc_adaptive's as documented in abcx/methods/adaptive.py
        "gspo": {"eps_low": 3e-4, "eps_high": 4e-4, "importance_sampling_level": "sequence"},
        "cispo": {"eps_max": 5.0}, "sapo": {"tau_pos": 1.0, "tau_neg": 1.05},
        "vespo": {"k_pos": 2.0, "lambda_pos": 3.0, "k_neg": 3.0, "lambda_neg": 2.0},
        "dapo": {"eps_low": 0.2, "eps_high": 0.28}, "dual_clip": {"clip_ratio_c": 3.0},
        "abc_grpo": {"eps1": 0.2, "eps2": 0.2, "eps3": 0.2, "eps4": 0.2},
        "abc_adaptive": {"eps1": 0.2, "eps2": 0.2, "eps3": 0.2, "eps4": 0.2, "target_q1": 0.02, "target_q2": 0.02,
                         "target_q3": 0.02, "target_q4": 0.02, "eta": 5.0, "eps_min": 0.02, "eps_max": 1.0,
                         "importance_sampling_level": "token"},
    }
    for name, values in published.items():
        defaults = M.get(name).defaults()
        assert {k: defaults[k] for k in values} == values, name
