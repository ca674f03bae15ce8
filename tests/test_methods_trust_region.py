"""The trust-region rules of 2026 (abcx/methods/trust_region.py): each on a few tokens whose weights
and values are worked out by hand (written below as numbers, with distinct parameter values so that
a swapped parameter or a neighbouring rule's formula fails), and each against its published loss
written out with autograd on a batch that reaches every case of the rule."""
import math

import pytest
import torch

from abcx import methods as M
from abcx.config.compose import compose
from abcx.errors import UserError
from abcx.methods import stats as S
from abcx.methods import trust_region as T
from abcx.methods.clip import Bounds
from abcx.methods.terms import LossInputs
from tests.test_methods_papers import assert_reaches, assert_same_loss_and_gradient, batch, contract_loss, parts, \
    token_sum

HAND = 1e-9


def tokens(rows, adv, mask=None):
    """One sequence per row of (pi_old, pi) pairs; advantages per sequence."""
    q = torch.tensor([[t[0] for t in row] for row in rows], dtype=torch.float64)
    p = torch.tensor([[t[1] for t in row] for row in rows], dtype=torch.float64)
    m = torch.ones_like(q) if mask is None else torch.tensor(mask, dtype=torch.float64)
    return LossInputs(logp=p.log().requires_grad_(True), old_logp=q.log(), mask=m,
                      advantages=torch.tensor(adv, dtype=torch.float64).reshape(-1, 1))


def close(tensor, expected):
    assert torch.allclose(tensor, torch.tensor(expected, dtype=torch.float64), atol=HAND, rtol=0), tensor


# ---------- DPPO-KL ----------

def test_dppo_kl_drops_only_tokens_whose_binary_kl_grew_past_delta_in_the_direction_of_a():
    # binary KL(q, p) of each token, by hand: .0872 .0472 .1398 | .0204 .0130 .1163
    x = tokens([[(0.5, 0.7), (0.5, 0.65), (0.2, 0.05)], [(0.5, 0.4), (0.5, 0.42), (0.1, 0.3)]], [1.0, -2.0])
    terms = T.dppo_kl(x, delta_low=0.02, delta_high=0.08, clip_ratio_c=1.5)
    # A>0: .0872 > .08 and p rose: dropped; .0472 kept (r 1.3); p fell: kept however far (r .25)
    # A<0: .0204 > .02 and p fell: dropped; .0130 kept (r .84); p rose: kept, r 3 truncated to c = 1.5
    close(terms.weight, [[0, 1.3, 0.25], [0, 0.84, 1.5]])
    close(terms.value, (-x.advantages * terms.weight * x.logp).detach().tolist())
    swapped = T.dppo_kl(x, delta_low=0.08, delta_high=0.02, clip_ratio_c=1.5)
    close(swapped.weight, [[0, 0, 0.25], [0.8, 0.84, 1.5]])


def test_dppo_kl_equals_verls_binary_kl_mask_with_truncated_weight():
    dl, dh, cap = 0.03, 0.11, 2.2
    x = batch(20)
    r, a, q = parts(x)
    p = x.logp.detach().exp()
    kl = q * torch.log(q / p) + (1 - q) * torch.log((1 - q + 1e-8) / (1 - p + 1e-8))
    keep = torch.where(a > 0, (kl <= dh) | (p <= q), (kl <= dl) | (p >= q))
    assert_reaches(x, pos_dropped=(a > 0) & ~keep, neg_dropped=(a <= 0) & ~keep, pos_far_but_fell=(a > 0) & (kl > dh) & keep,
                   neg_far_but_rose=(a < 0) & (kl > dl) & keep, truncated=keep & (r.detach() > cap))
    formula = token_sum(-a * torch.clamp(r, max=cap).detach() * x.logp * keep, x.mask)
    ours, _ = contract_loss(T.dppo_kl, x, delta_low=dl, delta_high=dh, clip_ratio_c=cap)
    assert_same_loss_and_gradient(ours, formula, x.logp)


# ---------- IPO ----------

def test_ipo_drops_tokens_whose_probability_moved_past_eps_whatever_the_sign_of_a():
    x = tokens([[(0.5, 0.6), (0.5, 0.7), (0.5, 0.3)], [(0.4, 0.5), (0.3, 0.12), (0.2, 0.22)]], [1.5, -0.5])
    terms = T.ipo(x, eps=0.15, kl_tau=0.05)
    # |p - q|: .1 kept (r 1.2) .2 dropped .2 dropped (A > 0 and p fell: DPPO-TV would keep it)
    #          .1 kept (r 1.25) .18 dropped .02 kept (r 1.1)
    close(terms.weight, [[1.2, 0, 0], [1.25, 0, 1.1]])
    log_r = [[math.log(1.2), math.log(1.4), math.log(0.6)], [math.log(1.25), math.log(0.4), math.log(1.1)]]
    close(terms.penalty, [[0.1 * v for v in row] for row in log_r])  # 2 kl_tau log r on every token
    close(terms.value, [[-1.5 * 1.2 + 0.05 * log_r[0][0] ** 2, 0.05 * log_r[0][1] ** 2, 0.05 * log_r[0][2] ** 2],
                        [0.5 * 1.25 + 0.05 * log_r[1][0] ** 2, 0.05 * log_r[1][1] ** 2, 0.5 * 1.1 + 0.05 * log_r[1][2] ** 2]])


def test_ipo_equals_prime_rls_loss():
    eps, tau = 0.12, 0.4
    x = batch(21)
    r, a, q = parts(x)
    keep = (x.logp.detach().exp() - q).abs() <= eps
    assert_reaches(x, pos_dropped_fell=(a > 0) & ~keep & (r.detach() < 1), neg_dropped_rose=(a < 0) & ~keep & (r.detach() > 1),
                   kept=keep & (a != 0))
    formula = token_sum(-a * r * keep + tau * torch.log(r) ** 2, x.mask)
    ours, _ = contract_loss(T.ipo, x, eps=eps, kl_tau=tau)
    assert_same_loss_and_gradient(ours, formula, x.logp)


# ---------- IcePop ----------

def test_icepop_keeps_r_inside_its_band_and_drops_the_rest_instead_of_clipping():
    x = tokens([[(0.5, 0.295), (0.5, 0.305), (0.4, 0.4)], [(0.2, 0.338), (0.2, 0.342), (0.1, 0.3)]], [1.0, -1.0])
    terms = T.icepop(x, alpha=0.6, beta=1.7)
    # r = .59 .61 1 | 1.69 1.71 3: kept inside [.6, 1.7] with weight r; .59 lies in [1/beta, beta] but not in the band
    close(terms.weight, [[0, 0.61, 1.0], [1.69, 0, 0]])
    close(terms.value, [[0, -0.61, -1.0], [1.69, 0, 0]])
    close(terms.natural, [[0.59, 0.61, 1.0], [1.69, 1.71, 3.0]])


def test_icepop_equals_the_masked_importance_weighted_gradient():
    lo, hi = 0.7, 2.5
    x = batch(22)
    r, a, _ = parts(x)
    band = (r.detach() >= lo) & (r.detach() <= hi)
    assert_reaches(x, below=~band & (r.detach() < lo), above=~band & (r.detach() > hi), inside=band & (a != 0))
    ours, _ = contract_loss(T.icepop, x, alpha=lo, beta=hi)
    assert_same_loss_and_gradient(ours, token_sum(-a * r * band, x.mask), x.logp)


# ---------- TOPR ----------

TOPR_ROWS = [[(0.5, 0.5 * math.exp(0.2)), (0.5, 0.5 * math.exp(-0.6)), (0.001, 0.001 * math.exp(5.0))],
             [(0.4, 0.4 * math.exp(0.5)), (0.4, 0.4 * math.exp(0.3)), (0.3, 0.3)],
             [(0.6, 0.6 * math.exp(-1.0)), (0.6, 0.6 * math.exp(-1.0)), (0.3, 0.3)]]


@pytest.mark.parametrize("form,taper", [("geometric", math.exp(-0.2)), ("product", math.exp(-0.4))])
def test_topr_tapers_negative_sequences_by_their_ratio_and_leaves_positive_ones_at_one(form, taper):
    # log r per sequence (third token of the first one masked out): .2 -.6 | .5 .3 0 | -1 -1 0
    x = tokens(TOPR_ROWS, [-1.0, -2.0, 3.0], mask=[[1, 1, 0], [1, 1, 1], [1, 1, 1]])
    terms = T.topr(x, sequence_ratio=form)
    # s of the first (A<0): mean -.2 or sum -.4 -> taper; the second (A<0) has s > 1 -> 1; A>0 -> 1 whatever s
    close(terms.weight, [[taper] * 3, [1.0] * 3, [1.0] * 3])
    close(terms.value, (-x.advantages * terms.weight * x.logp).detach().tolist())
    assert torch.all(terms.natural == 1)


@pytest.mark.parametrize("form", ["geometric", "product"])
def test_topr_equals_the_published_truncated_ratio_reinforce(form):
    x = batch(23)
    x.old_logp[::2] += 0.5  # every other sequence drifted below pi_old
    _, a, _ = parts(x)
    lr = (x.logp - x.old_logp).detach()
    total = (lr * x.mask).sum(-1, keepdim=True)
    s = torch.exp(total / x.mask.sum(-1, keepdim=True) if form == "geometric" else total)
    assert_reaches(x, tapered=(a < 0) & (s < 1), capped=(a < 0) & (s > 1), positive_drifted=(a > 0) & (s < 1))
    w = torch.where(a < 0, torch.clamp(s, 0, 1).expand_as(lr), torch.ones_like(lr))
    ours, _ = contract_loss(T.topr, x, sequence_ratio=form)
    assert_same_loss_and_gradient(ours, token_sum(-a * w * x.logp, x.mask), x.logp)


# ---------- UP-GRPO ----------

def test_up_grpo_never_clips_a_positive_token_and_clips_negative_ones_like_dual_clip_ppo():
    x = tokens([[(0.5, 0.9), (0.5, 0.2), (0.4, 0.52)], [(0.5, 0.3), (0.5, 0.7), (0.1, 0.3)]], [2.0, -1.0])
    terms = T.up_grpo(x, eps_low=0.3, clip_ratio_c=2.5)
    # A>0: r = 1.8 .4 1.3 -> weight 1, value -A (pi/sg(pi) = 1)
    # A<0: r = .6 < .7 clipped (value -A .7); 1.4 kept; 3 > c: dual clip (value -A c)
    close(terms.weight, [[1, 1, 1], [0, 1.4, 0]])
    close(terms.value, [[-2, -2, -2], [0.7, 1.4, 2.5]])
    close(terms.natural, [[1, 1, 1], [0.6, 1.4, 3.0]])


def test_up_grpo_equals_the_published_asymmetric_loss():
    el, c = 0.25, 2.2
    x = batch(24)
    r, a, _ = parts(x)
    p = x.logp.exp()
    rd = r.detach()
    assert_reaches(x, pos_far=(a > 0) & (rd > 1.5), neg_below=(a < 0) & (rd < 1 - el), neg_dual=(a < 0) & (rd > c))
    negative = torch.where(a < 0, torch.minimum(torch.maximum(-a * r, -a * torch.clamp(r, min=1 - el)), -a * c),
                           torch.zeros_like(r))
    formula = token_sum(torch.where(a > 0, -a * p / p.detach(), negative), x.mask)
    ours, _ = contract_loss(T.up_grpo, x, eps_low=el, clip_ratio_c=c)
    assert_same_loss_and_gradient(ours, formula, x.logp)


# ---------- CFPO ----------

def test_cfpo_weight_falls_to_zero_at_the_trust_region_edge_and_turns_back_beyond_it():
    x = tokens([[(0.5, 0.55), (0.4, 0.5), (0.4, 0.6)], [(0.5, 0.45), (0.5, 0.6), (0.3, 0.3)]], [2.0, -1.0])
    terms = T.cfpo(x, eps=0.25)
    # A=2: r 1.1 -> 1.1 (1 - .1/.25) = .66; r 1.25 (the edge) -> 0; r 1.5 -> 1.5 (1 - 2) = -1.5
    # A=-1: r .9 -> .9 (1 - .1/.25) = .54; r 1.2 -> 1.2 (1 + .8) = 2.16; r 1 -> 1
    close(terms.weight, [[0.66, 0.0, -1.5], [0.54, 2.16, 1.0]])
    # value -(r A - |A|/(2 eps) (r-1)^2): -(2.2 - .04), -(2.5 - .25), -(3 - 1) | -(-.9 - .02), -(-1.2 - .08), 1
    close(terms.value, [[-2.16, -2.25, -2.0], [0.92, 1.28, 1.0]])


def test_cfpo_equals_the_published_penalised_objective():
    eps = 0.35
    x = batch(25)
    r, a, _ = parts(x)
    rd = r.detach()
    assert_reaches(x, past_pos=(a > 0) & (rd > 1 + eps), inside_pos=(a > 0) & (rd < 1 + eps), past_neg=(a < 0) & (rd < 1 - eps))
    formula = token_sum(-(r * a - a.abs() / (2 * eps) * (r - 1) ** 2), x.mask)
    ours, _ = contract_loss(T.cfpo, x, eps=eps)
    assert_same_loss_and_gradient(ours, formula, x.logp)


# ---------- GPG ----------

def test_gpg_is_the_plain_policy_gradient():
    x = batch(26)
    _, a, _ = parts(x)
    ours, terms = contract_loss(T.gpg, x)
    assert_same_loss_and_gradient(ours, token_sum(-a * x.logp, x.mask), x.logp)
    assert torch.all(terms.weight == 1) and torch.equal(terms.natural, terms.weight)


# ---------- every rule ----------

# (Detached terms and no gradient on masked tokens: tests/test_methods_papers.py, for every rule.)

@pytest.mark.parametrize("name", sorted(T.METHODS))
def test_each_rule_is_registered_with_its_formula_reference_and_documented_parameters(name):
    method = M.get(name)
    assert method.fn is T.METHODS[name] and method.extra["formula"]
    assert "arXiv" in method.reference or ".py" in method.reference
    assert sorted(T.METADATA[name]["params"]) == sorted(p.name for p in method.params)
    assert all(p.doc and p.domain for p in method.params)
    assert "Source:" in method.fn.__doc__


def test_what_a_rule_removes_is_counted_as_zeroed_or_scaled_down():
    x = batch(28)
    r, a, _ = (t.detach() for t in parts(x))
    valid = x.mask > 0
    band = Bounds(0.2, 0.2, 0.2, 0.2)

    def counts(terms):
        return S.quadrant_counts(r, x.advantages, x.mask, band, terms)

    icepop = counts(T.icepop(x, alpha=0.7, beta=2.5))
    assert icepop["grad/zeroed"] == int((valid & ((r < 0.7) | (r > 2.5))).sum()) > 0 and icepop["grad/scaled_down"] == 0
    s = torch.exp(((x.logp - x.old_logp).detach() * x.mask).sum(-1, keepdim=True) / x.mask.sum(-1, keepdim=True))
    topr = counts(T.topr(x))
    assert topr["grad/scaled_down"] == int((valid & (a < 0) & (s < 1)).sum()) > 0 and topr["grad/zeroed"] == 0
    assert counts(T.gpg(x))["grad/zeroed"] == counts(T.gpg(x))["grad/scaled_down"] == 0


@pytest.mark.parametrize("overrides,field", [
    (["method=dppo_kl", "method.delta_low=0"], "method.delta_low=0"),
    (["method=ipo", "method.eps=1.2"], "method.eps=1.2"),
    (["method=ipo", "method.kl_tau=-0.1"], "method.kl_tau=-0.1"),
    (["method=icepop", "method.alpha=1.0", "method.beta=1.0"], "method.alpha=1.0 must be < method.beta=1.0"),
    (["method=icepop", "method.beta=0.8"], "method.beta=0.8"),
    (["method=topr", "method.sequence_ratio=arithmetic"], "method.sequence_ratio='arithmetic'"),
    (["method=up_grpo", "method.clip_ratio_c=1"], "method.clip_ratio_c=1"),
    (["method=up_grpo", "method.eps_high=0.3"], "method.eps_high does not apply to method 'up_grpo'"),
    (["method=cfpo", "method.eps=0"], "method.eps=0"),
    (["method=gpg", "method.eps=0.2"], "method.eps does not apply to method 'gpg'"),
])
def test_a_bad_parameter_of_a_new_rule_is_one_line_naming_the_field(overrides, field):
    with pytest.raises(UserError) as err:
        compose(overrides)
    assert field in str(err.value) and "\n" not in str(err.value)
