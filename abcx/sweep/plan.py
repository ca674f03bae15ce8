"""Points -> validated configs, run ids and states: the plan a submission acts on.

Composing through Hydra costs ~20-40 ms per call, too slow for a 1,000-point grid. Points of a sweep
share few distinct config-group choices, so each distinct combination is composed once through
`abcx.config.compose` and every point's remaining value overrides are applied to a copy the way Hydra
applies them (OmegaConf.update with merge; typed nodes check types), then `abcx.config.validate` runs
on each. A point the fast path cannot apply is composed through `compose` itself, so every error is
the same typed UserError a single `abcx train` would give; the error is prefixed with the point.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from abcx.errors import UserError
from abcx.record import RunRecord
from abcx.record.states import LIVE as _LIVE
from abcx.record.states import PLANNED, RESUMABLE, State
from abcx.record.states import StopKind

MAX_POINTS = 500
# Plan states (abcx.record.states): status.json's state, with "pending"/absent as `new`, a dead job's
# `running` as `failed`, and `queued` for a submitted job that has not started training yet.
PLAN_STATES = tuple(s.value for s in PLANNED)


@dataclass
class PlannedRun:
    index: int
    overrides: tuple[str, ...]
    cfg: Any
    run_id: str
    path: Path
    state: str = State.NEW.value
    status: dict = field(default_factory=dict)
    note: str = ""  # why the state differs from status.json's (e.g. "job gone")

    @property
    def label(self) -> str:
        return " ".join(self.overrides)


def describe(overrides: Iterable[str]) -> str:
    from abcx.secrets import redact  # error lines quote the point; never a credential in it

    text = redact(" ".join(overrides))
    return "[" + (text if len(text) <= 300 else text[:297] + "...") + "]"


class Node(dict):
    """A plain-dict config with attribute access: what `validate` and `run_id` need, at dict speed."""

    def __getattr__(self, key: str) -> Any:
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None


def _node(value: Any) -> Any:
    if isinstance(value, dict):
        return Node((k, _node(v)) for k, v in value.items())
    if isinstance(value, list):
        return [_node(v) for v in value]
    return value


class _Composer:
    """compose() once per distinct group-choice combination; value overrides applied per point.

    Each distinct value override is applied once, through OmegaConf, to a copy of its typed base (so
    Hydra's type checks and conversions happen exactly as in compose); the converted value is then
    written into a plain-dict copy of the base for every point that uses it. Overrides are
    independent when no key is a prefix of another and none deletes; other points take the exact,
    slower way (deep copy of the typed base, every override applied in order)."""

    def __init__(self) -> None:
        from abcx.config.schema import GROUPS

        self.groups = set(GROUPS)
        self.bases: dict[tuple[str, ...], Any] = {}  # group part -> (typed base, plain base) or None
        self.parsed: dict[str, Any] = {}
        self.converted: dict[tuple[tuple[str, ...], str], Any] = {}  # (group part, override) -> (path, value)

    def _parse(self, text: str):
        o = self.parsed.get(text)
        if o is None:
            from hydra.core.override_parser.overrides_parser import OverridesParser

            from abcx.config.compose import check_overrides

            check_overrides([text])  # refuses sweeps and +keys outside the schema, as compose does
            o = OverridesParser.create().parse_overrides(overrides=[text])[0]
            self.parsed[text] = o
        return o

    def _base(self, group_part: tuple[str, ...]):
        if group_part not in self.bases:
            from omegaconf import OmegaConf

            from abcx.config.compose import compose

            try:
                typed = compose(group_part)
                self.bases[group_part] = (typed, OmegaConf.to_container(typed, resolve=True))
            except UserError:
                self.bases[group_part] = None  # the base alone is invalid; its points go the slow way
        return self.bases[group_part]

    def _convert(self, group_part: tuple[str, ...], typed: Any, text: str):
        """(key path, value after Hydra's conversion) of one override applied alone to the base."""
        cache_key = (group_part, text)
        if cache_key not in self.converted:
            from omegaconf import OmegaConf

            o = self._parse(text)
            if o.is_delete():
                result = None
            else:
                cfg = copy.deepcopy(typed)
                _apply(cfg, o)
                value = OmegaConf.select(cfg, o.key_or_group)
                if OmegaConf.is_config(value):
                    value = OmegaConf.to_container(value, resolve=True)
                result = (tuple(o.key_or_group.split(".")), value)
            self.converted[cache_key] = result
        return self.converted[cache_key]

    def compose(self, overrides: tuple[str, ...]) -> Any:
        from abcx.config.compose import compose
        from abcx.config.validate import validate

        group_part = tuple(sorted(o for o in overrides if o.split("=", 1)[0].lstrip("+~").split("@")[0] in self.groups))
        values = [o for o in overrides if o.split("=", 1)[0].lstrip("+~").split("@")[0] not in self.groups]
        base = self._base(group_part)
        if base is None:
            return compose(overrides)
        typed, plain = base
        try:
            changes = [self._convert(group_part, typed, text) for text in values]
        except UserError:
            raise
        except Exception:  # noqa: BLE001 - let compose() produce its canonical message
            return compose(overrides)
        paths = [c[0] for c in changes if c is not None]
        independent = None not in changes and not any(
            a != b and a == b[: len(a)] for a in paths for b in paths
        )
        if independent:
            cfg = _node(plain)
            for path, value in changes:
                node = cfg
                for part in path[:-1]:
                    node = node.setdefault(part, Node())
                node[path[-1]] = _node(copy.deepcopy(value))
        else:
            try:
                exact = copy.deepcopy(typed)
                for text in values:
                    _apply(exact, self._parse(text))
            except UserError:
                raise
            except Exception:  # noqa: BLE001
                return compose(overrides)
            cfg = exact
        validate(cfg)
        return cfg


def _apply(cfg: Any, o: Any) -> None:
    """One value override, as Hydra's config loader applies it after composition."""
    from omegaconf import OmegaConf, open_dict

    key, value = o.key_or_group, o.value()
    if o.is_delete():
        if OmegaConf.select(cfg, key, throw_on_missing=False) is None:
            raise KeyError(key)
        parent, _, leaf = key.rpartition(".")
        with open_dict(cfg):
            del (OmegaConf.select(cfg, parent) if parent else cfg)[leaf]
    elif o.is_add():
        if OmegaConf.select(cfg, key, throw_on_missing=False) is not None and not isinstance(value, (dict, list)):
            raise KeyError(key)
        OmegaConf.update(cfg, key, value, merge=True, force_add=True)
    elif o.is_force_add():
        OmegaConf.update(cfg, key, value, merge=True, force_add=True)
    else:
        OmegaConf.update(cfg, key, value, merge=True)


def build(points: list[tuple[str, ...]], *, allow_many: bool = False) -> list[PlannedRun]:
    """Compose and validate every point; any bad point raises before anything is submitted."""
    from abcx.config.identity import model_build, run_id
    from abcx.paths import check_name
    from abcx.record import RunRecord, runs_dir

    if not points:
        raise UserError("the sweep has no points")
    if len(points) > MAX_POINTS and not allow_many:
        raise UserError(f"the sweep has {len(points)} points (> {MAX_POINTS}); pass --yes to submit that many")
    composer = _Composer()
    planned: list[PlannedRun] = []
    seen: dict[str, int] = {}
    roots: dict[str, Path] = {}
    for i, overrides in enumerate(points):
        try:
            cfg = composer.compose(overrides)
        except UserError as err:
            raise UserError(f"point {i + 1} {describe(overrides)}: {err}") from None
        rid = run_id(cfg)
        if rid in seen:
            j = seen[rid]
            raise UserError(
                f"points {j + 1} {describe(points[j])} and {i + 1} {describe(overrides)} are the same run ({rid}); "
                f"remove the duplicate"
            )
        seen[rid] = i
        root = roots.get(str(cfg.results_dir))
        if root is None:  # resolved once per results_dir (a sweep has one), not per point
            root = roots[str(cfg.results_dir)] = runs_dir(Path(cfg.results_dir).expanduser()).resolve()
        path = root / check_name(rid, "run id")  # a plain folder name: the run folder stays inside runs/
        try:
            RunRecord(path).check_model_build(model_build(cfg))
        except UserError as err:
            raise UserError(f"point {i + 1} {describe(overrides)}: {err}") from None
        planned.append(PlannedRun(index=i, overrides=tuple(overrides), cfg=cfg, run_id=rid, path=path))
    return planned


JobAlive = Callable[[str, dict], "bool | None"]


def classify(run_id: str, status: dict, path: Path, job_alive: JobAlive) -> tuple[str, str]:
    """(plan state, note) from a run's status.json and whether its job lives.

    job_alive(run_id, status) -> True/False, or None when the backend cannot tell."""
    state = status.get("state") or State.PENDING
    if state == State.PENDING:
        return (State.QUEUED.value, "") if job_alive(run_id, status) else (State.NEW.value, "")
    if state == State.RUNNING:
        if RunRecord(path).lock_held() or job_alive(run_id, status):
            return State.RUNNING.value, ""
        return State.FAILED.value, "job gone while running"
    return str(state), ""


def refresh(planned: list[PlannedRun], job_alive: JobAlive = lambda _run_id, _status: None) -> None:
    for run in planned:
        run.status = RunRecord(run.path).status()
        run.state, run.note = classify(run.run_id, run.status, run.path, job_alive)


def table(planned: list[PlannedRun], width: int | None = None) -> str:
    """A plain-text plan table (no terminal needed): #, run id, state, point overrides."""
    if width is None:  # cut long lines only on a terminal; files and pipes get everything
        import shutil
        import sys

        width = shutil.get_terminal_size((10**6, 24)).columns if sys.stdout.isatty() else 10**6
    rows = [("#", "run id", "state", "point")]
    rows += [(str(r.index + 1), r.run_id, r.state + (f" ({r.note})" if r.note else ""), r.label) for r in planned]
    w = [max(len(row[k]) for row in rows) for k in range(3)]
    lines = []
    for row in rows:
        line = f"{row[0]:>{w[0]}}  {row[1]:<{w[1]}}  {row[2]:<{w[2]}}  {row[3]}"
        lines.append(line if len(line) <= width else line[: width - 3] + "...")
    return "\n".join(lines)


def counts(planned: list[PlannedRun]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in planned:
        out[r.state] = out.get(r.state, 0) + 1
    return out


RESUBMIT = tuple(s.value for s in RESUMABLE)  # failed/cancelled runs resume from their newest checkpoint
LIVE = tuple(s.value for s in _LIVE)


def to_submit(planned: list[PlannedRun]) -> list[PlannedRun]:
    """The runs a submission sends: not finished, not held by a live job, and not stopped by their
    strategy (a run stopped by `abcx sweep stop` is sent again and resumes from its checkpoint)."""
    return [r for r in planned if r.state in RESUBMIT or user_stopped(r.state, r.status)]


def user_stopped(state: str, status: dict) -> bool:
    """Stopped by `abcx sweep stop` (not judged by a strategy): the next submission resumes it."""
    return state == State.STOPPED and (status.get("stop") or {}).get("kind") == StopKind.USER
