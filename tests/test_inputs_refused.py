"""The last inputs that ended in a traceback or left a folder behind (issue #26, section 5): each is one
line naming the input and what would be valid, exit code 2, and nothing created or changed; a record
that cannot be read is listed as broken with its reason, and the report goes on.

Every command runs through abcx.cli.main in this process (tests.helpers.cli), as the console script
runs it, against real files: a results folder of records written by RunRecord, the testbed model's
files, the kernel's own /proc and /sys."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
from pathlib import Path

import pytest

from abcx.report.synth import write_record
from tests.helpers import cli, said, tree

TRAIN = ("train", "model=tiny", "task=chain", "train=testbed", "train.max_steps=2", "logger=none")


def refused(args, root: Path) -> str:
    """The one error line of `abcx ARGS` (exit 2, no traceback), after checking nothing under root changed."""
    before = tree(root)
    code, out, err = cli(*args)
    lines = said(err)
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), (code, out[-2000:], err[-2000:])
    assert tree(root) == before, "a refused command created or changed nothing"
    return lines[0]


@pytest.fixture
def here(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


# --- train: refused before the run folder exists ---------------------------------------------------

@pytest.mark.parametrize("path,says", [
    ("/nonexistent", "model.path='/nonexistent': no such folder; valid: a folder holding a saved model"),
    ("/etc", "model.path='/etc' cannot be loaded: no config.json (not a model folder); valid:"),
    ("/etc/hostname", "model.path='/etc/hostname' is a file, not a model folder; valid:"),
])
def test_a_model_path_that_is_not_a_model_is_refused_before_the_run_folder_exists(here, path, says):
    line = refused([*TRAIN, f"model.path={path}", f"results_dir={here / 'results'}"], here)
    assert says in line and "or a hub id ORG/NAME" in line


def test_a_model_folder_with_torn_weights_is_refused_before_the_run_folder_exists(here, tiny_model_path):
    model = here / "model"
    shutil.copytree(tiny_model_path, model)
    weights = model / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # a copy cut short
    line = refused([*TRAIN, f"model.path={model}", f"results_dir={here / 'results'}"], here)
    assert f"model.path='{model}' cannot be loaded: model.safetensors: size does not match its header" in line


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_use_vllm_without_vllm_is_refused_before_the_run_folder_exists(here):
    line = refused([*TRAIN, "train.use_vllm=true", f"results_dir={here / 'results'}"], here)
    assert "train.use_vllm=true needs vLLM, which is not installed here" in line and "train.use_vllm=false" in line


@pytest.mark.parametrize("root,fs", [("/proc", "proc"), ("/sys", "sysfs")])
def test_a_results_dir_on_the_kernels_file_systems_is_refused(here, root, fs):
    if not os.path.isdir(root):
        pytest.skip(f"no {root} here")
    line = refused([*TRAIN, f"results_dir={root}/abcx-results"], here)
    assert f"results_dir {root}/abcx-results lies on {fs}, the kernel's own file system" in line
    assert "give a folder on a disk" in line and not os.path.exists(f"{root}/abcx-results")


def test_an_unbounded_controller_gain_is_refused(here):
    line = refused(["config", "show", "method=abc_adaptive", "method.eta=inf"], here)
    assert line == "error: method.eta=inf is not valid; valid: [0, 100]"


def test_an_unbounded_stop_grace_is_refused(here):
    line = refused(["sweep", "stop", "s", "--grace", "inf", "--results-dir", str(here)], here)
    assert "--grace inf: valid: seconds from 0 to 86400 (a day)" in line


# --- eval: every model loadable before anything is written -----------------------------------------

def test_an_uncached_hub_id_offline_is_refused_and_creates_no_evals_folder(here, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(here / "empty-cache"))
    line = refused(["eval", "someone/not-cached", f"results_dir={here / 'results'}"], here)
    assert "TARGET someone/not-cached is not in the Hugging Face cache and HF_HUB_OFFLINE is set" in line
    assert "evaluate a local folder holding the model" in line and not (here / "results").exists()


@pytest.mark.parametrize("damage,says", [
    ("garbage weights", "model.safetensors: header larger than the file (garbage or cut short)"),
    ("torn config", "config.json is not valid JSON (torn or garbage)"),
])
def test_a_run_whose_final_model_is_damaged_is_refused_and_its_record_is_untouched(here, tiny_model_path, damage,
                                                                                   says):
    from abcx.record import RunRecord

    record = RunRecord(here / "results" / "runs" / "grpo-s0-0123456789")
    record.start({"method": {"name": "grpo"}, "seed": 0}, config_hash="0123456789", max_steps=2)
    record.save_final(lambda folder: shutil.copytree(tiny_model_path, folder))
    record.finish({})
    if damage == "garbage weights":
        (record.final_path / "model.safetensors").write_bytes(b"\xff" * 4096)
    else:
        text = (record.final_path / "config.json").read_text()
        (record.final_path / "config.json").write_text(text[: len(text) // 2])
    line = refused(["eval", str(record.path)], here)
    assert f"TARGET {record.path}: {record.final_path} cannot be loaded: {says}" in line


# --- report: --out, foreign files, --metric-map, --labels --------------------------------------------

@pytest.fixture
def results(here):
    for seed in (0, 1):
        write_record(str(here / "results" / "runs"), f"grpo-s{seed}-0123456789", method="grpo", seed=seed,
                     steps=[1, 2, 3], metrics={"reward": [0.1 * seed, 0.2, 0.3 + seed]})
    return here / "results"


@pytest.mark.parametrize("out,says", [
    ("/proc/report.md", "--out's folder /proc lies on proc, the kernel's own file system"),
    ("/sys/report.md", "--out's folder /sys lies on sysfs"),
    ("/dev/full", "--out /dev/full: cannot be written (No space left on device)"),
])
def test_a_report_to_a_path_that_cannot_be_written_is_one_line(results, out, says):
    if not os.path.exists(os.path.dirname(out)):
        pytest.skip(f"no {os.path.dirname(out)} here")
    assert says in refused(["report", str(results), "--format", "markdown", "--out", out], results.parent)


def test_a_report_that_fails_to_write_keeps_the_earlier_report_whole(results, monkeypatch):
    """--out is written beside and renamed: a failed write (here: a report too large for a 1-byte file
    size limit, the real EFBIG of a full quota) leaves the earlier file as it was."""
    import resource

    out = results.parent / "report.md"
    assert cli("report", str(results), "--format", "markdown", "--out", str(out))[0] == 0
    earlier = out.read_bytes()
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    import signal

    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write(2) then fails with EFBIG instead of a kill
    resource.setrlimit(resource.RLIMIT_FSIZE, (1, hard))
    try:
        code, _out, err = cli("report", str(results), "--format", "json", "--out", str(out))
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)
    assert code == 2 and err.startswith(f"error: --out {out}: cannot be written (File too large)"), err
    assert out.read_bytes() == earlier and sorted(p.name for p in out.parent.iterdir()) == ["report.md", "results"]


def _broken(results: Path, how: str) -> Path:
    path = results / "runs" / "grpo-s2-0123456789"
    write_record(str(results / "runs"), path.name, method="grpo", seed=2, steps=[1, 2, 3],
                 metrics={"reward": [9.0, 9.0, 9.0]})  # a value that would move the mean if it were counted
    if how == "metrics.jsonl is a folder":
        (path / "metrics.jsonl").unlink()
        (path / "metrics.arrow").unlink()
        (path / "metrics.jsonl").mkdir()
        return path
    name, field, value = {"meta seed": ("meta.json", "seed", {"a": 1}), "meta tags": ("meta.json", "tags", 5),
                          "meta sweep": ("meta.json", "sweep", 1), "status step": ("status.json", "step", "five")}[how]
    data = json.loads((path / name).read_text())
    data[field] = value
    (path / name).write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("how,reason", [
    ("metrics.jsonl is a folder", "metrics.jsonl: not a file"),
    ("meta seed", "meta.json: seed is {'a': 1}; valid: an integer"),
    ("meta tags", "meta.json: tags is 5; valid: a list of strings"),
    ("meta sweep", "meta.json: sweep is 1; valid: a string"),  # found by tests/test_cli_contract.py
    ("status step", "status.json: step is 'five'; valid: an integer"),
])
@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_a_record_with_a_wrong_type_is_listed_as_broken_with_its_reason_and_left_out(results, how, reason, fmt):
    path = _broken(results, how)
    code, out, err = cli("report", str(results), "--format", fmt)
    assert code == 0 and "Traceback" not in err, err[-3000:]
    note = f"run record {path}: {path}/{reason} (listed, left out of the aggregates)"
    if fmt == "csv":  # one tidy table on stdout, its notes on stderr
        import io

        import pandas as pd

        assert note in err
        table = pd.read_csv(io.StringIO(out))
        assert set(table.loc[table["run_id"] == path.name, "state"]) == {"unknown"}
        assert table[(table["metric"] == "reward") & (table["run_id"] == path.name)].empty  # its 9.0s in no row
    else:
        data = json.loads(out)
        assert note in data["notes"]
        (broken,) = [r for r in data["tables"]["runs"]["rows"] if r["run_id"] == path.name]
        assert broken["state"] == "unknown" and reason in broken["detail"]
        (group,) = data["tables"]["groups"]["rows"]
        assert group["n"] == 2 and group["reward_final_mean"] == pytest.approx(0.8)  # (0.3 + 1.3) / 2: no 9.0


def test_a_foreign_trainer_state_nested_200000_levels_is_one_line(here):
    state = here / "run" / "trainer_state.json"
    state.parent.mkdir()
    state.write_text('{"log_history": [], "deep": ' + "[" * 200_000 + "]" * 200_000 + "}")
    line = refused(["report", str(state)], here)
    assert f"{state}: nested too deeply to be a trainer_state.json" in line


@pytest.mark.parametrize("text,says", [
    ("rename: {reward: step}\n", "rename.reward: 'step' is a column of every run's history, not a metric"),
    ("rename: {step: reward}\n", "rename.step: 'step' is a column"),
    ("derive: {run_id: [a, b]}\n", "derive.run_id: 'run_id' is a column"),
    ("layouts: {mine: {clip/q1: [step]}}\n", "layouts.mine.clip/q1: step, run_id are columns"),
])
def test_a_metric_map_onto_the_step_column_is_one_line(results, text, says):
    mmap = results.parent / "map.yaml"
    mmap.write_text(text)
    assert says in refused(["report", str(results), "--metric-map", str(mmap)], results.parent)


@pytest.mark.parametrize("option", ["--labels", "--metric-map"])
@pytest.mark.parametrize("given,says", [
    ("folder", "is a folder, not a YAML file"),
    ("/dev/zero", "/dev/zero: not a regular file (a device or a pipe)"),
    ("missing.yaml", "missing.yaml: no such file"),
])
def test_labels_and_metric_map_name_what_they_were_given(results, option, given, says):
    (results.parent / "folder").mkdir()
    line = refused(["report", str(results), option, given], results.parent)
    assert line.startswith(f"error: {option} {given}") and says in line


# --- a sweep's manifest (found by tests/test_cli_contract.py) -------------------------------------------

@pytest.mark.parametrize("field,value", [("results_dir", [None]), ("runs", [{"run_id": 5}]),
                                         ("runs", [{"run_id": "grpo-s0-0123456789", "index": "x"}])])
def test_a_manifest_field_of_the_wrong_type_is_rebuilt_from_the_records_and_kept_aside(results, field, value):
    from abcx.record import RunRecord
    from abcx.sweep import manifest

    for i, run in enumerate(sorted((results / "runs").iterdir())):
        RunRecord(run).mark_submitted(sweep="s", point=[f"seed={i}"], index=i, backend="local", submitted="then")
    path = manifest.manifest_path(results, "s")
    path.parent.mkdir(parents=True)
    bad = json.dumps({"name": "s", "backend": "local", field: value})
    path.write_text(bad)
    code, out, err = cli("sweep", "status", "s", "--results-dir", str(results))
    assert code == 0 and "Traceback" not in err, err[-3000:]
    assert f"warning: {path}: {field}" in err and "ignored (rebuilt from the run records)" in err
    assert "grpo-s0-0123456789" in out and "grpo-s1-0123456789" in out and "2 run(s)" in out
    assert path.with_name("manifest.json.bad").read_text() == bad  # nothing written is lost


# --- found by tests/test_cli_contract.py with other examples (ABCX_PROPERTY_RANDOM=1) ------------------

@pytest.mark.parametrize("option", ["--sweep", "--tag"])
def test_a_sweep_or_tag_filter_passes_over_a_broken_record(results, option):
    broken = _broken(results, "status step")
    code, out, err = cli("report", str(results), option, "s", "--format", "json")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith(f"error: no runs match {option} s"), err
    assert broken.exists()


def test_a_trainer_state_without_one_usable_row_is_reported_beside_abcx_records(results):
    state = results.parent / "trainer" / "trainer_state.json"
    state.parent.mkdir()
    state.write_text(json.dumps({"log_history": [{"step": "x", "loss": 1}, {"step": 2, "loss": "nan"}, 7]}))
    code, out, err = cli("report", str(results), str(state.parent), "--format", "json")
    assert code == 0 and "Traceback" not in err, err[-3000:]
    rows = json.loads(out)["tables"]["runs"]["rows"]
    assert sorted(r["run_id"] for r in rows) == ["grpo-s0-0123456789", "grpo-s1-0123456789", "trainer"]


def test_record_files_nested_100000_levels_are_unreadable_lines_or_a_broken_record(results):
    """json's decoder recurses per level: a RecursionError is an unreadable line (metrics.jsonl, with the
    rest of the file kept) or an unreadable record (status.json), like any other bad JSON."""
    deep = "[" * 100_000 + "]" * 100_000
    lines = results / "runs" / "grpo-s0-0123456789" / "metrics.jsonl"
    (lines.parent / "metrics.arrow").unlink()
    lines.write_text(lines.read_text() + deep + "\n" + '{"step": 4, "reward": 0.9}\n' + '{"step": 5, "x": ' + deep)
    status = results / "runs" / "grpo-s1-0123456789" / "status.json"
    status.write_text(deep)
    code, out, err = cli("report", str(results), "--format", "csv")
    assert code == 0 and "Traceback" not in err, err[-3000:]
    assert f"warning: {lines}: skipped 1 unreadable line(s) (line 4: not valid JSON)" in err
    assert f"{status}: nested too deeply to be a record file (listed, left out of the aggregates)" in err
    import io

    import pandas as pd

    table = pd.read_csv(io.StringIO(out))
    rewards = table[(table["run_id"] == "grpo-s0-0123456789") & (table["metric"] == "reward")]
    assert rewards["step"].tolist() == [1, 2, 3, 4] and rewards["value"].tolist()[-1] == pytest.approx(0.9)


def test_an_error_that_echoes_a_control_character_stays_one_line(results):
    """A `\r` or a record separator typed into a value is shown escaped, not acted on by the terminal."""
    line = refused(["report", str(results), "--sweep", "a\rb"], results.parent)
    assert line.startswith("error: no runs match --sweep a\\rb ")
    sweep = results.parent / "sweep.yaml"
    sweep.write_text('name: ok\nfixed: [model=tiny, train=testbed]\ngrid: {seed: ["0"]}\npoints: [["\\x1e"]]\n')
    line = refused(["sweep", "run", str(sweep), "--dry-run"], results.parent)
    assert "\\x1e" in line and "cannot parse override" in line


@pytest.mark.parametrize("override", ["=null", "=x", "+=1"])
def test_an_override_without_a_key_is_one_line(here, override):
    """`=null` reached Hydra's defaults list as a config group named '' (a ValueError traceback)."""
    line = refused(["config", "show", override], here)
    assert line == f"error: {override!r} names no field; an override is KEY=VALUE, e.g. train.max_steps=20"
