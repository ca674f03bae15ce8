"""TRL 1.16's loss types that are not a clip of r: CISPO, SAPO, VESPO (LUSPO is GSPO with its own
aggregation: abcx.methods.four_bound). Each is written from its published formula as PolicyTerms;
tests/test_trl_equivalence.py proves each equals TRL's `_compute_loss` in loss and every gradient."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

from abcx.methods.clip import importance_ratio

if TYPE_CHECKING:
    from abcx.methods.terms import LossInputs, PolicyTerms

TRL = "TRL 1.16 trl/trainer/grpo_trainer.py (_compute_loss"


def cispo(inputs: "LossInputs", *, eps_max: float = 5.0, importance_sampling_level: str = "token") -> "PolicyTerms":
    """CISPO: -sg(min(r, eps_max)) * A * log pi; a clipped token keeps its gradient, scaled to eps_max."""
    import torch

    from abcx.methods.terms import PolicyTerms

    shape = inputs.mask.shape
    ratio = importance_ratio(inputs.logp.detach() - inputs.old_logp, inputs.mask, importance_sampling_level)
    weight = torch.clamp(ratio, max=eps_max).expand(shape)
    value = -weight * inputs.advantages * inputs.logp.detach()
    return PolicyTerms(value=value, weight=weight, natural=ratio.expand(shape))


def sapo(inputs: "LossInputs", *, tau_pos: float = 1.0, tau_neg: float = 1.05,
         importance_sampling_level: str = "token") -> "PolicyTerms":
    """SAPO: -(4/tau) * sigmoid(tau (r - 1)) * A, a soft gate in place of the clip (tau by the sign of A)."""
    import torch

    from abcx.methods.terms import PolicyTerms

    shape = inputs.mask.shape
    ratio = importance_ratio(inputs.logp.detach() - inputs.old_logp, inputs.mask, importance_sampling_level)
    tau = torch.where(inputs.advantages > 0, tau_pos, tau_neg).to(ratio.dtype)
    gate = torch.sigmoid(tau * (ratio - 1))
    value = -(4 / tau) * gate * inputs.advantages
    # d/d log r of (4/tau) sigmoid(tau (r - 1)) = 4 sigmoid (1 - sigmoid) r
    weight = 4 * gate * (1 - gate) * ratio
    return PolicyTerms(value=value.expand(shape), weight=weight.expand(shape), natural=ratio.expand(shape),
                       sequence=importance_sampling_level == "sequence")


def vespo(inputs: "LossInputs", *, k_pos: float = 2.0, lambda_pos: float = 3.0, k_neg: float = 3.0,
          lambda_neg: float = 2.0) -> "PolicyTerms":
    """VESPO: -sg(phi(w)) * A * log pi with phi(w) = e^lam w^k e^(-lam w), w the sequence's product of token
    ratios (times vLLM's IS ratios where TRL corrects for them); (k, lam) by the sign of A (A >= 0: pos)."""
    import torch

    from abcx.methods.terms import PolicyTerms

    mask = inputs.mask
    floor = math.log(1e-8)
    log_w = (torch.clamp(inputs.logp.detach() - inputs.old_logp, -20.0, 20.0) * mask).sum(-1, keepdim=True)
    if inputs.is_ratio is not None:
        log_w = log_w + (torch.clamp(torch.log(inputs.is_ratio), floor, 20.0) * mask).sum(-1, keepdim=True)
    log_w = torch.clamp(log_w, floor, 20.0)
    nonneg = inputs.advantages >= 0
    k = torch.where(nonneg, k_pos, k_neg).to(log_w.dtype)
    lam = torch.where(nonneg, lambda_pos, lambda_neg).to(log_w.dtype).clamp(min=1e-4)
    phi = torch.exp(lam + k * log_w - lam * torch.exp(log_w)).nan_to_num(nan=0.0, posinf=0.0, neginf=0.0)
    weight = phi.expand(mask.shape)
    value = -weight * inputs.advantages * inputs.logp.detach()
    return PolicyTerms(value=value, weight=weight, natural=torch.exp(log_w).expand(mask.shape))


_LEVEL = {"doc": "ratio per token, or GSPO's per-sequence exp(mean log-ratio)", "domain": "token|sequence"}

METADATA = {
    "cispo": {"reference": f"MiniMax-M1 (arXiv 2506.13585), ScaleRL; {TRL}, loss_type='cispo'); verl `cispo`",
              "params": {"eps_max": {"doc": "cap on the detached weight r (TRL's epsilon_high for cispo)",
                                     "domain": "> 0"},
                         "importance_sampling_level": _LEVEL}},
    "sapo": {"reference": f"Gao et al. 2025 (SAPO, arXiv 2511.20347); {TRL}, loss_type='sapo'); verl `sapo`",
             "params": {"tau_pos": {"doc": "gate temperature for A > 0 (TRL's sapo_temperature_pos)", "domain": "> 0"},
                        "tau_neg": {"doc": "gate temperature for A <= 0 (TRL's sapo_temperature_neg)", "domain": "> 0"},
                        "importance_sampling_level": _LEVEL}},
    "vespo": {"reference": f"VESPO; {TRL}, loss_type='vespo', GRPOTrainer.get_gamma_weights)",
              "params": {"k_pos": {"doc": "gamma shape k for A >= 0", "domain": ">= 0"},
                         "lambda_pos": {"doc": "gamma rate lambda for A >= 0", "domain": ">= 0"},
                         "k_neg": {"doc": "gamma shape k for A < 0", "domain": ">= 0"},
                         "lambda_neg": {"doc": "gamma rate lambda for A < 0", "domain": ">= 0"}},
              "uses_is_ratio": True},
}
