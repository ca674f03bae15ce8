"""Configs a new user can see, and overrides that always mean something (issue 15, section 3)."""
from pathlib import Path

import pytest

from abcx import __version__
from abcx.errors import UserError
from tests.helpers import abcx, said




def test_version_short_help_and_completion_are_there(tmp_path):
    assert abcx("--version", cwd=tmp_path).stdout.strip() == f"abcx {__version__}"
    short = abcx("-h", cwd=tmp_path)
    assert short.returncode == 0 and "--install-completion" in short.stdout and "config" in short.stdout
    assert abcx("sweep", "-h", cwd=tmp_path).returncode == 0


def test_config_show_and_train_cfg_job_print_the_composed_config_with_its_run_id(tmp_path):
    import yaml

    shown = abcx("config", "show", "method=grpo", "seed=3", "train.max_steps=7", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    header, _, body = shown.stdout.partition("\n")
    cfg = yaml.safe_load(body)
    assert (cfg["method"]["name"], cfg["seed"], cfg["train"]["max_steps"]) == ("grpo", 3, 7)
    assert header.startswith("# run id: grpo-s3-")
    same = abcx("train", "--cfg", "job", "method=grpo", "seed=3", "train.max_steps=7", cwd=tmp_path)
    assert same.stdout == shown.stdout and not (tmp_path / "results").exists()  # printed, nothing trained


@pytest.mark.parametrize("override, field", [
    ("train.epsilon=0.3", "method.eps_low"),
    ("+train.epsilon_high=0.3", "method.eps_high"),
    ("train.warmup_ratio=0.1", "train.warmup_steps"),
    ("+train.extra.epsilon=0.3", "method.eps_low"),
])
def test_trl_names_are_refused_with_the_abcx_field_that_does_it(override, field):
    from abcx.config.compose import compose

    with pytest.raises(UserError, match=field):
        compose([override])


def test_hydra_settings_are_refused_since_abcx_is_no_hydra_app():
    from abcx.config.compose import compose

    with pytest.raises(UserError, match=r"hydra\.\* settings have no effect.*results_dir"):
        compose(["hydra.run.dir=elsewhere"])


def test_name_is_the_wandb_display_name_and_the_run_id_stays(tmp_path):
    from abcx.config.compose import compose
    from abcx.config.identity import run_id
    from abcx.config.trl_args import grpo_args

    named = compose(["name=my-first-run", f"results_dir={tmp_path}"])
    assert grpo_args(named, tmp_path, report_to=[]).run_name == "my-first-run"
    assert run_id(named) == run_id(compose([f"results_dir={tmp_path}"]))  # name does not change what is trained


def test_rerun_moves_an_ended_record_aside_and_never_deletes_it(tmp_path):
    from abcx.record import RunRecord
    from abcx.report.synth import write_record

    path = Path(write_record(str(tmp_path / "runs"), "grpo-s0-0123456789", method="grpo", seed=0, steps=[1, 2],
                             metrics={"reward": [0.1, 0.2]}))
    moved = RunRecord(path).move_aside()
    assert not path.exists() and moved.parent == tmp_path / "runs" / ".superseded"
    assert (moved / "metrics.jsonl").exists() and moved.name.startswith("grpo-s0-0123456789-")
    running = Path(write_record(str(tmp_path / "runs"), "grpo-s1-0123456789", method="grpo", seed=1, steps=[1],
                                metrics={"reward": [0.1]}, state="running"))
    with pytest.raises(UserError, match="is running; --rerun moves only ended runs"):
        RunRecord(running).move_aside()
    assert running.exists()


# --- section 4: the machine is checked before anything starts -----------------------------------

def test_too_few_gpus_and_missing_deepspeed_are_one_line_each():
    from abcx.training.preflight import check_gpus

    with pytest.raises(UserError, match=r"launcher.num_processes=8 needs 8 GPUs; found 2 .* launcher.num_processes=2"):
        check_gpus(8, "zero3", found=2)
    check_gpus(2, "cpu", found=0)  # CPU data parallel needs no GPU
    check_gpus(1, "zero3", found=0)  # one process: accelerate is not used
    import importlib.util

    if importlib.util.find_spec("deepspeed") is None:
        with pytest.raises(UserError, match="zero3 needs DeepSpeed.*pip install deepspeed"):
            check_gpus(8, "zero3", found=8)


def test_an_uncached_hub_model_offline_names_hf_hub_offline_and_the_local_path(monkeypatch, tmp_path):
    from abcx.training.preflight import check_model_source

    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match=r"model.path='Qwen/Qwen3-4B-Base' is not in the Hugging Face cache and "
                                        r"HF_HUB_OFFLINE is set.*model.path=/a/local/folder"):
        check_model_source("Qwen/Qwen3-4B-Base")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_ENDPOINT", "https://abcx-unreachable.invalid")
    with pytest.raises(UserError, match="abcx-unreachable.invalid cannot be reached from here"):
        check_model_source("Qwen/Qwen3-4B-Base")


def test_abcx_train_of_the_paper_recipe_on_a_cpu_machine_is_one_line_and_creates_nothing(tmp_path):
    proc = abcx("train", "experiment=paper_qwen3_1.7b", f"results_dir={tmp_path / 'results'}", cwd=tmp_path)
    lines = said(proc.stderr)
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "launcher.num_processes=8 needs 8 GPUs; found" in lines[0] or "DeepSpeed" in lines[0]
    assert not (tmp_path / "results" / "runs").exists()


def test_the_paper_overlays_share_one_recipe_and_differ_only_in_model_batch_and_length():
    from abcx.config.compose import compose
    from abcx.config.identity import to_dict

    small, large = (to_dict(compose([f"experiment=paper_qwen3_{s}"])) for s in ("1.7b", "4b"))
    assert (small["train"]["per_device_train_batch_size"], large["train"]["per_device_train_batch_size"]) == (8, 4)
    assert (small["train"]["max_completion_length"], large["train"]["max_completion_length"]) == (4096, 3072)
    assert (small["model"]["size"], large["model"]["size"]) == ("1.7b", "4b")
    for d in (small, large):
        d["train"].pop("per_device_train_batch_size"), d["train"].pop("max_completion_length"), d.pop("model")
    assert small == large and small["train"]["steps_per_generation"] == 64 and small["launcher"]["num_processes"] == 8
