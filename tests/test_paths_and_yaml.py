"""Bad paths and hostile YAML through the real command line: each is one `error:` line (exit 2) or a
warning, never a traceback or a hang, and nothing is written outside results_dir.

Every case runs `python -m abcx.cli` in a subprocess, as a user would run `abcx`."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
from tests.helpers import abcx as _abcx, one_error_line, tree  # noqa: E402,F401 - used by other test modules too


def abcx(*args: str, cwd: Path, timeout: float = 60, limit_bytes: int | None = None):
    return _abcx(*args, cwd=cwd, timeout=timeout, limit_bytes=limit_bytes)


POINT = "fixed: [model=tiny, train=testbed, train.max_steps=1, logger=none, eval.at_end=false]\ngrid:\n  seed: [0]\n"


def alias_bomb(levels: int = 9) -> str:
    """The classic 'billion laughs': 9 aliases of 9 aliases ... nine levels deep, 9^9 leaves."""
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefghijk", "bcdefghijk"[: levels - 1]):
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    return "\n".join(lines) + "\n"


# --- sweep names are one folder name ------------------------------------------------------------------

@pytest.mark.parametrize("name", ["/ABS/escaped", "../../escaped", "a/b"])
def test_a_sweep_name_that_is_a_path_is_refused_before_anything_is_written(tmp_path, name):
    name = name.replace("/ABS", str(tmp_path))
    sweep = tmp_path / "s.yaml"
    sweep.write_text(f"name: '{name}'\n" + POINT)
    before = tree(tmp_path)
    line = one_error_line(abcx("sweep", "run", str(sweep), f"results_dir={tmp_path / 'results'}", cwd=tmp_path))
    assert repr(name) in line and "plain name" in line
    assert tree(tmp_path) == before  # no results folder, nothing where the name pointed


@pytest.mark.parametrize("name", [".", "..", "a b", "x/../y", "", "sweep\n"])
def test_only_one_plain_folder_name_is_a_sweep_name(name):
    from abcx.errors import UserError
    from abcx.paths import check_name

    with pytest.raises(UserError, match="not a plain name"):
        check_name(name)
    assert check_name("eps-grid_v2.1") == "eps-grid_v2.1"


def test_sweep_status_refuses_a_sweep_name_that_is_a_path(tmp_path):
    (tmp_path / "results").mkdir()
    line = one_error_line(abcx("sweep", "status", "../../etc", "--results-dir", str(tmp_path / "results"),
                               cwd=tmp_path))
    assert "'../../etc'" in line and "plain name" in line
    assert tree(tmp_path) == {"results": None}


# --- YAML inputs: no aliases, bounded nesting and size, text only -----------------------------------

SWEEP_FILES = {
    # The 9-level bomb of the issue (it hung `sweep run --dry-run`), as one grid axis.
    "alias bomb": ("name: bomb\ngrid:\n  seed: [" + ", ".join(
        line.split(": ", 1)[1] for line in alias_bomb().splitlines()) + "]\n", "aliases"),
    "deep flow nesting": ("name: deep\ngrid:\n  seed: " + "[" * 5000 + "]" * 5000 + "\n", "nest"),
    "deep block nesting": ("name: deep\ngrid:\n" + "".join("  " * (i + 1) + f"k{i}:\n" for i in range(200)),
                           "nest"),
    "binary bytes": (bytes(range(256)) * 8, "not a text file"),
    "not UTF-8": ("name: caf\xe9\n".encode("latin-1") + POINT.encode(), "not a UTF-8 text file"),
    "over the size limit": ("name: big\n" + POINT + ("# padding\n" * 120_000), "larger than"),
}


@pytest.mark.parametrize("case", list(SWEEP_FILES))
def test_a_hostile_sweep_file_is_one_error_line_naming_the_file(tmp_path, case):
    content, says = SWEEP_FILES[case]
    sweep = tmp_path / "hostile.yaml"
    sweep.write_bytes(content if isinstance(content, bytes) else content.encode())
    proc = abcx("sweep", "run", str(sweep), "--dry-run", f"results_dir={tmp_path / 'results'}", cwd=tmp_path,
                timeout=30)
    line = one_error_line(proc)
    assert str(sweep) in line and says in line
    assert not (tmp_path / "results").exists()


def test_a_report_skips_a_record_whose_config_is_an_alias_bomb_and_renders_the_rest(tmp_path):
    import numpy as np

    from abcx.report.synth import write_record

    runs = tmp_path / "results" / "runs"
    for method in ("grpo", "abc_grpo"):
        write_record(str(runs), f"{method}-s0-0123456789", method=method, seed=0, steps=range(1, 6),
                     metrics={"reward": np.linspace(0.1, 0.5, 5), "entropy": np.linspace(1.0, 0.8, 5)})
    bomb = runs / "grpo-s0-0123456789" / "config.yaml"
    bomb.write_text("method:\n  name: grpo\nseed: 0\n" + alias_bomb())
    # Without the alias check this took the report past 4 GB; here it must fit in 2 GB of address space.
    proc = abcx("report", str(tmp_path / "results"), "--format", "markdown", cwd=tmp_path, timeout=120,
                limit_bytes=2 << 30)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "abc_grpo-s0-0123456789" in proc.stdout
    assert str(bomb) in proc.stdout and "aliases" in proc.stdout and "left out of the aggregates" in proc.stdout


# --- results_dir: a folder abcx can write, checked before any work ----------------------------------

@pytest.fixture
def read_only_dir(tmp_path):
    """A folder nobody may write into. As root (CI) that takes a read-only file system: a tmpfs
    mounted read-only; permissions alone do not stop root."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() != 0:
        folder.chmod(0o555)
        yield folder
        folder.chmod(0o755)
        return
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(folder)], capture_output=True,
                          text=True)
    if proc.returncode:
        why = f"cannot mount a read-only tmpfs as root ({proc.stderr.strip()}); the read-only cases need it"
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def bad_results_dir(kind: str, tmp_path: Path, read_only: Path) -> tuple[Path, str]:
    """(results_dir, what the error says) for each way a results_dir can be unusable."""
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder\n")
    return {
        "a file": (a_file, "is not a folder"),
        "under a file": (a_file / "results", f"{a_file} is a file"),
        "read-only": (read_only, "not writable (a read-only file system"),
        "under a read-only folder": (read_only / "results", "cannot be made in"),
    }[kind]


COMMANDS = {
    "train": ["train", "train.max_steps=1", "logger=none"],
    "sweep run": ["sweep", "run", "SWEEP"],
    "eval": ["eval", "some-org/some-model", "eval.max_problems=1"],  # a hub id: refused before any download
}


@pytest.mark.parametrize("command, kind", [
    ("train", "a file"), ("train", "under a read-only folder"),
    ("sweep run", "under a file"), ("sweep run", "read-only"),
    ("eval", "a file"), ("eval", "read-only"),
])
def test_an_unusable_results_dir_is_one_line_before_any_work(tmp_path, read_only_dir, command, kind):
    results, says = bad_results_dir(kind, tmp_path, read_only_dir)
    sweep = tmp_path / "one.yaml"
    sweep.write_text("name: one\n" + POINT)
    args = [str(sweep) if a == "SWEEP" else a for a in COMMANDS[command]]
    before = tree(tmp_path)
    line = one_error_line(abcx(*args, f"results_dir={results}", cwd=tmp_path))
    assert str(results) in line and says in line
    assert tree(tmp_path) == before


# --- report outputs -------------------------------------------------------------------------------------

@pytest.fixture
def two_records(tmp_path):
    import numpy as np

    from abcx.report.synth import write_record

    for method in ("grpo", "abc_grpo"):
        write_record(str(tmp_path / "results" / "runs"), f"{method}-s0-0123456789", method=method, seed=0,
                     steps=range(1, 4), metrics={"reward": np.linspace(0.1, 0.3, 3)})
    return tmp_path / "results"


def test_report_out_at_a_folder_and_plots_at_a_file_are_one_line_each(tmp_path, two_records):
    folder = tmp_path / "reports"
    folder.mkdir()
    a_file = tmp_path / "plots.png"
    a_file.write_bytes(b"\x89PNG not really")
    before = tree(tmp_path)
    line = one_error_line(abcx("report", str(two_records), "--out", str(folder), cwd=tmp_path))
    assert f"--out {folder}" in line and "is a folder" in line
    line = one_error_line(abcx("report", str(two_records), "--plots", str(a_file), cwd=tmp_path))
    assert f"--plots {a_file}" in line and "is a file" in line
    assert tree(tmp_path) == before


# --- sweep status over unreadable run and sweep files --------------------------------------------------

def submitted_sweep(tmp_path: Path) -> tuple[Path, list]:
    """A sweep of two points submitted on paper (records and manifest written, no job started)."""
    from abcx.record import now_iso
    from abcx.sweep import command, manifest

    sweep = tmp_path / "pair.yaml"
    sweep.write_text(f"name: pair\nfixed: [logger=none, results_dir={tmp_path / 'results'}]\ngrid:\n  seed: [0, 1]\n")
    spec, planned = command.plan_sweep(str(sweep))
    when = now_iso()
    for run in planned:
        command._mark_submitted(run, "pair", "local", when)
    manifest.update(tmp_path / "results", "pair",
                    lambda m: command._record_plan(m, spec, planned, "local", when, planned))
    return tmp_path / "results", planned


def test_sweep_status_lists_a_run_whose_status_file_is_binary_with_a_warning(tmp_path):
    results, runs = submitted_sweep(tmp_path)
    bad = runs[0].path / "status.json"
    bad.write_bytes(b"\x00\xff\xfe garbage \x80")
    proc = abcx("sweep", "status", "pair", "--results-dir", str(results), cwd=tmp_path)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert all(run.run_id in proc.stdout for run in runs) and "sweep pair: 2 run(s)" in proc.stdout
    assert [line for line in proc.stderr.splitlines() if line.strip()] == [
        f"warning: {bad}: not readable as JSON (UnicodeDecodeError); ignored"]


def test_an_unreadable_manifest_is_rebuilt_from_readable_records_and_kept_aside(tmp_path):
    results, runs = submitted_sweep(tmp_path)
    manifest = results / "sweeps" / "pair" / "manifest.json"
    manifest.write_bytes(b'{"runs": [')
    (runs[1].path / "meta.json").write_bytes(b"[1, 2, 3]")
    proc = abcx("sweep", "status", "pair", "--results-dir", str(results), cwd=tmp_path)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    # Rebuilt from the run records: the run whose meta.json is unreadable cannot say it belongs here.
    assert runs[0].run_id in proc.stdout and runs[1].run_id not in proc.stdout
    assert "sweep pair: 1 run(s)" in proc.stdout
    warnings = [line for line in proc.stderr.splitlines() if line.strip()]
    assert all(line.startswith("warning: ") for line in warnings)
    assert any(str(manifest) in line for line in warnings) and any(str(runs[1].path / "meta.json") in line
                                                                   for line in warnings)
    assert (manifest.parent / "manifest.json.bad").read_bytes() == b'{"runs": ['
