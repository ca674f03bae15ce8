"""example_rule: GRPO's clip with an exponential taper in place of the cut.

GRPO gives a token its full weight r up to the bound and none just past it (A > 0 above
h = 1 + eps_high; A <= 0 below l = 1 - eps_low): the gradient falls off a cliff at the bound. The
taper keeps GRPO exactly inside the band and lets the weight decay with the distance past the bound:

    A > 0,  r > h:   weight = r * exp(-(r - h) / tau)
    A <= 0, r < l:   weight = r * exp(-(l - r) / tau)
    elsewhere:       weight = r                      (the plain importance-weighted policy gradient)

tau -> 0 is GRPO's clip, tau -> inf no clip at all. The loss value is -A * f(r) with r f'(r) = weight,
so value and gradient belong to one function: f(r) = h + tau (1 - exp(-(r - h)/tau)) past h,
l - tau (1 - exp(-(l - r)/tau)) past l, r elsewhere.

In abcx's uniform metrics GRPO's cut tokens show as grad/zeroed; this rule moves them to
grad/scaled_down, and its Q1/Q3 gradient shares grow with tau.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from abcx.methods.terms import LossInputs, PolicyTerms


def example_rule(inputs: "LossInputs", *, eps_low: float = 0.2, eps_high: float = 0.2,
                 tau: float = 0.1) -> "PolicyTerms":
    """GRPO's clip with an exponential taper: past the bound the weight decays as exp(-distance / tau)."""
    import torch

    from abcx.methods.clip import importance_ratio
    from abcx.methods.terms import PolicyTerms

    r = importance_ratio(inputs.logp.detach() - inputs.old_logp, inputs.mask)
    positive = inputs.advantages > 0
    edge = torch.where(positive, r.new_tensor(1 + eps_high), r.new_tensor(1 - eps_low))
    side = torch.where(positive, r.new_tensor(1.0), r.new_tensor(-1.0))  # the cut lies above (+1) or below (-1)
    past = (side * (r - edge)).clamp(min=0)  # how far r lies past the bound GRPO cuts at (0 inside)
    decay = torch.exp(-past / tau)
    f = torch.where(past > 0, edge + side * tau * (1 - decay), r)
    shape = inputs.mask.shape
    return PolicyTerms(value=(-f * inputs.advantages).expand(shape), weight=(r * decay).expand(shape),
                       natural=r.expand(shape))


METADATA = {
    "example_rule": {
        "reference": "abcx examples/plugin (a tapered GRPO clip; tau -> 0 is GRPO, Shao et al. 2024, arXiv 2402.03300)",
        "params": {
            "eps_low": {"doc": "A<=0 tokens below 1 - eps_low are tapered", "domain": "(0, 1)"},
            "eps_high": {"doc": "A>0 tokens above 1 + eps_high are tapered", "domain": ">= 0"},
            "tau": {"doc": "taper width: weight x exp(-distance past the bound / tau)", "domain": "> 0"},
        },
    },
}
