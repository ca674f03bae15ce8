"""`optuna`: a search by any optuna sampler over declared ranges, resumable, optionally pruned at rungs.

    strategy: {name: optuna, sampler: TPESampler, trials: 20, metric: ..., mode: max,
               space: {method.eps3: {low: 0.1, high: 2.0, log: true}, method.eps4: {choices: [0.1, 0.2]}},
               rungs: [50, 100], pruner: MedianPruner}
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

from abcx.errors import UserError
from abcx.record import RunRecord
from abcx.record.states import State
from abcx.record.states import StopKind
from abcx.sweep.strategies.base import Decisions, Start, StrategySpec, metric_at, number, parse_metric, require_metric, \
    whole

OPTUNA_DB = "optuna.db"
TOLD = ("trial_complete", "trial_failed", "pruned")  # the decisions that end a trial


def parse_optuna(raw: dict, spec: StrategySpec, where: str) -> StrategySpec:
    space = _parse_space(raw.get("space"), where)
    trials = raw.get("trials")
    if not whole(trials, 1):
        raise UserError(f"{where}.trials={trials!r} must be a whole number >= 1")
    sampler, pruner = _named("sampler", raw.get("sampler", "TPESampler"), where), \
        _named("pruner", raw.get("pruner", "MedianPruner"), where)
    seed = raw.get("sampler_seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise UserError(f"{where}.sampler_seed={seed!r} must be a whole number")
    rungs = raw.get("rungs")
    if rungs is not None:  # the same rule as halving's rungs
        from abcx.sweep.strategies.halving import parse_halving

        parse_halving({"rungs": rungs, "metric": "x"}, spec, where)
    metric, mode, window = parse_metric(raw, where)
    return replace(spec, name="optuna", rungs=tuple(rungs or ()), metric=metric, mode=mode, window=window,
                   space=space, trials=trials, sampler=sampler, sampler_seed=seed, pruner=pruner)


def _parse_space(space: Any, where: str) -> dict:
    if not isinstance(space, dict) or not space:
        raise UserError(f"{where}.space must map override keys to ranges, e.g. {{method.eps3: {{low: 0.1, high: 2.0, log: true}}}}")
    clean = {}
    for key, dom in space.items():
        if isinstance(dom, dict) and "choices" in dom and set(dom) == {"choices"} and isinstance(dom["choices"], list) \
                and dom["choices"]:
            clean[str(key)] = {"choices": list(dom["choices"])}
        elif isinstance(dom, dict) and {"low", "high"} <= set(dom) <= {"low", "high", "log"} and number(dom["low"]) \
                and number(dom["high"]) and dom["low"] < dom["high"] and isinstance(dom.get("log", False), bool) \
                and not (dom.get("log") and dom["low"] <= 0):
            clean[str(key)] = {"low": dom["low"], "high": dom["high"], "log": dom.get("log", False)}
        else:
            raise UserError(f"{where}.space.{key}={dom!r}: give {{low: L, high: H[, log: true]}} (L < H, L > 0 "
                            f"with log) or {{choices: [a, b, ...]}}")
    return clean


def _named(kind: str, name: Any, where: str) -> str:
    """An optuna sampler or pruner class name (every one optuna ships is valid)."""
    import optuna

    module = optuna.samplers if kind == "sampler" else optuna.pruners
    suffix = "Sampler" if kind == "sampler" else "Pruner"
    valid = sorted(n for n in dir(module) if n.endswith(suffix) and not n.startswith("Base"))
    if name not in valid:
        raise UserError(f"{where}.{kind}={name!r}; valid: {', '.join(valid)}")
    return name


def check_space(spec: StrategySpec, planned: list, where: str) -> None:
    """Every end of every range (every choice) composes and validates on every base point."""
    from abcx.sweep import plan as P
    from abcx.sweep.overrides import value_text

    if spec.metric.startswith("eval/") and not all(r.cfg.eval.at_end for r in planned):
        raise UserError(f"{where}.metric={spec.metric} is read at the end of each trial: set eval.at_end=true")
    for key, dom in spec.space.items():
        values = dom["choices"] if "choices" in dom else [dom["low"], dom["high"]]
        for run in planned:
            for value in values:
                try:
                    P.build([(*run.overrides, f"{key}={value_text(value)}")])
                except UserError as err:
                    raise UserError(f"{where}.space.{key}: value {value!r}: {err}") from None


class Optuna:
    """An optuna study (any sampler by name) over `space`, stored in SQLite beside the sweep
    (results/sweeps/<name>/optuna.db, study = the sweep's name), so a supervisor killed at any point
    resumes it: trials left RUNNING are the runs it had started (their params give the same run id)
    and are resumed from their checkpoints, never asked again; new trials are asked only while fewer
    than `trials` exist. Each trial is an ordinary run with its own record. With `rungs`, a trial
    pauses at each, reports the metric there and is pruned (state `stopped`) where the pruner says.
    A trial's end is written to decisions.jsonl before the study is told it, so it is told once; a
    pause a killed supervisor had not reported is reported when the next one resumes the trial."""

    def __init__(self, spec: StrategySpec, planned: list, decisions: Decisions, todo: list | None = None,
                 plan=None) -> None:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.spec, self.decisions, self.plan, self.base = spec, decisions, plan, planned[0]
        self.optuna = optuna
        storage = f"sqlite:///{decisions.path.parent / OPTUNA_DB}"
        self.study = optuna.create_study(storage=storage, study_name=decisions.path.parent.name, load_if_exists=True,
                                         direction="maximize" if spec.mode == "max" else "minimize",
                                         pruner=getattr(optuna.pruners, spec.pruner)())
        # A seeded sampler restarted with its seed would repeat the draws of the first trials: a
        # resumed study seeds it with the seed plus the trials it holds (still reproducible).
        sampler_cls = getattr(optuna.samplers, spec.sampler)
        held = len(self.study.get_trials(deepcopy=False))
        self.study.sampler = sampler_cls() if spec.sampler_seed is None else sampler_cls(seed=spec.sampler_seed + held)
        self.number: dict[str, int] = {}  # run id -> trial number
        self.queue: list[Start] = []
        for trial in self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            self._resume(trial)

    def _resume(self, trial) -> None:
        """A trial a killed supervisor left RUNNING: resumed (or watched again, if its job lives on);
        one whose run finished meanwhile (a SLURM job outlives its supervisor) is told its value; one
        paused at a rung that was not reported is reported (and pruned or not) now; one whose value
        decisions.jsonl holds already is told the study that value, without a second decision."""
        run = self._run_for(trial.params)
        number = trial.number
        self.number[run.run_id] = number
        told = next((r for r in reversed(self.decisions.rows(*TOLD)) if r.get("trial") == number), None)
        record = RunRecord(run.path)
        if told is not None:
            return self._act(number, record, told)
        if self.decisions.said("trial", trial=number) is None:  # asked, killed before it was written
            self.decisions.add("trial", trial=number, run_id=run.run_id, params=trial.params)
        self.decisions.add("trial_resumed", trial=number, run_id=run.run_id, params=trial.params)
        stop = record.status().get("stop") or {}
        if record.state() == State.FINISHED:
            return self._tell(number, run, self._value(run, record), "finished while no supervisor watched it")
        unreported = self.decisions.said("rung", trial=number, step=stop.get("step")) is None
        if record.stop_kind() == StopKind.RUNG and unreported:  # paused, not reported before the kill
            return self._at_rung(number, run, record, int(stop["step"]))
        self.queue.append(Start(run, self._target(record), {"trial": number}))

    def _run_for(self, params: dict):
        from abcx.sweep.overrides import value_text

        (run,) = self.plan([(*self.base.overrides, *(f"{k}={value_text(v)}" for k, v in params.items()))],
                           start_index=None)
        return run

    def _target(self, record: RunRecord) -> int | None:
        step = int(record.status().get("step") or 0)
        return next((r for r in self.spec.rungs if r > step and r < self.base.cfg.train.max_steps), None)

    def _suggest(self, trial) -> dict:
        for key, dom in self.spec.space.items():
            if "choices" in dom:
                trial.suggest_categorical(key, dom["choices"])
            else:
                trial.suggest_float(key, dom["low"], dom["high"], log=dom["log"])
        return trial.params

    def next(self, active: set[str]) -> Start | None:
        if self.queue:
            return self.queue.pop(0)
        while len(self.study.get_trials(deepcopy=False)) < self.spec.trials:
            trial = self.study.ask()
            params = self._suggest(trial)
            run = self._run_for(params)
            self.decisions.add("trial", trial=trial.number, run_id=run.run_id, params=params)
            record = RunRecord(run.path)
            if run.run_id in self.number or record.state() == State.FINISHED:  # params an earlier trial had
                value = self._value(run, record) if record.state() == State.FINISHED else None
                self._tell(trial.number, run, value, "same run as an earlier trial")
                continue
            self.number[run.run_id] = trial.number
            return Start(run, self._target(record), {"trial": trial.number})
        return None

    def _value(self, run, record: RunRecord) -> float | None:
        require_metric(record, self.spec.metric, int(run.cfg.train.max_steps))
        return metric_at(record, self.spec.metric, int(run.cfg.train.max_steps), self.spec.window)

    def _tell(self, number: int, run, value: float | None, why: str = "", pruned: bool = False, **more) -> None:
        """Decide the trial's end: the decision first, then the study (and a pruned run's record) follow."""
        event = "pruned" if pruned else "trial_failed" if value is None else "trial_complete"
        row = self.decisions.add(event, trial=number, run_id=run.run_id, value=value, **({"why": why} if why else {}),
                                 **more)
        self._act(number, RunRecord(run.path), row)

    def _act(self, number: int, record: RunRecord, row: dict) -> None:
        """Carry out a trial's told end (decisions.jsonl `row`) in the study and the run's record."""
        TrialState = self.optuna.trial.TrialState
        if row["event"] == "pruned":
            if record.stop_kind() != StopKind.PRUNED:
                record.stop(row.get("why", "pruned"), kind=StopKind.PRUNED.value, step=row.get("step"),
                            value=row.get("value"), trial=number)
            self.study.tell(number, state=TrialState.PRUNED)
        elif row["event"] == "trial_failed":
            self.study.tell(number, state=TrialState.FAIL)
        else:
            self.study.tell(number, row["value"])

    def ended(self, run, record: RunRecord) -> None:
        number = self.number.get(run.run_id)
        if number is None:
            return
        # A resumed trial whose job outlived the last supervisor was watched, not started: its queued start goes.
        self.queue = [go for go in self.queue if go.run.run_id != run.run_id]
        state, stop = record.state(), record.status().get("stop") or {}
        if state == State.FINISHED:
            return self._tell(number, run, self._value(run, record))
        if state == State.STOPPED and stop.get("kind") == StopKind.RUNG:
            return self._at_rung(number, run, record, int(stop["step"]))
        if state == State.CANCELLED or stop.get("kind") == StopKind.USER:
            return None  # cancelled or `abcx sweep stop`: the trial stays RUNNING and resumes next time
        self._tell(number, run, None, str(stop.get("reason") or record.status().get("error") or state))

    def _at_rung(self, number: int, run, record: RunRecord, step: int) -> None:
        """A trial paused at a rung: report its value there, then prune it or let it go on."""
        require_metric(record, self.spec.metric, step)
        value = metric_at(record, self.spec.metric, step, self.spec.window)
        trial = self.optuna.trial.Trial(self.study, self.study.get_trials(deepcopy=False)[number]._trial_id)
        if value is not None:
            trial.report(value, step)
        if value is None or trial.should_prune():
            reason = f"pruned at step {step} by {self.spec.pruner}: {self.spec.metric} {value}"
            return self._tell(number, run, value, reason, pruned=True, step=step)
        self.decisions.add("rung", trial=number, run_id=run.run_id, step=step, value=value)
        self.queue.append(Start(run, self._target(record), {"trial": number}))
        return None

    def waiting(self) -> list[str]:
        return [go.run.run_id for go in self.queue]

    def finish(self) -> None:
        done = [t for t in self.study.get_trials(deepcopy=False) if t.value is not None]
        if done:
            best = self.study.best_trial
            said = self.decisions.said("best")
            if said is None or (said.get("trial"), said.get("value"), said.get("metric")) != \
                    (best.number, best.value, self.spec.metric):  # once per outcome: a rerun adds none
                self.decisions.add("best", trial=best.number, value=best.value, params=best.params,
                                   metric=self.spec.metric, mode=self.spec.mode)
