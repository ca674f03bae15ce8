"""A run folder is named by its config's hash, and the embedded model's warm-start recipe lives in code,
not in the config. So a run trained on another build of `tiny` (from before a recipe change) has the
id today's config composes to: training or sweeping that config refuses it in one line, before
anything is written, instead of resuming it or counting it as this config's finished run."""
from __future__ import annotations

import json
from pathlib import Path

from abcx.config.compose import compose

from abcx.config.identity import model_build, run_id
from abcx.report.synth import write_record
from abcx.testbed import DEFAULT_RECIPE
from tests.helpers import one_error_line, tree
from tests.test_paths_and_yaml import POINT, abcx

OLD_BUILD = "tiny-qwen3-000000000000"
OVERRIDES = ["model=tiny", "train=testbed", "train.max_steps=1", "logger=none", "eval.at_end=false", "seed=0"]


def _finished_run_of(build: str | None, results: Path) -> Path:
    cfg = compose([*OVERRIDES, f"results_dir={results}"])
    path = Path(write_record(str(results / "runs"), run_id(cfg), method=cfg.method.name, seed=0, steps=[1]))
    if build:
        meta = json.loads((path / "meta.json").read_text())
        (path / "meta.json").write_text(json.dumps({**meta, "model_build": build}))
    return path


def test_the_build_names_tiny_s_recipe_and_a_hub_model_has_none():
    assert model_build(compose([])) == DEFAULT_RECIPE.folder_name()
    assert model_build(compose(["model=qwen3_1.7b_base"])) is None


def test_training_a_config_whose_run_is_of_another_build_is_refused_before_anything_is_written(tmp_path):
    _finished_run_of(OLD_BUILD, tmp_path / "results")
    before = tree(tmp_path)
    line = one_error_line(abcx("train", *OVERRIDES, f"results_dir={tmp_path / 'results'}", cwd=tmp_path,
                               timeout=300))
    assert line.startswith("error: model=tiny:") and OLD_BUILD in line and DEFAULT_RECIPE.folder_name() in line
    assert tree(tmp_path) == before


def test_a_sweep_over_such_a_run_is_refused_but_a_run_of_this_build_or_unrecorded_one_is_skipped(tmp_path):
    sweep = tmp_path / "s.yaml"
    sweep.write_text("name: s\n" + POINT)
    results = tmp_path / "results"
    run = _finished_run_of(OLD_BUILD, results)
    before = tree(tmp_path)
    line = one_error_line(abcx("sweep", "run", str(sweep), f"results_dir={results}", cwd=tmp_path, timeout=300))
    assert "point 1" in line and "model=tiny:" in line and OLD_BUILD in line
    assert tree(tmp_path) == before
    for build in (DEFAULT_RECIPE.folder_name(), None):  # this build, or a record from before builds were kept
        _finished_run_of(build, results)
        meta = json.loads((run / "meta.json").read_text())
        assert meta.get("model_build") == build
        proc = abcx("sweep", "run", str(sweep), f"results_dir={results}", cwd=tmp_path, timeout=300)
        assert proc.returncode == 0 and "nothing to submit" in proc.stdout, proc.stderr[-2000:]
