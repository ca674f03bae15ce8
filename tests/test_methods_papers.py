"""The methods from verl and the papers (abcx/methods/papers*.py), each checked against its published
loss written out here with autograd: equal loss value and equal gradient wrt log pi to 1e-6, on a
batch that reaches every band of the rule (each test asserts that it does), with all parameters
distinct so that a swapped parameter fails. Plus, per method, what its detached weight must be.
"""
import inspect
import math

import pytest
import torch

from abcx import methods as M
from abcx.methods import papers
from abcx.methods.papers_adaptive import bapo_bounds
from abcx.methods.terms import LossInputs, surrogate

TOL = 1e-6
ADV = [1.3, -0.7, 0.0, 0.4, -1.1, 0.9, -0.3, 2.0, -1.6, 0.6, -0.2, 1.1]


def batch(seed=0, b=12, t=16, adv=None):
    """log r uniform in [-1.2, 1.4] (r from 0.3 to 4), pi_old from 0.02 to 0.92 (so that pi <= 1),
    advantages of both signs and 0, a few masked tokens, token entropies in [0, 3)."""
    g = torch.Generator().manual_seed(seed)
    log_r = torch.rand(b, t, generator=g, dtype=torch.float64) * 2.6 - 1.2
    q = torch.rand(b, t, generator=g, dtype=torch.float64) * 0.9 + 0.02
    q = torch.minimum(q, 0.95 / log_r.exp())
    old = q.log()
    logp = (old + log_r).requires_grad_(True)
    a = torch.tensor(adv if adv is not None else ADV[:b], dtype=torch.float64).reshape(b, 1)
    mask = torch.ones(b, t, dtype=torch.float64)
    mask[1, t - 5:] = 0
    mask[4, t - 3:] = 0
    mask[6, 0] = 0
    ent = torch.rand(b, t, generator=g, dtype=torch.float64) * 3
    return LossInputs(logp=logp, old_logp=old, advantages=a, mask=mask, entropies=ent, step=7)


def token_sum(per_token, mask):
    return (per_token * mask).sum()


def contract_loss(method, inputs, aggregate=token_sum, **params):
    terms = method(inputs, **params)
    return aggregate(surrogate(terms, inputs.logp, inputs.advantages), inputs.mask), terms


def assert_same_loss_and_gradient(ours, formula, logp):
    g_ours, = torch.autograd.grad(ours, logp, retain_graph=True)
    g_formula, = torch.autograd.grad(formula, logp, retain_graph=True)
    assert abs(float(ours.detach() - formula.detach())) <= TOL, (float(ours.detach()), float(formula.detach()))
    assert torch.allclose(g_ours, g_formula, atol=TOL, rtol=0), (g_ours - g_formula).abs().max()


def assert_reaches(inputs, **bands):
    """Every named band holds at least one completion token, so no branch goes untested."""
    for name, band in bands.items():
        assert bool((band & (inputs.mask > 0)).any()), f"the test batch never reaches band {name}"


def parts(inputs):
    """r (with grad), A broadcast, pi_old; written out here, not taken from the package."""
    r = torch.exp(inputs.logp - inputs.old_logp)
    return r, inputs.advantages.expand_as(r), inputs.old_logp.exp()


def dual_clip(loss, a, c):
    return torch.where(a < 0, torch.minimum(loss, -a * c), loss)


def ppo_dual(r, a, low, high, c):
    """verl's vanilla loss with tensor bounds: where(A<0, min(-Ac, max(-Ar, -A clip)), max(...))."""
    clipped = torch.minimum(torch.maximum(r, torch.as_tensor(low, dtype=r.dtype)), torch.as_tensor(high, dtype=r.dtype))
    return dual_clip(torch.maximum(-a * r, -a * clipped), a, c)


# ---------- GPPO / CE-GPPO ----------

def test_gppo_equals_the_published_clip_with_gradient_preserving_bounds():
    el, eh, c = 0.15, 0.3, 2.5
    x = batch()
    r, a, _ = parts(x)
    assert_reaches(x, q1=(a > 0) & (r > 1 + eh), q2=(a > 0) & (r < 1 - el), q3=(a < 0) & (r < 1 - el),
                   q4_between=(a < 0) & (r > 1 + eh) & (r < c), dual=(a < 0) & (r > c), zero=a == 0)
    s = r.detach()
    # Klear-Reasoner: -min(r A, clip(r, (1-el) r/sg(r), (1+eh) r/sg(r)) A), verl's dual clip after
    clipped = torch.minimum(torch.maximum(r, (1 - el) * r / s), (1 + eh) * r / s)
    formula = token_sum(dual_clip(torch.maximum(-a * r, -a * clipped), a, c), x.mask)
    ours, _ = contract_loss(papers.gppo, x, eps_low=el, eps_high=eh, clip_ratio_c=c)
    assert_same_loss_and_gradient(ours, formula, x.logp)


def test_ce_gppo_equals_the_published_three_case_loss():
    el, eh, b1, b2, c = 0.15, 0.3, 0.4, 0.7, 2.5
    x = batch(1)
    r, a, _ = parts(x)
    assert_reaches(x, low=(a < 0) & (r < 1 - el), high=(a > 0) & (r > 1 + eh), dual=(a < 0) & (r > c),
                   other_pos=(a > 0) & (r < 1 - el))
    s = r.detach()
    loss = torch.where((a < 0) & (r < 1 - el), -b1 * (1 - el) * r / s * a,
                       torch.where((a > 0) & (r > 1 + eh), -b2 * (1 + eh) * r / s * a, -r * a))
    formula = token_sum(dual_clip(loss, a, c), x.mask)
    ours, _ = contract_loss(papers.ce_gppo, x, eps_low=el, eps_high=eh, beta1=b1, beta2=b2, clip_ratio_c=c)
    assert_same_loss_and_gradient(ours, formula, x.logp)


def test_ce_gppo_with_unit_betas_is_gppo():
    x = batch(2)
    g = papers.gppo(x, eps_low=0.1, eps_high=0.35, clip_ratio_c=3.5)
    ce = papers.ce_gppo(x, eps_low=0.1, eps_high=0.35, beta1=1.0, beta2=1.0, clip_ratio_c=3.5)
    assert torch.equal(g.weight, ce.weight) and torch.equal(g.value, ce.value)


def test_gppo_weights_keep_the_bound_outside_the_band_and_cut_only_past_dual_clip():
    el, eh, b1, b2, c = 0.15, 0.3, 0.4, 0.7, 2.5
    x = batch(3)
    r, a, _ = (t.detach() for t in parts(x))
    terms = papers.ce_gppo(x, eps_low=el, eps_high=eh, beta1=b1, beta2=b2, clip_ratio_c=c)
    assert not terms.weight.requires_grad and not terms.value.requires_grad
    high, low, dual = (a > 0) & (r > 1 + eh), (a < 0) & (r < 1 - el), (a < 0) & (r > c)
    assert torch.allclose(terms.weight[high], torch.tensor(b2 * (1 + eh), dtype=r.dtype))
    assert torch.allclose(terms.weight[low], torch.tensor(b1 * (1 - el), dtype=r.dtype))
    assert torch.all(terms.weight[dual] == 0)
    rest = ~(high | low | dual)
    assert torch.equal(terms.weight[rest], r[rest])


# ---------- GMPO ----------

def gmpo_formula(x, el, eh):
    """GMPO: mean over sequences of -A * exp(mean_t sgn(A) min(sgn(A) l, sgn(A) clip(l, -el, eh)))."""
    lr = x.logp - x.old_logp
    s = torch.sign(x.advantages)
    kept = s * torch.minimum(s * lr, s * torch.clamp(lr, -el, eh))
    seq = torch.exp((kept * x.mask).sum(-1) / x.mask.sum(-1))
    return (-x.advantages.squeeze(-1) * seq).mean()


def token_mean(per_token, mask):
    return (per_token * mask).sum() / mask.sum()


def sequence_mean(per_token, mask):
    """The `grpo` aggregation GMPO fixes (abcx.methods.stats.aggregate): per-sequence mean, then mean."""
    return ((per_token * mask).sum(-1) / mask.sum(-1)).mean()


def test_gmpo_equals_the_published_geometric_mean_under_the_aggregation_it_fixes():
    el, eh = 0.3, 0.5
    x = batch(4)
    lr, a = (x.logp - x.old_logp).detach(), x.advantages.expand_as(x.logp)
    assert_reaches(x, pos_clipped=(a > 0) & (lr > eh), neg_clipped=(a < 0) & (lr < -el),
                   pos_low_kept=(a > 0) & (lr < -el), neg_high_kept=(a < 0) & (lr > eh), zero=a == 0)
    assert M.get("gmpo").aggregation == "grpo"
    ours, _ = contract_loss(papers.gmpo, x, aggregate=sequence_mean, eps_low=el, eps_high=eh)
    assert_same_loss_and_gradient(ours, gmpo_formula(x, el, eh), x.logp)


def test_gmpo_split_into_two_halves_averages_to_the_whole_batch():
    """What data parallel or gradient accumulation does with GMPO: each part aggregated on its own,
    the parts averaged. The per-token terms read no statistic of the part, so this is the whole."""
    el, eh = 0.3, 0.5
    x = batch(4)
    whole, _ = contract_loss(papers.gmpo, x, aggregate=sequence_mean, eps_low=el, eps_high=eh)
    halves = []
    for rows in (slice(0, 6), slice(6, 12)):
        part = LossInputs(logp=x.logp[rows], old_logp=x.old_logp[rows], advantages=x.advantages[rows],
                          mask=x.mask[rows])
        halves.append(contract_loss(papers.gmpo, part, aggregate=sequence_mean, eps_low=el, eps_high=eh)[0])
    assert_same_loss_and_gradient((halves[0] + halves[1]) / 2, whole, x.logp)


def test_gmpo_weight_is_zero_on_clipped_tokens_and_one_value_per_sequence_elsewhere():
    el, eh = 0.3, 0.5
    x = batch(5)
    lr, a = (x.logp - x.old_logp).detach(), x.advantages.expand_as(x.logp)
    terms = papers.gmpo(x, eps_low=el, eps_high=eh)
    assert not terms.weight.requires_grad and not terms.natural.requires_grad
    clipped = ((a > 0) & (lr > eh)) | ((a < 0) & (lr < -el))
    assert torch.all(terms.weight[clipped] == 0)
    for i in range(lr.shape[0]):
        kept = terms.weight[i][~clipped[i]]
        assert torch.allclose(kept, kept[0].expand_as(kept))
    # a sequence with clipped tokens has a smaller geometric-mean weight than unclipped
    row = int(torch.nonzero(((a > 0) & (lr > eh)).any(-1))[0])
    assert terms.weight[row][~clipped[row]][0] < terms.natural[row][0]


# ---------- DCPO ----------

def dcpo_paper_bounds(q, el, eh, c):
    low = 0.5 + 0.5 * torch.sqrt(torch.clamp(1 - 4 * el / q, min=0))
    high = torch.clamp(0.5 + 0.5 * torch.sqrt(1 + 4 * eh / q), max=max(c, 10.0))
    return low, high


def test_dcpo_equals_ppo_with_the_published_probability_dependent_bounds():
    el, eh, c = 0.12, 0.33, 2.2
    x = batch(6)
    r, a, q = parts(x)
    low, high = dcpo_paper_bounds(q, el, eh, c)
    rd = r.detach()
    assert_reaches(x, above=(a > 0) & (rd > high), below=(a < 0) & (rd < low), dual=(a < 0) & (rd > c),
                   wider_than_fixed=(a > 0) & (rd > 1 + eh) & (rd < high), low_not_half=low > 0.5)
    formula = token_sum(ppo_dual(r, a, low, high, c), x.mask)
    ours, _ = contract_loss(papers.dcpo, x, eps_low=el, eps_high=eh, clip_ratio_c=c)
    assert_same_loss_and_gradient(ours, formula, x.logp)


@pytest.mark.parametrize("c", [2.2, 12.0])
def test_dcpo_bounds_follow_the_formula_and_the_cap_is_max_c_10(c):
    q = torch.tensor([1e-4, 1e-3, 0.01, 0.3, 0.9], dtype=torch.float64)
    low, high = papers.dcpo_bounds(q.log(), 0.12, 0.33, c)
    exp_low, exp_high = dcpo_paper_bounds(q, 0.12, 0.33, c)
    assert torch.allclose(low, exp_low) and torch.allclose(high, exp_high)
    assert float(high[0]) == max(c, 10.0)


def test_dcpo_weight_is_zero_exactly_where_clipped():
    el, eh, c = 0.12, 0.33, 2.2
    x = batch(7)
    r, a, q = (t.detach() for t in parts(x))
    low, high = dcpo_paper_bounds(q, el, eh, c)
    w = papers.dcpo(x, eps_low=el, eps_high=eh, clip_ratio_c=c).weight
    cut = ((a > 0) & (r > high)) | ((a < 0) & ((r < low) | (r > c)))
    assert not w.requires_grad and torch.all(w[cut] == 0) and torch.equal(w[~cut], r[~cut])


# ---------- DPPO-TV ----------

def test_dppo_tv_equals_the_published_divergence_mask_with_truncated_weight():
    dl, dh, cap = 0.05, 0.12, 2.0
    x = batch(8)
    r, a, q = parts(x)
    moved = (x.logp.exp() - q).detach()
    keep = torch.where(a > 0, moved <= dh, moved >= -dl)
    assert_reaches(x, pos_dropped=(a > 0) & ~keep, pos_kept=(a > 0) & keep, neg_dropped=(a <= 0) & ~keep,
                   neg_kept=(a <= 0) & keep, truncated=keep & (r.detach() > cap),
                   small_prob_big_ratio_kept=(a > 0) & keep & (r.detach() > 1.5))
    formula = token_sum(-a * torch.clamp(r, max=cap).detach() * x.logp * keep, x.mask)
    ours, _ = contract_loss(papers.dppo_tv, x, delta_low=dl, delta_high=dh, clip_ratio_c=cap)
    assert_same_loss_and_gradient(ours, formula, x.logp)


def test_dppo_tv_weight_is_the_truncated_ratio_or_zero():
    x = batch(9)
    r, a, q = (t.detach() for t in parts(x))
    w = papers.dppo_tv(x, delta_low=0.05, delta_high=0.12, clip_ratio_c=2.0).weight
    moved = x.logp.detach().exp() - q
    keep = torch.where(a > 0, moved <= 0.12, moved >= -0.05)
    assert not w.requires_grad and torch.all(w[~keep] == 0)
    assert torch.equal(w[keep], r.clamp(max=2.0)[keep])


# ---------- Clip-Cov / KL-Cov ----------

def centred_cov(x):
    m = x.mask > 0
    a = x.advantages.expand_as(x.logp)
    lp = x.logp.detach()
    return (a - a[m].mean()) * (lp - lp[m].mean())


def test_clip_cov_equals_ppo_with_the_covariance_band_cut_when_every_candidate_is_drawn():
    el, eh, lb, ub = 0.25, 0.35, 0.2, 1.0
    x = batch(10)
    r, a, _ = parts(x)
    rd, cov = r.detach(), centred_cov(x)
    clipped = ((a > 0) & (rd > 1 + eh)) | ((a < 0) & (rd < 1 - el))
    band = (cov > lb) & (cov < ub)
    assert_reaches(x, cut=band & ~clipped, clipped_in_band=band & clipped, above_ub=cov >= ub, below_lb=cov <= lb)
    cut = (band & ~clipped & (x.mask > 0)).to(r.dtype)
    formula = token_sum(torch.maximum(-a * r, -a * torch.clamp(r, 1 - el, 1 + eh)) * (1 - cut), x.mask)
    ours, _ = contract_loss(papers.clip_cov, x, eps_low=el, eps_high=eh, clip_cov_ratio=1.0,
                            clip_cov_lb=lb, clip_cov_ub=ub)
    assert_same_loss_and_gradient(ours, formula, x.logp)


def test_clip_cov_draws_the_published_number_of_candidates_reproducibly():
    el, eh, lb, ub, ratio = 0.25, 0.35, 0.2, 1.0, 0.03
    x = batch(10)
    r, a, _ = (t.detach() for t in parts(x))
    cov = centred_cov(x)
    clipped = ((a > 0) & (r > 1 + eh)) | ((a < 0) & (r < 1 - el))
    candidates = (cov > lb) & (cov < ub) & ~clipped & (x.mask > 0)
    expected = max(int(ratio * float(x.mask.sum())), 1)
    assert 1 < expected < int(candidates.sum())

    def cut(seed, step):
        x.step = step
        w = papers.clip_cov(x, eps_low=el, eps_high=eh, clip_cov_ratio=ratio, clip_cov_lb=lb,
                            clip_cov_ub=ub, seed=seed).weight
        assert not w.requires_grad
        return (w == 0) & ~clipped

    first = cut(seed=1, step=7)
    assert int(first.sum()) == expected and bool(candidates[first].all())
    assert torch.equal(first, cut(seed=1, step=7))
    assert not torch.equal(first, cut(seed=2, step=7)) or not torch.equal(first, cut(seed=1, step=8))


def test_kl_cov_equals_the_published_loss_with_the_abs_log_ratio_on_the_top_covariance_tokens():
    ratio, coef = 0.1, 0.7
    x = batch(11)
    r, a, _ = parts(x)
    cov = centred_cov(x)
    valid = [(i, j) for i in range(cov.shape[0]) for j in range(cov.shape[1]) if x.mask[i, j] > 0]
    k = max(1, int(len(valid) * ratio))
    top = sorted(valid, key=lambda ij: float(cov[ij]), reverse=True)[:k]
    chosen = torch.zeros_like(cov)
    for ij in top:
        chosen[ij] = 1.0
    assert_reaches(x, chosen_pos=(chosen > 0) & (a > 0), chosen_neg=(chosen > 0) & (a < 0),
                   big_ratio_not_chosen=(chosen == 0) & (r.detach() > 2))
    formula = token_sum(-a * r + coef * (x.logp - x.old_logp).abs() * chosen, x.mask)
    ours, terms = contract_loss(papers.kl_cov, x, kl_cov_ratio=ratio, ppo_kl_coef=coef)
    assert_same_loss_and_gradient(ours, formula, x.logp)
    assert torch.equal(terms.weight, r.detach())  # nothing is clipped
    assert torch.equal(terms.penalty != 0, chosen > 0) and not terms.penalty.requires_grad


def test_the_top_tokens_take_ties_at_the_kth_value_in_batch_order():
    from abcx.methods.collective import Collective, top_k

    values = torch.tensor([[3.0, 1.0, 2.0], [2.0, 2.0, 5.0]])
    valid = torch.tensor([[True, True, True], [True, True, False]])  # 5 is padding
    chosen = top_k(values, valid, 3, Collective())  # 3, then two of the three 2s: the first two in row order
    assert chosen.tolist() == [[True, False, True], [True, False, False]]


# ---------- BAPO ----------

BAPO = dict(c_low_start=0.55, c_low_max=0.75, c_low_step=0.05, c_high_start=1.1, c_high_max=1.7,
            c_high_step=0.15, clip_ratio_c=2.6)


def bapo_schedule(p):
    """The reference's search order: the lower bound first, then the upper one."""
    lows = [min(p["c_low_start"] + k * p["c_low_step"], p["c_low_max"]) for k in range(5)]
    highs = [min(p["c_high_start"] + k * p["c_high_step"], p["c_high_max"]) for k in range(1, 5)]
    return [(lo, p["c_high_start"]) for lo in lows] + [(lows[-1], hi) for hi in highs]


def balance(x, lo, hi):
    r, a, _ = (t.detach() for t in parts(x))
    m = x.mask
    pos = (a * torch.clamp(r, max=hi) * m)[a > 0].sum()
    neg = (-a * torch.clamp(r, min=lo) * m)[a < 0].sum()
    return float(pos / neg)


def expected_bounds(x, target):
    steps = bapo_schedule(BAPO)
    return next(((lo, hi) for lo, hi in steps if balance(x, lo, hi) >= target), steps[-1])


@pytest.mark.parametrize("where_it_stops", ["at_start", "while_raising_c_high", "never"])
def test_bapo_equals_ppo_with_the_bounds_the_published_search_reaches(where_it_stops):
    x = batch(12)
    steps = bapo_schedule(BAPO)
    target = {"at_start": balance(x, *steps[0]) * 0.999, "while_raising_c_high": balance(x, *steps[6]) * 0.999,
              "never": balance(x, *steps[-1]) * 1.5}[where_it_stops]
    lo, hi = expected_bounds(x, target)
    if where_it_stops == "while_raising_c_high":
        assert lo == BAPO["c_low_max"] and BAPO["c_high_start"] < hi < BAPO["c_high_max"]
    c_low, c_high, _ = bapo_bounds(x, target_ratio=target, **{k: v for k, v in BAPO.items() if k != "clip_ratio_c"})
    assert math.isclose(c_low, lo, abs_tol=1e-9) and math.isclose(c_high, hi, abs_tol=1e-9)
    r, a, _ = parts(x)
    rd = r.detach()
    assert_reaches(x, above=(a > 0) & (rd > hi), below=(a < 0) & (rd < lo), dual=(a < 0) & (rd > BAPO["clip_ratio_c"]))
    formula = token_sum(ppo_dual(r, a, lo, hi, BAPO["clip_ratio_c"]), x.mask)
    ours, terms = contract_loss(papers.bapo, x, target_ratio=target, **BAPO)
    assert_same_loss_and_gradient(ours, formula, x.logp)
    cut = ((a > 0) & (rd > hi)) | ((a < 0) & ((rd < lo) | (rd > BAPO["clip_ratio_c"])))
    assert not terms.weight.requires_grad and torch.all(terms.weight[cut] == 0)


def test_bapo_search_depends_on_the_batch():
    balanced = batch(12)
    negative_heavy = batch(12, adv=[v * (3 if v < 0 else 1) for v in ADV])
    assert bapo_bounds(balanced) == (0.6, 1.2, bapo_bounds(balanced)[2]) and bapo_bounds(balanced)[2] >= 1
    c_low, c_high, reached = bapo_bounds(negative_heavy)
    assert (c_low, c_high) != (0.6, 1.2) and c_low == 0.8


# ---------- Archer ----------

def per_row_quantile(values, mask, q):
    out = []
    for row, m in zip(values, mask):
        v = sorted(float(e) for e, keep in zip(row, m) if keep > 0)
        pos = q * (len(v) - 1)
        lo = math.floor(pos)
        hi = min(lo + 1, len(v) - 1)
        out.append(v[lo] + (pos - lo) * (v[hi] - v[lo]))
    return torch.tensor(out, dtype=values.dtype).unsqueeze(-1)


def test_archer_equals_ppo_with_looser_bounds_for_each_completions_high_entropy_tokens():
    el, eh, hl, hh, quant, c = 0.1, 0.2, 0.3, 0.45, 0.7, 2.4
    x = batch(13, b=12, t=24)
    r, a, _ = parts(x)
    rd = r.detach()
    calm = x.entropies <= per_row_quantile(x.entropies, x.mask, quant)
    hot = ~calm
    assert_reaches(x, calm_above=calm & (a > 0) & (rd > 1 + eh),
                   hot_between=hot & (a > 0) & (rd > 1 + eh) & (rd < 1 + hh),
                   hot_above=hot & (a > 0) & (rd > 1 + hh), calm_below=calm & (a < 0) & (rd < 1 - el),
                   hot_between_low=hot & (a < 0) & (rd < 1 - el) & (rd > 1 - hl),
                   hot_below=hot & (a < 0) & (rd < 1 - hl), dual=(a < 0) & (rd > c))
    low = torch.where(calm, 1 - el, 1 - hl)
    high = torch.where(calm, 1 + eh, 1 + hh)
    formula = token_sum(ppo_dual(r, a, low, high, c), x.mask)
    ours, terms = contract_loss(papers.archer, x, eps_low=el, eps_high=eh, high_entropy_eps_low=hl,
                                high_entropy_eps_high=hh, entropy_quantile=quant, clip_ratio_c=c)
    assert_same_loss_and_gradient(ours, formula, x.logp)
    cut = ((a > 0) & (rd > high)) | ((a < 0) & ((rd < low) | (rd > c)))
    assert not terms.weight.requires_grad and torch.all(terms.weight[cut] == 0)
    assert torch.equal(terms.weight[~cut], rd[~cut])


def test_archer_refuses_inputs_without_entropies():
    x = batch(14)
    x.entropies = None
    with pytest.raises(ValueError, match="entropies"):
        papers.archer(x)


# ---------- DRO ----------

def test_dro_equals_the_published_quadratic_penalised_policy_gradient():
    beta = 0.3
    x = batch(15)
    formula = token_sum(-(x.advantages * x.logp - 0.5 * beta * (x.logp - x.old_logp) ** 2), x.mask)
    ours, terms = contract_loss(papers.dro, x, beta=beta)
    assert_same_loss_and_gradient(ours, formula, x.logp)
    assert torch.all(terms.weight == 1) and torch.equal(terms.natural, terms.weight)
    assert torch.allclose(terms.penalty, beta * (x.logp - x.old_logp).detach()) and not terms.penalty.requires_grad


# ---------- every method ----------

def _rules_with_terms():
    """The rules of every module that builds LossTerms from a contract loss (papers, trust_region)."""
    from abcx.methods import trust_region

    return {**papers.METHODS, **trust_region.METHODS}


@pytest.mark.parametrize("name", sorted(_rules_with_terms()))
def test_terms_are_detached_and_masked_tokens_get_no_gradient(name):
    x = batch(16)
    loss, terms = contract_loss(_rules_with_terms()[name], x)
    for t in (terms.value, terms.weight, terms.penalty, terms.natural):
        assert t is None or not t.requires_grad
    grad, = torch.autograd.grad(loss, x.logp)
    assert torch.all(grad[x.mask == 0] == 0) and bool((grad != 0).any())


@pytest.mark.parametrize("name", sorted(papers.METHODS))
def test_metadata_documents_every_parameter_and_the_docstring_names_the_source_file(name):
    fn = papers.METHODS[name]
    meta = papers.METADATA[name]
    keyword_only = [p for p in inspect.signature(fn).parameters.values() if p.kind is p.KEYWORD_ONLY]
    assert sorted(meta["params"]) == sorted(p.name for p in keyword_only)
    assert all(spec["doc"] and spec["domain"] for spec in meta["params"].values())
    assert "arXiv" in meta["reference"] or "verl" in meta["reference"]
    assert ".py" in fn.__doc__ and "Source:" in fn.__doc__


def test_through_a_tiny_policy_the_parameter_gradients_match_too():
    """The same equality one step further back: log pi from a small softmax policy, gradients wrt
    its weight matrix (GMPO couples the tokens of a sequence, GPPO keeps bounded gradients)."""
    g = torch.Generator().manual_seed(17)
    b, t, d, v = 6, 8, 5, 7
    features = torch.randn(b, t, d, generator=g, dtype=torch.float64)
    tokens = torch.randint(0, v, (b, t), generator=g)
    w_old = torch.randn(d, v, generator=g, dtype=torch.float64)
    w = (w_old + 0.6 * torch.randn(d, v, generator=g, dtype=torch.float64)).requires_grad_(True)

    def logp_of(weights):
        return torch.log_softmax(features @ weights, -1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)

    adv = torch.tensor(ADV[:b], dtype=torch.float64).reshape(b, 1)
    mask = torch.ones(b, t, dtype=torch.float64)
    mask[2, 5:] = 0
    for method, formula, params, aggregate in [
        (papers.gmpo, lambda x: gmpo_formula(x, 0.3, 0.5), dict(eps_low=0.3, eps_high=0.5), sequence_mean),
        (papers.gppo, None, dict(eps_low=0.15, eps_high=0.3, clip_ratio_c=2.5), token_mean),
    ]:
        x = LossInputs(logp=logp_of(w), old_logp=logp_of(w_old).detach(), advantages=adv, mask=mask)
        ours, _ = contract_loss(method, x, aggregate=aggregate, **params)
        lr = (x.logp - x.old_logp).detach()
        a_tok = adv.expand_as(lr)
        assert_reaches(x, log_clipped=((a_tok > 0) & (lr > 0.5)) | ((a_tok < 0) & (lr < -0.3)))
        if formula is None:
            r, a, _ = parts(x)
            s = r.detach()
            assert_reaches(x, q1=(a > 0) & (s > 1.3), q3=(a < 0) & (s < 0.85), dual=(a < 0) & (s > 2.5))
            clipped = torch.minimum(torch.maximum(r, 0.85 * r / s), 1.3 * r / s)
            expected = token_mean(dual_clip(torch.maximum(-a * r, -a * clipped), a, 2.5), mask)
        else:
            expected = formula(x)
        g_ours, = torch.autograd.grad(ours, w, retain_graph=True)
        g_expected, = torch.autograd.grad(expected, w)
        assert abs(float(ours.detach() - expected.detach())) <= TOL
        assert torch.allclose(g_ours, g_expected, atol=TOL, rtol=0) and bool((g_ours != 0).any())
