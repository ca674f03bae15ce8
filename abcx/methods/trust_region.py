"""The trust-region rules of 2026: masks on how far the probability itself moved (DPPO-KL, IPO), a
ratio band that drops instead of clipping (IcePop), REINFORCE with an asymmetric taper or anchor
(TOPR, UP-GRPO), a penalty in place of the clip (CFPO), and the plain policy gradient (GPG).

Each is written as PolicyTerms (abcx/methods/terms.py). Notation: r = pi_theta / pi_old per token,
q = pi_old and p = pi_theta of the sampled token, A the advantage, sg() stop-gradient. Where a rule
was published on the trainer/inference ratio (IPO, IcePop), abcx's pi_old is TRL's old log-probs:
the behaviour policy's own when generation and training agree; the rollout/trainer mismatch itself
is the `correction` config group's axis (abcx/methods/correction.py), which composes with any rule.
`natural` is the weight each rule would give with nothing masked, tapered or clipped, so
`grad/zeroed` and `grad/scaled_down` count what the rule itself removes.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from abcx.methods.ratio_rules import log_ratio, ppo_dual_clip, token_advantages
from abcx.methods.terms import PolicyTerms

if TYPE_CHECKING:
    import torch

    from abcx.methods.terms import LossInputs

VERL = "volcengine/verl verl/trainer/ppo/core_algos.py"
PRIME = "PrimeIntellect-ai/prime-rl src/prime_rl/trainer/rl/loss.py"
BINARY_KL_EPS = 1e-8  # verl's guard in log((1 - q) / (1 - p)) when a probability reaches 1


def binary_kl(old_logp: "torch.Tensor", logp: "torch.Tensor") -> "torch.Tensor":
    """KL between the Bernoulli distributions (q, 1 - q) and (p, 1 - p) of the sampled token:
    q log(q / p) + (1 - q) log((1 - q + 1e-8) / (1 - p + 1e-8)), detached."""
    import torch

    q, p = torch.exp(old_logp.detach()), torch.exp(logp.detach())
    return q * (old_logp.detach() - logp.detach()) + (1 - q) * torch.log((1 - q + BINARY_KL_EPS) / (1 - p + BINARY_KL_EPS))


def dppo_kl(
    inputs: "LossInputs", *, delta_low: float = 0.05, delta_high: float = 0.05, clip_ratio_c: float = 20.0
) -> PolicyTerms:
    """DPPO-Binary-KL (arXiv 2602.04879): a token is dropped when the binary KL of its probability
    exceeds delta in the direction that hurts A: KL > delta_high and p > q for A > 0, KL > delta_low
    and p < q for A <= 0. The others get the truncated importance weight sg(min(r, c)) on A log pi
    (loss -A sg(min(r, c)) log pi * keep, also the value, as in verl).

    Source: volcengine/verl verl/trainer/ppo/core_algos.py (compute_policy_loss_dppo_kl, where
    clip_ratio_low/high are the KL thresholds); defaults from examples/dppo_trainer (0.05 for dppo_kl,
    and the TIS bound clip_ratio_c 20 the function falls back to).
    """
    import torch

    r = torch.exp(log_ratio(inputs, clamp=True))
    a = token_advantages(inputs)
    kl = binary_kl(inputs.old_logp, inputs.logp)
    rose = inputs.logp.detach() > inputs.old_logp.detach()
    fell = inputs.logp.detach() < inputs.old_logp.detach()
    keep = torch.where(a > 0, (kl <= delta_high) | ~rose, (kl <= delta_low) | ~fell).to(r.dtype)
    weight = r.clamp(max=clip_ratio_c) * keep
    return PolicyTerms(value=-a * weight * inputs.logp.detach(), weight=weight)


def ipo(inputs: "LossInputs", *, eps: float = 0.3, kl_tau: float = 0.0) -> PolicyTerms:
    """IPO (prime-rl's default loss): a token whose probability moved more than eps, |p - q| > eps,
    is dropped whatever the sign of A; the others get -A r. Optionally kl_tau (log r)^2 on every
    token (Kimi-K2.5's squared log-ratio, penalty gradient 2 kl_tau log r). Loss
    -A r * keep + kl_tau (log r)^2, summed over tokens in prime-rl and aggregated like any other here.

    Source: PrimeIntellect-ai/prime-rl src/prime_rl/trainer/rl/loss.py (ipo_loss_fn); defaults
    eps 0.3 and kl_tau 0 from prime-rl PR #3586 (the default since #3418); its adv_tau, a scale of A,
    is left out (the learning rate's job).
    """
    import torch

    lr = log_ratio(inputs)
    r = torch.exp(lr)
    a = token_advantages(inputs)
    moved = (torch.exp(inputs.logp.detach()) - torch.exp(inputs.old_logp.detach())).abs()
    keep = (moved <= eps).to(r.dtype)
    weight = r * keep
    return PolicyTerms(value=-a * weight + kl_tau * lr**2, weight=weight, penalty=2 * kl_tau * lr, natural=r)


def icepop(inputs: "LossInputs", *, alpha: float = 0.5, beta: float = 5.0) -> PolicyTerms:
    """IcePop (Ring-1T, arXiv 2510.18855): weight r * 1[alpha <= r <= beta] on A grad(log pi); a token
    out of the band gets no gradient at all (dropped, not clipped to the bound). Loss -A r inside.

    Source: the paper's M(k; alpha, beta) operator as implemented in PrimeIntellect-ai/prime-rl
    src/prime_rl/trainer/rl/loss.py (IcePopLoss, PR #3526: inclusive band) and rllm-org/rllm PR #741;
    defaults alpha 0.5, beta 5.0 (the paper's).
    """
    import torch

    r = torch.exp(log_ratio(inputs))
    keep = ((r >= alpha) & (r <= beta)).to(r.dtype)
    return PolicyTerms(value=-token_advantages(inputs) * r * keep, weight=r * keep, natural=r)


def topr(inputs: "LossInputs", *, sequence_ratio: str = "geometric") -> PolicyTerms:
    """TOPR (Tapered Off-Policy REINFORCE, arXiv 2503.14286): -A w log pi with w = 1 for A > 0 and
    w = sg(clamp(s, 0, 1)) for A < 0, s the sequence's ratio: `geometric` exp(mean_t log r) (the
    length-normalised ratio of verl PR #6986) or `product` exp(sum_t log r) (the paper's pi(y)/mu(y)).
    Positive sequences are reinforced whatever their ratio; negative ones are pushed down less the
    further they drifted, never cut. `natural` is REINFORCE's weight, 1.

    Source: verl-project/verl PR #6986 (compute_policy_loss_topr, verl/trainer/ppo/core_algos.py) and
    the paper's Eq. for the truncated ratio [pi/mu]_0^1; no hyperparameter beyond the ratio's form.
    """
    import torch

    from abcx.methods.clip import sequence_log_ratio

    lr, mask = log_ratio(inputs, clamp=True), inputs.mask.to(inputs.logp.dtype)
    seq = sequence_log_ratio(lr, mask) if sequence_ratio == "geometric" else (lr * mask).sum(-1, keepdim=True)
    a = token_advantages(inputs)
    taper = torch.exp(seq.clamp(max=0.0)).expand_as(lr)  # clamp(s, 0, 1), computed in log space
    weight = torch.where(a < 0, taper, torch.ones_like(lr))
    return PolicyTerms(value=-a * weight * inputs.logp.detach(), weight=weight, natural=torch.ones_like(lr))


def up_grpo(inputs: "LossInputs", *, eps_low: float = 0.2, clip_ratio_c: float = 3.0) -> PolicyTerms:
    """UP-GRPO (Unbounded Positive asymmetric optimisation, arXiv 2607.06987, Eq. 15): for A > 0 the
    self-anchored REINFORCE -A pi/sg(pi) (value -A, weight 1: never clipped, no pi_old); for A <= 0
    PPO's clip at 1 - eps_low plus verl's dual clip c. The upper clip never binds on the A <= 0 side,
    so there is no eps_high. `natural` is 1 for A > 0 (the rule's own weight) and r for A <= 0.

    Source: verl-project/verl PR #7022 (loss mode `up`, verl/trainer/ppo/core_algos.py) and the
    TRL proposal huggingface/trl#6407 / PR #6579 (trl/experimental/up); defaults eps 0.2 and c 3 (GRPO's).
    """
    import torch

    r = torch.exp(log_ratio(inputs))
    a = token_advantages(inputs)
    clip_value, clip_weight = ppo_dual_clip(r, a, 1 - eps_low, torch.inf, clip_ratio_c)
    positive = a > 0
    ones = torch.ones_like(r)
    return PolicyTerms(value=torch.where(positive, -a, clip_value), weight=torch.where(positive, ones, clip_weight),
                       natural=torch.where(positive, ones, r))


def cfpo(inputs: "LossInputs", *, eps: float = 0.2) -> PolicyTerms:
    """CFPO (Clipping-Free Policy Optimization, arXiv 2601.22801, Eq. 7): the clip replaced by a convex
    penalty from the total-variation trust region, loss -(r A - |A| / (2 eps) (r - 1)^2). Its gradient
    is (A - |A| (r - 1) / eps) r grad(log pi), i.e. weight r (1 - sgn(A) (r - 1) / eps): r near 1,
    0 at r = 1 + sgn(A) eps (where the penalty balances the advantage), and of the opposite sign
    beyond it, pulling r back instead of cutting the token. eps plays the clip range's part (no new
    hyperparameter).

    Source: the paper's Eq. 7 (asparius/cfpo; its verl PR #5252 and TRL PR #5027 change one line of
    the clipped surrogate); default eps 0.2 (GRPO's clip range).
    """
    import torch

    r = torch.exp(log_ratio(inputs))
    a = token_advantages(inputs)
    value = -(r * a - a.abs() / (2 * eps) * (r - 1) ** 2)
    return PolicyTerms(value=value, weight=r * (1 - torch.sign(a) * (r - 1) / eps), natural=r)


def gpg(inputs: "LossInputs") -> PolicyTerms:
    """GPG (Group Policy Gradient): -A log pi, the policy gradient with no ratio, clip or penalty
    (weight 1 on every token). Source: volcengine/verl verl/trainer/ppo/core_algos.py
    (compute_policy_loss_gpg, adapted there from AMAP-ML/GPG).
    """
    import torch

    ones = torch.ones_like(inputs.logp.detach())
    return PolicyTerms(value=-token_advantages(inputs) * inputs.logp.detach(), weight=ones, natural=ones)


def _check_icepop(*, alpha: float, beta: float) -> None:
    from abcx.errors import UserError

    if not alpha < beta:
        raise UserError(f"method.alpha={alpha} must be < method.beta={beta} (IcePop keeps r in [alpha, beta])")


_DELTA = "drop A {sign} tokens whose binary KL(pi_old || pi) exceeds this while p {moved}"

METADATA = {
    "dppo_kl": {
        "reference": f"DPPO, arXiv 2602.04879; {VERL} (dppo_kl)",
        "doc": "drop tokens whose probability moved too far in binary KL; truncated IS weight on the rest",
        "formula": "-A sg(min(r, c)) log pi * keep; keep: KL_bin(q, p) <= delta, or p moved against A's push",
        "params": {
            "delta_low": {"doc": _DELTA.format(sign="<= 0", moved="< q"), "domain": "> 0"},
            "delta_high": {"doc": _DELTA.format(sign="> 0", moved="> q"), "domain": "> 0"},
            "clip_ratio_c": {"doc": "truncation of the importance weight, min(r, c)", "domain": "> 1"},
        },
    },
    "ipo": {
        "reference": f"prime-rl's default loss (PRs #3418, #3586); {PRIME} (ipo_loss_fn)",
        "doc": "drop tokens whose probability moved more than eps either way; optional (log r)^2 penalty",
        "formula": "-A r * 1[|p - q| <= eps] + kl_tau (log r)^2",
        "params": {
            "eps": {"doc": "drop tokens with |pi - pi_old| > eps, whatever the sign of A", "domain": "(0, 1)"},
            "kl_tau": {"doc": "coefficient of the squared log-ratio penalty (0: off)", "domain": ">= 0"},
        },
    },
    "icepop": {
        "reference": f"IcePop (Ring-1T), arXiv 2510.18855; {PRIME} (IcePopLoss); rllm PR #741",
        "doc": "weight r inside [alpha, beta], 0 outside: out-of-band tokens dropped, not clipped",
        "formula": "-A r * 1[alpha <= r <= beta]",
        "params": {
            "alpha": {"doc": "lower end of the kept ratio band", "domain": "(0, 1]"},
            "beta": {"doc": "upper end of the kept ratio band", "domain": ">= 1"},
        },
        "check": _check_icepop,
    },
    "topr": {
        "reference": "TOPR, arXiv 2503.14286; verl-project/verl PR #6986 (loss mode topr)",
        "doc": "REINFORCE with weight 1 for A > 0 and the sequence ratio tapered to [0, 1] for A < 0",
        "formula": "-A w log pi; w = 1 (A > 0), sg(clamp(s, 0, 1)) (A < 0)",
        "params": {
            "sequence_ratio": {"doc": "s = exp(mean log r) (geometric, verl's) or exp(sum log r) (product, the "
                                      "paper's)", "domain": "geometric|product"},
        },
    },
    "up_grpo": {
        "reference": "UP, arXiv 2607.06987 (Eq. 15); verl-project/verl PR #7022 (loss mode up); TRL PR #6579",
        "doc": "unbounded self-anchored REINFORCE for A > 0; PPO clip + dual clip for A <= 0",
        "formula": "-A pi/sg(pi) if A > 0, else -max(min(rA, max(r, 1 - eps_low) A), cA)",
        "params": {
            "eps_low": {"doc": "A <= 0 lower clip 1 - eps_low", "domain": "(0, 1)"},
            "clip_ratio_c": {"doc": "verl's dual clip: A < 0 tokens with r > c get no gradient", "domain": "> 1"},
        },
    },
    "cfpo": {
        "reference": "CFPO, arXiv 2601.22801 (Eq. 7); asparius/cfpo; verl PR #5252, TRL PR #5027",
        "doc": "the clip replaced by a convex total-variation penalty: a gradient everywhere",
        "formula": "-(r A - |A| / (2 eps) (r - 1)^2)",
        "params": {"eps": {"doc": "trust-region size: the penalty cancels the advantage at r = 1 + sgn(A) eps",
                           "domain": "> 0"}},
    },
    "gpg": {
        "reference": f"GPG (AMAP-ML/GPG); {VERL} (gpg)",
        "doc": "plain policy gradient -A log pi: no ratio, no clip",
        "formula": "-A log pi",
        "params": {},
    },
}
METHODS = {"dppo_kl": dppo_kl, "ipo": ipo, "icepop": icepop, "topr": topr, "up_grpo": up_grpo, "cfpo": cfpo,
           "gpg": gpg}
