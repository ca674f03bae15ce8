"""Sweep files and command-line axes -> points -> validated plan with run states (no jobs started)."""
from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from abcx.config.compose import compose
from abcx.config.identity import run_id, to_dict
from abcx.errors import UserError
from abcx.record import RunRecord
from abcx.sweep import command, manifest, plan, spec

REPO = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, text: str, name: str = "t") -> str:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return str(path)


def points_of(path: str, cli=()):
    return spec.expand(spec.with_cli(spec.load_sweep(path), list(cli)))


# --- expansion --------------------------------------------------------------------------------------

def test_grid_axes_are_crossed_and_points_are_crossed_with_the_grid(tmp_path):
    path = write(tmp_path, "name: t\nfixed: [logger=none]\npoints:\n  - [method=grpo]\n  - [method=abc_grpo, method.eps3=0.4]\n"
                           "grid:\n  seed: [0, 1]\n  train.learning_rate: [1.0e-4, .inf]\n")
    pts = points_of(path)
    assert len(pts) == 2 * 2 * 2
    assert ("logger=none", "method=abc_grpo", "method.eps3=0.4", "seed=1", "train.learning_rate=0.0001") in pts
    assert all(any(o == "train.learning_rate=inf" for o in p) for p in pts[1::2])


def test_command_line_sweep_replaces_the_file_axis_of_its_key_and_adds_new_axes(tmp_path):
    path = write(tmp_path, "name: t\ngrid:\n  seed: [0, 1, 2]\n")
    pts = points_of(path, ["seed=range(5,7)", "train.temperature=0.5,1.0", "logger=none"])
    assert {p[0] for p in pts} == {"seed=5", "seed=6"}
    assert len(pts) == 4 and all(p[-1] == "logger=none" for p in pts)


def test_a_single_command_line_value_replaces_an_axis_and_a_plain_override_wins_over_fixed(tmp_path):
    path = write(tmp_path, "name: t\nfixed: [train.max_steps=5]\ngrid:\n  seed: [0, 1, 2]\n")
    assert points_of(path, ["seed=7", "train.max_steps=9"]) == [("seed=7", "train.max_steps=9")]


def test_choice_and_glob_over_config_groups_expand_through_hydra(tmp_path):
    path = write(tmp_path, "name: t\ngrid:\n  seed: [0]\n")
    methods = {p[-1] for p in points_of(path, ["method=glob(*grpo)"])}
    assert methods == {"method=grpo", "method=abc_grpo", "method=up_grpo"}
    assert len(points_of(path, ["train.temperature=choice(0.5,0.7,0.9)"])) == 3
    with pytest.raises(UserError, match="glob.*group"):
        points_of(path, ["seed=glob(*)"])


def test_empty_sweeps_and_unknown_names_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="empty"):
        points_of(write(tmp_path, "name: t\nfixed: [seed=1]\n"))
    with pytest.raises(UserError, match="not found.*available: .*epsilons"):
        spec.load_sweep("no_such_sweep")
    with pytest.raises(UserError, match="unknown key 'grids'"):
        spec.load_sweep(write(tmp_path, "name: t\ngrids: {seed: [1]}\n", "bad"))


def test_shipped_sweeps_plan_the_documented_grids():
    eps = plan.build(points_of("epsilons"))
    assert len(eps) == 2 * 2 * 2
    assert {r.cfg.method.eps3 for r in eps} == {0.2, float("inf")} and {r.cfg.method.eps4 for r in eps} == {0.2, 0.4}
    assert {(r.cfg.method.eps1, r.cfg.method.eps2) for r in eps} == {(0.2, 0.2)}
    study = plan.build(points_of("study"))
    assert sorted({r.cfg.method.name for r in study}) == ["abc_grpo", "dapo", "dual_clip", "grpo", "two_sided"]
    assert len(study) == 15 and {r.cfg.seed for r in study} == {0, 1, 2}
    assert {r.cfg.method.clip_ratio_c for r in study if r.cfg.method.name == "dual_clip"} == {3.0}
    # The grid's default point is the study's abc_grpo run (same config, same run id: trained once).
    assert {r.run_id for r in eps if r.cfg.method.eps3 == r.cfg.method.eps4 == 0.2} == {
        r.run_id for r in study if r.cfg.method.name == "abc_grpo" and r.cfg.seed in (0, 1)}
    regime = plan.build(points_of("regime"))
    assert len(regime) == 5 * 2 * 3 and {r.cfg.method.name for r in regime} == {"grpo", "abc_grpo"}
    default = compose([])
    moved = {r.cfg.train.learning_rate for r in regime} - {default.train.learning_rate}
    # Two learning rates, one on either side of the default (the "two values around the stable one").
    assert len(moved) == 2 and min(moved) < default.train.learning_rate < max(moved)
    # The longest cell (6-8 operands) is planned first, so the two cores do not end on it.
    assert regime[0].cfg.task.options.min_operands == 6 and regime[0].cfg.train.max_completion_length == 96
    validity = plan.build(points_of("validity"))
    assert len(validity) == 6 and all(r.cfg.train.max_steps == compose([]).train.max_steps for r in validity)
    smoke = plan.build(points_of("smoke"))
    assert len(smoke) == 2 and all(r.cfg.train.max_steps <= 6 and r.cfg.logger.name == "none" for r in smoke)


# --- composition and validation --------------------------------------------------------------------

@pytest.mark.parametrize("overrides", [
    ("method=grpo", "method.eps_high=0.28", "seed=3"),
    ("method.eps3=inf", "train.learning_rate=1", "+train.extra.gradient_checkpointing_kwargs={use_reentrant:false}"),
    ("model=qwen3_1.7b_base", "train.max_steps=7", "+task.options.n_eval=3", "logger=none", "method.eps4=0.3"),
    ("experiment=paper_qwen3_4b", "seed=2", "train.per_device_train_batch_size=8"),
])
def test_the_fast_path_composes_exactly_what_compose_does(overrides):
    fast = plan.build([overrides])[0]
    slow = compose(list(overrides))
    assert json.dumps(fast.cfg, sort_keys=True) == json.dumps(to_dict(slow), sort_keys=True)
    assert fast.run_id == run_id(slow)


@pytest.mark.parametrize("bad, field", [
    ("method.eps3=-1", "method.eps3"),
    ("method.eps3=abc", "method.eps3"),
    ("train.max_stepz=3", "train.max_stepz"),
    ("method.delta=2", "method.delta"),  # does not apply to abc_grpo
    ("+train.nope=1", "train.nope"),
])
def test_one_bad_point_is_refused_naming_the_point_and_field_with_composes_message(bad, field):
    points = [("seed=0",), ("seed=1", bad)]
    with pytest.raises(UserError) as caught:
        plan.build(points)
    message = str(caught.value)
    assert message.startswith(f"point 2 [seed=1 {bad}]:") and field in message
    with pytest.raises(UserError) as direct:
        compose(["seed=1", bad])
    assert message.endswith(str(direct.value))


def test_duplicate_points_and_too_many_points_are_refused():
    with pytest.raises(UserError, match="points 1 .* and 2 .* are the same run"):
        plan.build([("seed=1",), ("seed=1", "logger=none")])  # logger is volatile: same run id
    many = [(f"seed={i}",) for i in range(plan.MAX_POINTS + 1)]
    with pytest.raises(UserError, match="--yes"):
        plan.build(many)


def test_a_bad_point_submits_nothing(tmp_path):
    path = write(tmp_path, f"name: bad\nfixed: [results_dir={tmp_path}/results]\ngrid:\n  method.eps4: [0.2, 1.5]\n")
    with pytest.raises(UserError, match=r"point 2 .*method.eps4"):
        command.sweep_run(path, [], out=lambda _l: None)
    assert not (tmp_path / "results").exists()


# --- states, dry run, resubmission -------------------------------------------------------------------

def fake_run(run: plan.PlannedRun, state: str, **status) -> RunRecord:
    record = RunRecord(run.path)
    record.start(to_dict(compose(list(run.overrides))), config_hash="x", max_steps=4, job_id=status.pop("job_id", None))
    if state == "finished":
        record.finish({})
    elif state in ("failed", "cancelled"):
        record.fail("RuntimeError: boom\ntraceback...", state=state)
    record.set_status(record.state(), **status)
    return record


@pytest.fixture
def four(tmp_path):
    path = write(tmp_path, f"name: four\nfixed: [results_dir={tmp_path}/results, logger=none]\ngrid:\n  seed: [0, 1, 2, 3, 4]\n")
    return path, plan.build(points_of(path))


def test_dry_run_prints_each_points_state_from_its_run_record(four, capsys):
    path, runs = four
    fake_run(runs[0], "finished")
    fake_run(runs[1], "failed")
    fake_run(runs[2], "cancelled")
    fake_run(runs[3], "running", job_id="999999999")  # a job that no longer exists
    assert command.sweep_run(path, ["launcher.max_parallel=1"], dry_run=True) == 0
    out = capsys.readouterr().out
    lines = {line.split()[1]: line for line in out.splitlines()[1:-1]}
    assert " finished " in lines[runs[0].run_id] and " failed " in lines[runs[1].run_id]
    assert " cancelled " in lines[runs[2].run_id] and "failed (job gone while running)" in lines[runs[3].run_id]
    assert " new " in lines[runs[4].run_id] and "seed=4" in lines[runs[4].run_id]
    assert "1 new, 1 finished, 2 failed, 1 cancelled" in out and "nothing submitted" in out
    assert not (Path(runs[0].path).parent.parent / "sweeps").exists()


def test_resubmission_skips_finished_and_live_runs_and_resends_failed_cancelled_and_dead_ones(four, tmp_path):
    _path, runs = four
    fake_run(runs[0], "finished")
    fake_run(runs[1], "failed")
    fake_run(runs[2], "cancelled")
    fake_run(runs[3], "running", job_id="999999999")
    # run 4 is being trained right now: its trainer holds the run lock.
    fake_run(runs[4], "running")
    with open(runs[4].path / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        plan.refresh(runs)
        assert [r.state for r in runs] == ["finished", "failed", "cancelled", "failed", "running"]
        assert [r.index for r in plan.to_submit(runs)] == [1, 2, 3]


def test_a_running_record_whose_job_lives_is_left_alone(four):
    _path, runs = four
    fake_run(runs[0], "running", job_id="42")
    plan.refresh(runs, job_alive=lambda run_id, status: status.get("job_id") == "42")
    assert runs[0].state == "running" and runs[0] not in plan.to_submit(runs)


def test_a_lost_manifest_is_rebuilt_from_the_run_records(four, capsys):
    _path, runs = four
    results = runs[0].path.parent.parent
    for run in runs[:3]:
        command._mark_submitted(run, "four", "local", "2026-01-01T00:00:00+00:00")
    fake_run(runs[0], "finished")
    fake_run(runs[1], "failed", job_id="12345")
    assert manifest.load(results, "four") is None
    command.sweep_status("four", results_dir=str(results))
    out = capsys.readouterr().out
    rebuilt = manifest.load(results, "four")
    assert [r["run_id"] for r in rebuilt["runs"]] == [r.run_id for r in runs[:3]]
    assert rebuilt["runs"][1]["job_id"] == "12345" and rebuilt["runs"][0]["overrides"] == list(runs[0].overrides)
    assert "1 new, 1 finished, 1 failed" in out and "RuntimeError: boom" in out and "traceback" not in out
    with pytest.raises(UserError, match="no sweep named 'other'"):
        command.sweep_status("other", results_dir=str(results))


def test_a_dry_run_on_slurm_checks_the_cluster_profile_before_anything(four, tmp_path):
    path, _runs = four
    with pytest.raises(UserError, match=r"launcher.profile=nosuch: no file .*nosuch.yaml; available: .*local"):
        command.sweep_run(path, ["launcher=slurm", "launcher.profile=nosuch"], dry_run=True)
    assert not (tmp_path / "results").exists()


def test_status_without_a_name_lists_every_sweep_with_its_state_counts(four, capsys):
    _path, runs = four
    results = runs[0].path.parent.parent
    for run in runs[:2]:
        command._mark_submitted(run, "four", "local", "2026-01-01T00:00:00+00:00")
    fake_run(runs[0], "finished")
    RunRecord(runs[1].path).stop("below the cut at rung 1 (step 2)", kind="cut", step=2)
    command._mark_submitted(runs[2], "other", "local", "2026-01-01T00:00:00+00:00")
    assert command.status_all(results_dir=str(results)) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["sweep", "runs", "states"]
    assert lines[1].split()[:2] == ["four", "2"] and "1 finished, 1 stopped" in lines[1]
    assert lines[2].split()[:2] == ["other", "1"] and "1 new" in lines[2]


def test_a_repeated_dry_run_of_a_1000_point_grid_plans_every_point_without_importing_trl(tmp_path):
    """The fast path, end to end in a fresh interpreter. Its speed is bench/bench_sweep.py's business (a
    ratio against compose() in the same run); here: every point planned, and a repeat finds the trainer
    arguments TRL already accepted in the cache (abcx.config.trl_args), so it imports neither TRL nor torch."""
    path = write(tmp_path, "name: big\nfixed: [logger=none]\npoints:\n  - [method=abc_grpo]\n  - [method=grpo]\n"
                           "grid:\n  seed: [0,1,2,3,4,5,6,7,8,9]\n  train.learning_rate: [1.0e-4,2.0e-4,3.0e-4,4.0e-4,5.0e-4]\n"
                           "  train.temperature: [0.6,0.7,0.8,0.9,1.0,1.1,1.2,1.3,1.4,1.5]\n")
    code = (
        "import sys; from abcx.sweep import command; lines=[]; "
        f"command.sweep_run({path!r}, ['results_dir={tmp_path}/r'], dry_run=True, yes=True, out=lines.append); "
        "print('trl' in sys.modules, 'torch' in sys.modules); print(lines[-1])"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "ABCX_CACHE": str(tmp_path / "cache")}
    imported = []
    for _attempt in ("first", "repeat"):
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300,
                              env=env)
        assert proc.returncode == 0, proc.stderr
        modules, summary = proc.stdout.splitlines()[-2:]
        assert "1000 point(s), 1000 new" in summary
        imported.append(modules)
    assert imported == ["True True", "False False"], imported
    assert not (tmp_path / "r" / "runs").exists()  # a dry-run creates no run folder


def test_a_sweep_that_cannot_clip_says_its_methods_are_the_same_algorithm(tmp_path):
    from abcx.sweep import command

    lines: list[str] = []
    code = command.sweep_run("smoke", ["train.steps_per_generation=1", f"results_dir={tmp_path}"], dry_run=True,
                             out=lines.append)
    assert code == 0 and any("2 of 2 point(s) are fully on-policy" in line and "same algorithm" in line
                             for line in lines)
    lines.clear()
    command.sweep_run("smoke", [f"results_dir={tmp_path}"], dry_run=True, out=lines.append)
    assert not any("on-policy" in line for line in lines)
