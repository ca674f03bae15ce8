"""What `abcx sweep run --wait` shows while its runs train: one live row per run whose job is starting
or running (state, step/max, s/step, ETA, the latest value of the strategy's metric, or the reward for
a plain grid), and one row for the runs still waiting for a slot, read once a second from the run
records, on a terminal; in a pipe or a CI log one plain line per row every few seconds (abcx.progress). The jobs' own output goes to their job logs, so
without this the submitter's terminal would say nothing between `started` and `ended`."""
from __future__ import annotations

import threading
from pathlib import Path

from abcx.record import RunRecord
from abcx.record.states import State

POLL_S = 1.0
LIVE = (State.PENDING, State.RUNNING)
MAX_ROWS = 8  # a sweep of 100 parallel jobs gets 8 rows and "92 more running", not 100 lines every 3 s
QUEUE = "\0queue"  # the summary row's key (never a run id)


def latest(record: RunRecord, metric: str) -> float | None:
    """The newest value of a metric in a run's record: its last evaluation for eval/<benchmark>/<name>,
    else the last logged row that has it."""
    if metric.startswith("eval/") and metric.count("/") == 2:
        _, bench, name = metric.split("/")
        rows = [r for r in record.evals() if r.get("benchmark") == bench and name in (r.get("metrics") or {})]
        return float(rows[-1]["metrics"][name]) if rows else None
    for row in reversed(record.metrics()):
        value = row.get(metric)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return None


class Watch:
    """A thread that mirrors the sweep's live runs into progress rows until `stop()`."""

    def __init__(self, name: str, results_dir: str, metric: str = "") -> None:
        self.name, self.results_dir = name, results_dir
        self.metric = metric or "reward"
        self.rows: dict[str, object] = {}
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._loop, name="abcx-sweep-watch", daemon=True)

    def __enter__(self) -> "Watch":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self.stopping.set()
        if self.thread.is_alive():
            self.thread.join(timeout=5)
        for row in self.rows.values():
            row.done()
        self.rows.clear()

    def _loop(self) -> None:
        while not self.stopping.is_set():
            try:
                self.poll()
            except Exception:  # noqa: BLE001 - a record half-written this instant: read it next time
                pass
            self.stopping.wait(POLL_S)

    def _entries(self) -> list[tuple[str, dict]]:
        """(run id, its manifest entry) for each run of the sweep (a strategy may add runs as it goes)."""
        from abcx.sweep import manifest as M

        data = M.load(self.results_dir, self.name) or {}
        return [(e["run_id"], e) for e in data.get("runs") or [] if isinstance(e, dict) and isinstance(e.get("run_id"), str)]

    def poll(self) -> None:
        """One look at the records: a row per run whose job lives (at most MAX_ROWS), one summary row
        for the runs still waiting for a slot and for those beyond MAX_ROWS."""
        root = Path(self.results_dir) / "runs"
        shown, waiting, more = set(), 0, 0
        for run_id, entry in self._entries():
            record = RunRecord(root / run_id)
            status = record.status()
            state = status.get("state")
            # A run the supervisor started stays shown until it has seen its job end (a finished
            # run's process still closes W&B and exits: seconds in which nothing else is said).
            ending = state not in LIVE and entry.get("started") and not entry.get("ended")
            if state == State.PENDING and not (status.get("job_id") or entry.get("job_id")):
                waiting += 1  # submitted to the supervisor's queue, no job yet
            elif state in LIVE or ending:
                if len(shown) < MAX_ROWS or run_id in self.rows:
                    shown.add(run_id)
                    self._show(run_id, record, status, state)
                else:
                    more += 1
        for run_id in set(self.rows) - shown - {QUEUE}:
            self.rows.pop(run_id).done()
        self._summary(waiting, more)

    def _show(self, run_id: str, record: RunRecord, status: dict, state: str) -> None:
        from abcx import progress

        total = status.get("max_steps")
        row = self.rows.get(run_id)
        if row is None:
            row = self.rows[run_id] = progress.task(run_id, total=total, unit="steps", name=run_id, announce=False,
                                                    done=status.get("step") or 0)
        value = latest(record, self.metric) if state != State.PENDING else None
        shown = f"{self.metric} {value:.3f}" if value is not None else ""
        what = {State.PENDING: "pending: its job starts", State.RUNNING: "running"}.get(state, f"{state}, job ending")
        row.update(status.get("step") or 0, total=total, info="  ".join(x for x in (what, shown) if x))

    def _summary(self, waiting: int, more: int) -> None:
        from abcx import progress

        text = ", ".join(x for x in (f"{more} more starting or running" if more else "",
                                     f"{waiting} run(s) waiting for a free slot" if waiting else "") if x)
        row = self.rows.get(QUEUE)
        if not text:
            if row is not None:
                self.rows.pop(QUEUE).done()
            return
        if row is None:
            row = self.rows[QUEUE] = progress.task(f"sweep {self.name}", name=f"sweep {self.name}", announce=False)
        row.update(info=text)
