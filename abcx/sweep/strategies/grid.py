"""`grid` (the default): every point to the end, in order."""
from __future__ import annotations

from abcx.sweep.strategies.base import Decisions, Queue, Start, StrategySpec


def parse_grid(raw: dict, spec: StrategySpec, where: str) -> StrategySpec:
    return spec


class Grid(Queue):
    """Every point to the end, in order: today's sweep."""

    def __init__(self, spec: StrategySpec, planned: list, decisions: Decisions, todo: list | None = None,
                 plan=None) -> None:
        self.todo = list(planned if todo is None else todo)

    def next(self, active: set[str]) -> Start | None:
        return Start(self.todo.pop(0), None) if self.todo else None
