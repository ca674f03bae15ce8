"""What an optuna sweep that was killed and resumed must show, on any backend (the local and SLURM tests share it)."""
from __future__ import annotations

from pathlib import Path

import pytest

from abcx.record import read_jsonl


def three_trials_each_asked_once(results: Path) -> tuple[list[dict], dict]:
    """Trials 0-2 complete, each valued at its own sampled learning rate, each asked once (one run each),
    trial 1 resumed once; returns the decisions' `trial` rows and the `trial_resumed` row."""
    import optuna

    sweep = results / "sweeps" / "search"
    study = optuna.load_study(study_name="search", storage=f"sqlite:///{sweep / 'optuna.db'}")
    trials = study.get_trials()
    assert [t.number for t in trials] == [0, 1, 2]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert [t.value for t in trials] == pytest.approx([t.params["train.learning_rate"] for t in trials], rel=1e-9)
    rows = list(read_jsonl(sweep / "decisions.jsonl"))
    asked = [d for d in rows if d["event"] == "trial"]
    assert [d["trial"] for d in asked] == [0, 1, 2] and len({d["run_id"] for d in asked}) == 3  # none asked twice
    (resumed,) = [d for d in rows if d["event"] == "trial_resumed"]
    assert resumed["trial"] == 1
    return asked, resumed
