"""abcx's own answer to the paper's open question (a self-optimised clipping threshold): ABC-GRPO whose
four epsilons each follow a controller toward a target out-of-band fraction for their quadrant, and
epsilon schedules for any bound parameter of any four-bound method.

Controller (once per optimiser step, from that step's quadrant counts summed over its micro-batches
and reduced across processes, so every rank uses the same epsilons):

    eps_q <- clamp(eps_q * exp(eta * (f_q - f*_q)), eps_min, eps_max)

with the quadrant of each epsilon as in abcx.methods.clip: eps1 <-> Q1, eps2 <-> Q2, eps3 <-> Q4,
eps4 <-> Q3. Too many tokens out of band widens the bound, too few narrows it. A lower bound's eps
stays below LOWER_CAP so that 1 - eps > 0.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Sequence

from abcx.methods.clip import Bounds, four_bound_terms

if TYPE_CHECKING:
    from abcx.methods.terms import LossInputs, PolicyTerms

LOWER_CAP = 0.99
# Which quadrant's out-of-band fraction (index into q1..q4) drives each of eps1..eps4.
QUADRANT_OF_EPS = (0, 1, 3, 2)


def abc_adaptive(inputs: "LossInputs", *, eps1: float = 0.2, eps2: float = 0.2, eps3: float = 0.2,
                 eps4: float = 0.2, target_q1: float = 0.02, target_q2: float = 0.02, target_q3: float = 0.02,
                 target_q4: float = 0.02, eta: float = 5.0, eps_min: float = 0.02, eps_max: float = 1.0,
                 importance_sampling_level: str = "token") -> "PolicyTerms":
    """ABC-GRPO with each epsilon steered toward a target out-of-band fraction of its quadrant."""
    eps = inputs.state.get("eps") or (eps1, eps2, eps3, eps4)
    return four_bound_terms(inputs, Bounds(*eps), importance_sampling_level)


def adaptive_bounds(*, eps1: float, eps2: float, eps3: float, eps4: float, **_: object) -> Bounds:
    return Bounds(eps1=eps1, eps2=eps2, eps3=eps3, eps4=eps4)


def adaptive_update(eps: Sequence[float], fractions: Sequence[float], *, target_q1: float, target_q2: float,
                    target_q3: float, target_q4: float, eta: float, eps_min: float, eps_max: float,
                    **_: object) -> tuple[float, float, float, float]:
    """One controller step. `fractions` are Q1..Q4's out-of-band fractions of the step's tokens."""
    targets = (target_q1, target_q2, target_q3, target_q4)
    out = []
    for i, value in enumerate(eps):
        q = QUADRANT_OF_EPS[i]
        high = min(eps_max, LOWER_CAP) if i in (1, 3) else eps_max
        out.append(min(max(value * math.exp(eta * (fractions[q] - targets[q])), eps_min), high))
    return tuple(out)  # type: ignore[return-value]


def _check(*, eps_min: float, eps_max: float, eps1: float, eps2: float, eps3: float, eps4: float,
           **_: object) -> None:
    from abcx.errors import UserError

    if not eps_min <= eps_max:
        raise UserError(f"method.eps_min={eps_min} must be <= method.eps_max={eps_max}")
    for name, value in (("eps1", eps1), ("eps2", eps2), ("eps3", eps3), ("eps4", eps4)):
        if not eps_min <= value <= eps_max:
            raise UserError(f"method.{name}={value} must lie in [eps_min, eps_max] = [{eps_min}, {eps_max}]")


def scheduled(start: float, end: float, kind: str, step: int, max_steps: int) -> float:
    """A bound parameter's value at `step`: constant, linear or cosine from `start` (step 0) to `end`."""
    progress = min(max(step / max(max_steps, 1), 0.0), 1.0)
    if kind == "linear":
        return start + (end - start) * progress
    if kind == "cosine":
        return end + (start - end) * (1 + math.cos(math.pi * progress)) / 2
    return start


_TARGET = {"doc": "target out-of-band fraction of {q} (of all completion tokens)", "domain": "[0, 1]"}
_EPS = {"eps1": "start of eps1 (A>0 upper, Q1)", "eps2": "start of eps2 (A>0 lower, Q2)",
        "eps3": "start of eps3 (A<=0 upper, Q4)", "eps4": "start of eps4 (A<=0 lower, Q3)"}

METADATA = {
    "abc_adaptive": {
        "reference": "abcx (this tool); the four-bound rule of ABC-GRPO (arXiv 2601.03895); abcx/methods/adaptive.py",
        "params": {
            **{k: {"doc": doc, "domain": "(0, 1)" if k in ("eps2", "eps4") else "> 0"} for k, doc in _EPS.items()},
            **{f"target_q{i}": {**_TARGET, "doc": _TARGET["doc"].format(q=f"Q{i}")} for i in range(1, 5)},
            # Finite: at eta=inf any error, however small, throws eps from one bound to the other every step.
            "eta": {"doc": "controller gain: log-eps change per unit of fraction error", "domain": "[0, 100]"},
            "eps_min": {"doc": "smallest eps the controller may reach", "domain": "> 0"},
            "eps_max": {"doc": "largest eps (a lower bound's also stays below 0.99)", "domain": "> 0"},
            "importance_sampling_level": {"doc": "ratio per token or per sequence", "domain": "token|sequence"},
        },
        "controller": adaptive_update,
        "check": _check,
    },
}
