"""Errors that suggest (issue 29, section 4): a mistyped name gets the closest valid one (difflib), for
the keys of every config group, a method's parameters, a group's choices, a task's options, benchmark
names and sweep names, still in one line; a name near nothing gets no guess. And `abcx sweep stop` on
a sweep with nothing running says so instead of reporting a stop that did not happen."""
from __future__ import annotations

import pytest

from abcx.config.compose import compose
from abcx.errors import UserError, closest, did_you_mean
from abcx.record import RunRecord
from abcx.record.states import State
from abcx.sweep import command, manifest
from tests.helpers import abcx, call, one_error_line


def refused(*overrides: str) -> str:
    with pytest.raises(UserError) as err:
        compose(list(overrides))
    return str(err.value)


@pytest.mark.parametrize("override, suggestion", [
    ("train.max_step=8", "did you mean train.max_steps?"),
    ("train.lerning_rate=1e-4", "did you mean train.learning_rate?"),
    ("eval.benchmark=[chain]", "did you mean eval.benchmarks?"),
    ("model.nmae=x", "did you mean model.name?"),
    ("logger.mdoe=online", "did you mean logger.mode?"),
    ("launcher.max_paralel=2", "did you mean launcher.max_parallel?"),
    ("seeed=1", "did you mean seed?"),
    ("max_step=3", "did you mean train.max_steps?"),  # a group's field typed without its group
    ("+train.max_stepz=3", "did you mean train.max_steps?"),
    ("task.options.max_operand=3", "did you mean task.options.max_operands?"),
    ("method.epsilon3=0.1", "did you mean method.eps3?"),
    ("method=abc_grpp", "did you mean method=abc_grpo?"),
    ("task=chian", "did you mean task=chain?"),
    ("eval.benchmarks=[chian]", "did you mean chain?"),
])
def test_a_mistyped_name_gets_the_closest_valid_one_in_its_one_line(override, suggestion):
    message = refused(override)
    assert suggestion in message and "\n" not in message, message


def test_a_name_near_nothing_gets_no_guess_but_still_says_where_the_valid_ones_are():
    message = refused("train.zzz=1")
    assert "did you mean" not in message and "train.zzz" in message and "abcx config show" in message


def test_the_closest_names_are_the_near_ones_only_a_clear_winner_comes_alone():
    assert closest("max_step", ["save_steps", "max_steps", "logging_steps"]) == ["max_steps"]
    assert closest("eps5", ["eps1", "eps2", "eps3", "eps4", "schedule"]) == ["eps1", "eps2", "eps3"]  # all as near
    assert closest("Demo", ["smoke", "demo"]) == ["demo"]  # a case slip beats any spelling slip
    assert did_you_mean("xyz", ["method", "model"]) == ""


def test_a_mistyped_sweep_name_on_the_command_line_gets_the_closest_sweep(tmp_path):
    line = one_error_line(abcx("sweep", "run", "demoo", "--dry-run", cwd=tmp_path))
    assert "did you mean demo?" in line


def test_stopping_a_sweep_with_nothing_running_says_nothing_was_stopped(tmp_path):
    results = tmp_path / "results"
    spec, planned = command.plan_sweep("demo", [f"results_dir={results}"])
    for run in planned:  # every run of the sweep finished
        record = RunRecord(run.path)
        record.mark_submitted(sweep="demo", point=list(run.overrides), index=run.index, backend="local",
                              submitted="2026-12-01T00:00:00+00:00")
        record.set_status(State.FINISHED, step=100, max_steps=100)
    manifest.update(results, "demo", lambda m: [manifest.upsert_run(m, r.run_id, overrides=list(r.overrides),
                                                                    index=r.index) for r in planned])
    code, out = call(command.sweep_stop, "demo", results_dir=str(results))
    assert code == 0 and out == "sweep demo: nothing running, nothing stopped (2 finished)", out
    assert "stop" not in manifest.load(results, "demo")  # nothing for the next `sweep run` to clear
