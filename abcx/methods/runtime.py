"""A method bound to its parameters for one run: what the trainer calls each micro-batch and step.

It applies a four-bound method's epsilon schedule (the parameters' values at the current step),
holds abc_adaptive's controller state (saved in checkpoints, so a resumed run continues exactly),
and gives the band the quadrant statistics use.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

from abcx.methods import Method, get
from abcx.methods.adaptive import scheduled
from abcx.methods.clip import DEFAULT_BAND_EPS, Bounds

if TYPE_CHECKING:
    from abcx.methods.terms import LossInputs, PolicyTerms


class MethodRun:
    def __init__(self, method: Method | str, params: Mapping[str, Any] | None = None, max_steps: int = 1):
        self.method = get(method) if isinstance(method, str) else method
        given = {k: v for k, v in dict(params or {}).items() if k != "name"}
        self.params = {**self.method.defaults(), **given}
        self.max_steps = max_steps
        self.state: dict[str, Any] = {}
        if self.method.controller is not None:
            own = self.method.own(self.params)
            self.state["eps"] = [own["eps1"], own["eps2"], own["eps3"], own["eps4"]]

    @property
    def name(self) -> str:
        return self.method.name

    @property
    def level(self) -> str:
        return self.method.level(self.params)

    def params_at(self, step: int) -> dict[str, Any]:
        own = self.method.own(self.params)
        kind = self.params.get("schedule", "constant")
        for key, end in self.method.schedule_ends(self.params).items():
            own[key] = scheduled(float(own[key]), float(end), kind, step, self.max_steps)
        return own

    def terms(self, inputs: "LossInputs") -> "PolicyTerms":
        inputs.state = self.state
        return self.method.fn(inputs, **self.params_at(inputs.step))

    def bounds(self, step: int) -> Bounds | None:
        """The four bounds in use at `step` (None for a method without bounds)."""
        if self.method.controller is not None:
            return Bounds(*self.state["eps"])
        if self.method.bounds is None:
            return None
        return self.method.bounds(**self.params_at(step))

    def band(self, step: int) -> Bounds:
        bounds = self.bounds(step)
        return bounds if bounds is not None else Bounds(*(DEFAULT_BAND_EPS,) * 4)

    def step_end(self, fractions: list[float]) -> None:
        """After an optimiser step: the controller's update from Q1..Q4's reduced out-of-band fractions."""
        if self.method.controller is not None:
            self.state["eps"] = list(self.method.controller(self.state["eps"], fractions, **self.params))

    def state_dict(self) -> dict[str, Any]:
        return {"method": self.name, **{k: list(v) if isinstance(v, (list, tuple)) else v
                                        for k, v in self.state.items()}}

    def load_state_dict(self, saved: Mapping[str, Any]) -> None:
        if saved.get("method") != self.name:
            raise ValueError(f"checkpoint holds the state of method {saved.get('method')!r}, not {self.name!r}")
        self.state.update({k: v for k, v in saved.items() if k != "method"})


def bounds_for(name: str, params: Mapping[str, Any] | None = None) -> Bounds:
    """The four bounds of a four-bound method with `params` (defaults for the rest), at step 0."""
    bounds = MethodRun(name, params).bounds(0)
    if bounds is None:
        from abcx.errors import UserError

        raise UserError(f"method {name!r} has no four bounds")
    return bounds
