"""`halving`: asynchronous successive halving (ASHA, Li et al. 2018) over the sweep's points.

    strategy: {name: halving, rungs: [50, 100, 200], eta: 3, metric: eval/chain/avg@16, mode: max, window: 5}
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from abcx.errors import UserError
from abcx.record import RunRecord
from abcx.record.states import State, StopKind, stop_kind
from abcx.sweep.strategies.base import Decisions, Start, StrategySpec, metric_at, parse_metric, require_metric, whole


def parse_halving(raw: dict, spec: StrategySpec, where: str) -> StrategySpec:
    rungs = raw.get("rungs")
    if not isinstance(rungs, list) or not rungs or not all(whole(r, 1) for r in rungs) or rungs != sorted(set(rungs)):
        raise UserError(f"{where}.rungs={rungs!r} must be increasing training steps, e.g. [50, 100, 200]")
    eta = raw.get("eta", 3)
    if not whole(eta, 2):
        raise UserError(f"{where}.eta={eta!r} must be a whole number >= 2 (the top 1/eta go on)")
    metric, mode, window = parse_metric(raw, where)
    return replace(spec, name="halving", rungs=tuple(rungs), eta=eta, metric=metric, mode=mode, window=window)


def check_rungs(spec: StrategySpec, planned: list, where: str) -> None:
    """Each rung within max_steps and at a generation boundary; for an eval metric, an evaluation at
    every rung and at the end."""
    from abcx.config.rollout import generation_cycle

    for run in planned:
        train, ev = run.cfg.train, run.cfg.eval
        point = f"point {run.index + 1} [{' '.join(run.overrides)}]"
        if spec.rungs[-1] > train.max_steps:
            raise UserError(f"{where}.rungs: rung {spec.rungs[-1]} is beyond train.max_steps={train.max_steps} of {point}")
        # TRL keeps a rollout only in memory: a run paused inside one regenerates it when it resumes,
        # and from there trains on other samples than the uninterrupted run would (measured: notes #16).
        cycle = generation_cycle(train)
        off = [r for r in spec.rungs if r % cycle]
        if off:
            raise UserError(f"{where}.rungs: rung {off[0]} is inside a rollout of {point}: it generates once per "
                            f"{cycle} optimizer steps (train.steps_per_generation={train.steps_per_generation} x "
                            f"num_iterations={train.num_iterations} / gradient_accumulation_steps="
                            f"{train.gradient_accumulation_steps}); use rungs that are multiples of {cycle}")
        if not spec.metric.startswith("eval/"):  # its name is checked for every strategy (base.check_metric)
            continue
        for rung in (*spec.rungs, train.max_steps):
            at_end = rung == train.max_steps and ev.at_end
            if not at_end and not (ev.every_steps and rung % ev.every_steps == 0):
                raise UserError(f"{where}.metric={spec.metric} needs an evaluation at rung {rung}: eval.every_steps="
                                f"{ev.every_steps} of {point} must divide every rung (e.g. eval.every_steps={spec.rungs[0]})")


@dataclass
class _Said:
    """What decisions.jsonl says of a halving sweep: (run, rung index) pairs ranked and promoted from,
    the cut runs (their `stopped` row) and the latest `best`."""
    ranked: set = field(default_factory=set)
    promoted: set = field(default_factory=set)
    cut: dict = field(default_factory=dict)
    best: dict | None = None

    @classmethod
    def of(cls, decisions: Decisions) -> "_Said":
        rows: dict[str, list[dict]] = {"rung": [], "promoted": [], "stopped": [], "best": []}
        for row in decisions.rows(*rows):
            rows[row["event"]].append(row)

        def key(row: dict) -> tuple:
            return row.get("run_id"), row.get("rung")

        return cls({key(r) for r in rows["rung"]}, {key(r) for r in rows["promoted"]},
                   {r.get("run_id"): r for r in rows["stopped"]}, rows["best"][-1] if rows["best"] else None)


CUT_DETAIL = ("rung", "step", "value", "rank", "of", "cut", "metric")


class Halving:
    """Asynchronous successive halving: a run trains to the next rung and pauses there (state
    `stopped`, at a checkpoint). Whenever a worker is free, the run ranked highest at the highest
    rung that is in the top floor(n/eta) of the n runs that reached that rung and has not gone on
    yet is promoted (resumes from its checkpoint to the next rung); if none is, a new point starts.
    No worker waits for a rung to fill. When nothing is left, the paused runs stay `stopped` with
    the rung, their value, rank and the cut in their record and in decisions.jsonl.

    Its state is read, at every decision, from decisions.jsonl and the run records, so a supervisor
    killed anywhere and started again (or a rerun of the sweep) goes on exactly where it was: a run
    may train to the rung after the highest one it was promoted from (the first rung if none) and
    never again once cut; a run whose job ended at that rung waits there, is ranked once (`rung`),
    then promoted or cut once; a promotion or cut decided but not yet acted on is acted on, not
    decided again; `best` is written once per outcome."""

    def __init__(self, spec: StrategySpec, planned: list, decisions: Decisions, todo: list | None = None,
                 plan=None) -> None:
        self.spec, self.planned, self.decisions = spec, list(planned), decisions
        max_steps = max(r.cfg.train.max_steps for r in planned)
        self.rungs = rungs_to(spec, max_steps)
        self.tried: set[tuple[str, int | None]] = set()  # (run, target) this supervisor started: once each
        self.values: dict[tuple[str, int], float | None] = {}

    @classmethod
    def reader(cls, spec: StrategySpec, runs: list, max_steps: int) -> "Halving":
        """Only its readers (value, ranking): no planning, no decisions (`abcx sweep status`, the report)."""
        halving = cls.__new__(cls)
        halving.spec, halving.planned, halving.values = spec, list(runs), {}
        halving.rungs = rungs_to(spec, max_steps)
        return halving

    def _record(self, run) -> RunRecord:
        return RunRecord(run.path)

    def value(self, run, k: int) -> float | None:
        """The run's metric at rung k (None: not reached or not readable); cached once known."""
        key = (run.run_id, k)
        if self.values.get(key) is None:
            status = self._record(run).status()
            if int(status.get("step") or 0) < self.rungs[k]:
                return None
            self.values[key] = metric_at(self._record(run), self.spec.metric, self.rungs[k], self.spec.window)
        return self.values[key]

    def ranking(self, k: int) -> list[tuple[float, Any]]:
        """(value, run) of every run that reached rung k, best first."""
        reached = [(v, r) for r in self.planned if (v := self.value(r, k)) is not None]
        return sorted(reached, key=lambda vr: vr[0], reverse=self.spec.mode == "max")

    # --- the state, from decisions.jsonl and the records ----------------------------------------
    def _limit(self, run, said: _Said) -> int | None:
        """The step the run may train to: the rung after the highest it was promoted from (None: cut)."""
        if run.run_id in said.cut or self._record(run).stop_kind() == StopKind.CUT:
            return None
        above = max((k for rid, k in said.promoted if rid == run.run_id and isinstance(k, int)), default=-1)
        return self.rungs[min(above + 1, len(self.rungs) - 1)]

    def _waiting_at(self, run, said: _Said) -> int | None:
        """The rung index where the run waits for its ranking, promotion or cut: its job ended at the
        step it may train to, a rung before the last."""
        status = self._record(run).status()
        step = int(status.get("step") or 0)
        if status.get("state") in (State.RUNNING, State.FINISHED) or stop_kind(status) in FINAL_STOPS \
                or step not in self.rungs[:-1] or self._limit(run, said) != step:
            return None
        return self.rungs.index(step)

    def _due(self, run, said: _Said) -> Start | None:
        """A Start for a run short of the step it may train to whose job has ended (or never started):
        a new point, a promotion decided but not started, a run whose job failed or was cancelled."""
        record = self._record(run)
        status, limit = record.status(), self._limit(run, said)
        if limit is None or status.get("state") in (State.RUNNING, State.FINISHED) or record.stop_kind() in FINAL_STOPS \
                or int(status.get("step") or 0) >= limit:
            return None
        return Start(run, None if limit == self.rungs[-1] else limit)

    def _promoted(self, run, said: _Said) -> bool:
        return any(rid == run.run_id for rid, _k in said.promoted)

    # --- the decisions ------------------------------------------------------------------------
    def next(self, active: set[str]) -> Start | None:
        said = self._said_after_ranking(active)
        return self._start_due(active, said, promoted=True) or self._promotion(active, said) or \
            self._start_due(active, said, promoted=False)

    def _said_after_ranking(self, active: set[str], only: list | None = None) -> _Said:
        """Rank every run waiting at a rung that has not been ranked there (once each), then the state."""
        said = _Said.of(self.decisions)
        ranked = False
        for run in only or self.planned:
            k = self._waiting_at(run, said)
            if run.run_id in active or k is None or (run.run_id, k) in said.ranked:
                continue
            require_metric(self._record(run), self.spec.metric, self.rungs[k])
            ranking = self.ranking(k)
            rank = next((i for i, (_v, r) in enumerate(ranking, start=1) if r.run_id == run.run_id), None)
            self.decisions.add("rung", run_id=run.run_id, rung=k, step=self.rungs[k], value=self.value(run, k),
                               rank=rank, of=len(ranking), cut=len(ranking) // self.spec.eta)
            ranked = True
        return _Said.of(self.decisions) if ranked else said

    def _start_due(self, active: set[str], said: _Said, *, promoted: bool) -> Start | None:
        """The first due run (promoted ones first: a promotion decided before a restart goes first)."""
        for run in self.planned:
            go = None if run.run_id in active or self._promoted(run, said) != promoted else self._due(run, said)
            if go is not None and (run.run_id, go.stop_at) not in self.tried:
                self.tried.add((run.run_id, go.stop_at))
                return go
        return None

    def _promotion(self, active: set[str], said: _Said) -> Start | None:
        """The best run waiting within the cut of the highest rung that has one."""
        for k in reversed(range(len(self.rungs) - 1)):
            ranking = self.ranking(k)
            cut = len(ranking) // self.spec.eta
            for rank, (value, run) in enumerate(ranking[:cut], start=1):
                if run.run_id in active or self._waiting_at(run, said) != k or (run.run_id, k) not in said.ranked:
                    continue
                target = self._target(k + 1)
                why = {"rung": k, "step": self.rungs[k], "value": value, "rank": rank, "of": len(ranking), "cut": cut}
                self.decisions.add("promoted", run_id=run.run_id, to_step=self.rungs[k + 1], **why)
                self.tried.add((run.run_id, target))
                return Start(run, target, why)
        return None

    def _target(self, k: int) -> int | None:
        return None if k >= len(self.rungs) - 1 else self.rungs[k]

    def waiting(self) -> list[str]:
        said = _Said.of(self.decisions)
        return [r.run_id for r in self.planned if (go := self._due(r, said)) is not None
                and (r.run_id, go.stop_at) not in self.tried]

    def ended(self, run, record: RunRecord) -> None:
        if record.state() == State.FINISHED:  # the end is its last rung: the metric must be there too
            require_metric(record, self.spec.metric, int(record.status().get("step") or 0))
        self._said_after_ranking(set(), only=[run])

    def finish(self) -> None:
        """Nothing more will be promoted: each waiting run is stopped below the cut of its rung."""
        said = self._said_after_ranking(set())
        best = self._best()
        for k in reversed(range(len(self.rungs) - 1)):
            self._cut(k, self.ranking(k), said)
        if best is not None and not _same_best(best, said.best, self.spec):
            self.decisions.add("best", metric=self.spec.metric, mode=self.spec.mode, **best)

    def _best(self) -> dict | None:
        for k in reversed(range(len(self.rungs))):
            ranking = self.ranking(k)
            if ranking:
                return {"run_id": ranking[0][1].run_id, "rung": k, "step": self.rungs[k], "value": ranking[0][0],
                        "of": len(ranking)}
        return None

    def _cut(self, k: int, ranking: list[tuple[float, Any]], said: _Said) -> None:
        """Stop the runs waiting at rung k below its cut: the decision first, then the record (a cut
        decided before a restart reaches the record now, without a second decision)."""
        ranks = {run.run_id: (rank, value) for rank, (value, run) in enumerate(ranking, start=1)}
        for run in self.planned:
            record, row = self._record(run), said.cut.get(run.run_id)
            if row is not None:
                if row.get("rung") == k and record.stop_kind() != StopKind.CUT:
                    record.stop(row.get("reason", ""), kind=StopKind.CUT.value, **{f: row.get(f) for f in CUT_DETAIL})
                continue
            if self._waiting_at(run, said) != k:
                continue
            rank, value = ranks.get(run.run_id, (None, None))
            detail = {"rung": k, "step": self.rungs[k], "value": value, "rank": rank, "of": len(ranking),
                      "cut": len(ranking) // self.spec.eta, "metric": self.spec.metric}
            reason = (f"below the cut at rung {k + 1} (step {self.rungs[k]}): {self.spec.metric} {value:.4g}, "
                      f"rank {rank} of {len(ranking)}; the cut is the top {detail['cut']} (ASHA may have promoted "
                      f"more earlier)") if value is not None else \
                f"stopped at rung {k + 1} (step {self.rungs[k]}): no finite {self.spec.metric} there"
            self.decisions.add("stopped", run_id=run.run_id, reason=reason, **detail)
            record.stop(reason, kind=StopKind.CUT.value, **detail)

    def undecided(self) -> bool:
        """Whether a supervisor has work here although no run needs submitting: a run waiting at a
        rung or due to start, a cut not yet in its record, or a best not yet said."""
        said = _Said.of(self.decisions)
        for run in self.planned:
            row = said.cut.get(run.run_id)
            if self._waiting_at(run, said) is not None or self._due(run, said) is not None or \
                    (row is not None and self._record(run).stop_kind() != StopKind.CUT):
                return True
        best = self._best()
        return best is not None and not _same_best(best, said.best, self.spec)


FINAL_STOPS = (StopKind.HEALTH, StopKind.PRUNED)  # stops no halving decision undoes


def _same_best(best: dict, said: dict | None, spec: StrategySpec) -> bool:
    """Whether the latest `best` row already says this (a rerun that changed nothing adds none)."""
    return said is not None and all(said.get(k) == best[k] for k in ("run_id", "step", "value")) \
        and said.get("metric") == spec.metric and said.get("mode") == spec.mode


def undecided(spec: StrategySpec, decisions: Decisions, planned: list) -> bool:
    """The registry's question for a rerun with nothing to submit (Halving.undecided)."""
    return Halving(spec, planned, decisions).undecided()


def rungs_to(spec: StrategySpec, max_steps: int) -> list[int]:
    """The rung steps, with max_steps as the last one."""
    return list(spec.rungs) + ([max_steps] if spec.rungs[-1] < max_steps else [])


def reader_for(spec: StrategySpec, runs: list) -> Halving:
    """A read-only Halving over runs of a finished or running sweep (its rungs up to the runs' max_steps)."""
    max_steps = max((int(RunRecord(r.path).status().get("max_steps") or 0) for r in runs), default=0)
    return Halving.reader(spec, runs, max(max_steps, spec.rungs[-1] if spec.rungs else 0))


def _ranks(halving: Halving) -> dict[int, dict[str, int]]:
    return {k: {r.run_id: i for i, (_v, r) in enumerate(halving.ranking(k), start=1)} for k in range(len(halving.rungs))}


def rung_table(spec: StrategySpec, sweep_dir: Path, runs: list, fmt) -> tuple:
    """Each run's metric at each rung it reached (its rank there), its state and why it stopped:
    (name, title, rows, shown, notes) for the report."""
    halving = reader_for(spec, runs)
    ranks = _ranks(halving)
    rows, shown = [], []
    for run in runs:
        status = RunRecord(run.path).status()
        values = {f"step {s}": halving.value(run, k) for k, s in enumerate(halving.rungs)}
        cells = {f"step {s}": "–" if values[f"step {s}"] is None else
                 f"{fmt(values[f'step {s}'], 4)} (#{ranks[k][run.run_id]}/{len(ranks[k])})"
                 for k, s in enumerate(halving.rungs)}
        why = (status.get("stop") or {}).get("reason", "") if status.get("state") == State.STOPPED else ""
        rows.append({"run_id": run.run_id, **values, "state": status.get("state"), "stop": why})
        shown.append({"run": run.run_id, **cells, "state": status.get("state") or State.NEW.value, "why it stopped": why})
    notes = [f"{spec.metric} at each rung ({spec.mode}, eta {spec.eta}): value (#rank/of the runs that reached it)"]
    return "rungs", f"Halving: {spec.metric} at the rungs", rows, shown, notes


def rung_status(spec: StrategySpec, sweep_dir: Path, runs: list) -> list[str]:
    """Per run, its metric at each rung it reached (rank there in brackets): what halving decided on."""
    halving = reader_for(spec, runs)
    ranks = _ranks(halving)
    table = [("rungs: " + spec.metric + f" ({spec.mode}, eta {spec.eta})", *[f"step {s}" for s in halving.rungs])]
    for r in runs:
        cells = []
        for k in range(len(halving.rungs)):
            v = halving.value(r, k)
            cells.append("-" if v is None else f"{v:.4g} (#{ranks[k][r.run_id]}/{len(ranks[k])})")
        table.append((r.run_id, *cells))
    widths = [max(len(row[k]) for row in table) for k in range(len(table[0]))]
    return ["  ".join(f"{c:<{w}}" for c, w in zip(row, widths)).rstrip() for row in table]
