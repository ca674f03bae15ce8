"""What can be checked of `make gpu-check` (bench/gpu_check.py) without a GPU: its plan, its arguments,
that every command it would run is a valid abcx invocation, that without CUDA it refuses in one line
and writes nothing (so results/gpu/ never holds figures that were not measured), and that its offline
bundle (`make gpu-wheels`, bench/gpu_bundle.py) installs without the index and holds everything the
checks import beyond what the GPU image has. The checks themselves need a CUDA GPU."""
from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "bench" / "gpu_check.py"
sys.path.insert(0, str(REPO / "bench"))
import gpu_bundle  # noqa: E402
import gpu_check  # noqa: E402


def run_script(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)})


def test_the_dry_run_lists_every_check_with_its_commands_and_budget_and_runs_nothing(tmp_path):
    proc = run_script("--dry-run", "--work", str(tmp_path / "scratch"), "--out", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    for name, check in gpu_check.CHECKS.items():
        assert f"- {name} (budget {check.budget_s} s)" in proc.stdout
    assert "--backend vllm" in proc.stdout and "train.use_vllm=true" in proc.stdout and "--vocab 151936" in proc.stdout
    assert sum(c.budget_s for c in gpu_check.CHECKS.values()) >= gpu_check.TOTAL_BUDGET_S == 480
    assert not (tmp_path / "scratch").exists() and not (tmp_path / "out").exists()


def test_an_unknown_check_is_one_line_naming_the_valid_ones():
    proc = run_script("--only", "train_bf16,roofline")
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0
    assert "unknown check 'roofline'; valid: train_bf16, heads_agree, vllm_colocate, head_roofline, eval_vllm" \
        in proc.stderr


@pytest.mark.parametrize("name", list(gpu_check.CHECKS))
def test_every_abcx_command_of_the_check_composes_to_a_valid_config(name, tmp_path):
    from abcx.config.compose import compose

    for cmd in gpu_check.CHECKS[name].commands(tmp_path):
        if cmd[1:3] != ["-m", "abcx.cli"]:
            continue
        args = cmd[3:]
        overrides = args[1:] if args[0] == "train" else [a for a in args[2:] if "=" in a]
        cfg = compose(overrides)  # raises a one-line UserError for a field or value abcx does not know
        if args[0] == "train":
            assert cfg.train.bf16 is True and cfg.model.name == "tiny"


def test_without_cuda_it_refuses_in_one_line_and_writes_nothing(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is here: the real check would run (use make gpu-check)")
    proc = run_script("--out", str(tmp_path / "out"), "--work", str(tmp_path / "scratch"))
    assert proc.returncode == 2 and "needs a CUDA GPU" in proc.stderr and proc.stderr.strip().count("\n") == 0
    assert not (tmp_path / "out").exists() and not (tmp_path / "scratch").exists()


def test_the_committed_results_readme_does_not_claim_figures_no_check_produced():
    readme = (REPO / "results" / "gpu" / "README.md").read_text()
    results = REPO / "results" / "gpu" / "results.json"
    if not results.exists():  # no run has been committed: the README must say so, with no pass/fail table
        assert "has not run yet" in readme and "| pass |" not in readme and "make gpu-check" in readme
    else:
        import json

        report = json.loads(results.read_text())
        assert readme == gpu_check.render_readme(report)  # the README is exactly what the run wrote


def vllm_here() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def test_the_dry_run_says_which_checks_run_without_vllm(tmp_path):
    if vllm_here():
        pytest.skip("vLLM is installed here: every check would run")
    proc = run_script("--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "5 check(s), 3 run here, 2 not run" in proc.stdout
    for name in ("train_bf16", "heads_agree", "head_roofline"):
        assert f"- {name} (budget {gpu_check.CHECKS[name].budget_s} s) [runs]" in proc.stdout
    for name in ("vllm_colocate", "eval_vllm"):
        assert f"- {name} (budget {gpu_check.CHECKS[name].budget_s} s) [not run: vLLM not installed]" in proc.stdout


def a_report(**device) -> dict:
    return {"date": "2026-12-07 10:00 UTC", "total_seconds": 201.5, "budget_seconds": 480, "device": {
        "name": "NVIDIA H100 80GB HBM3", "memory_gib": 79.1, "compute_capability": "9.0", "multiprocessors": 132,
        "devices_visible": 1, "cuda_runtime": "13.0", "driver": "580.1", "host": "gpu-1", "python": "3.12.3",
        "packages": {"torch": "2.11.0+cu130", "transformers": "5.17.0", "trl": "1.16.0", "vllm": None}, **device},
        "checks": {"train_bf16": {"ok": True, "measured": {"grpo": {"steps": 30}}, "note": "bf16", "seconds": 61.2},
                   "heads_agree": {"ok": False, "measured": {}, "note": "grad off", "seconds": 9.8},
                   "vllm_colocate": {"ok": None, "measured": {}, "note": "not run: vLLM not installed",
                                     "seconds": 0}}}


def test_the_readme_names_each_outcome_the_versions_and_those_that_differ_from_the_cpu_pins():
    readme = gpu_check.render_readme(a_report(
        differ_from_cpu_pins={"torch": {"here": "2.11.0+cu130", "cpu_pin": "2.13.0"},
                              "transformers": {"here": "5.17.0", "cpu_pin": "5.25.0"}},
        bundle={"wheels": ["trl 1.16.0", "datasets 5.0.0"],
                "unmet": ["datasets wants fsspec<=2026.4.0; fsspec 2026.9.0 is here"]},
        testbed={"folder": "tiny-qwen3-2a634830ce78", "built_with": {"torch": "2.13.0+cpu"}, "host": "cpu-box"}))
    assert "| train_bf16 | pass | 61.2 | bf16 |" in readme and "| heads_agree | **FAIL** | 9.8 | grad off |" in readme
    assert "| vllm_colocate | not run | 0 | not run: vLLM not installed |" in readme
    assert "## train_bf16" in readme and "## vllm_colocate" not in readme  # no figures for a check that did not run
    assert "Software: torch 2.11.0+cu130, transformers 5.17.0, trl 1.16.0, vllm not installed." in readme
    assert "Different from the CPU pins (constraints-cpu.txt): torch 2.11.0+cu130 (CPU 2.13.0), " \
           "transformers 5.17.0 (CPU 5.25.0)." in readme
    assert "bundle (trl 1.16.0, datasets 5.0.0)" in readme
    assert "does not meet: datasets wants fsspec<=2026.4.0; fsspec 2026.9.0 is here." in readme
    assert "Testbed model tiny-qwen3-2a634830ce78, built on cpu-box" in readme


def test_the_cpu_pins_are_what_the_cpu_environment_runs():
    from importlib.metadata import version

    pins = gpu_check.cpu_pins()
    assert {"torch", "transformers", "trl"} <= set(pins)
    for name, pin in pins.items():
        assert version(name).split("+")[0] == pin, name


def test_the_bundle_pins_versions_abcx_accepts_and_the_trl_the_cpu_tests_run():
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    wanted = {canonicalize_name(r.name): r for r in map(Requirement, tomllib.loads(
        (REPO / "pyproject.toml").read_text())["project"]["dependencies"])}
    pinned = {canonicalize_name(w.requirement.split("==")[0]): w.requirement.split("==")[1] for w in gpu_bundle.BUNDLE}
    for name in ("trl", "datasets", "hydra-core", "antlr4-python3-runtime", "submitit"):
        assert wanted[name].specifier.contains(pinned[name]), name
    assert pinned["trl"] == gpu_check.cpu_pins()["trl"]
    assert not set(pinned) & {canonicalize_name(n) for n in gpu_bundle.IMAGE}  # nothing of the image is replaced


def image_view(dest: Path) -> Path:
    """Links to this environment's copies of the GPU image's packages and their dependencies, and nothing
    else: with `python -S` and this folder on the path, Python sees what the image holds."""
    from importlib.metadata import distribution

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    dest.mkdir()
    seen, todo = set(), list(gpu_bundle.IMAGE)
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        seen.add(name)
        dist = distribution(name)
        todo += [r.name for r in map(Requirement, dist.requires or []) if not r.marker or r.marker.evaluate({"extra": ""})]
        assert dist.files, f"{name} lists no files"
        site = Path(dist.locate_file(""))
        for top in {f.parts[0] for f in dist.files if f.parts[0] != ".."}:
            if not (dest / top).exists():
                (dest / top).symlink_to(site / top)
    return dest


@pytest.mark.slow
def test_the_bundle_installs_offline_and_with_the_image_alone_the_checks_without_vllm_import_and_train(
        tmp_path, tiny_model_path):
    """The bundle for this Python (the recipe make gpu-wheels uses for the image's 3.12), without the
    testbed model, from the package index; then everything else offline."""
    bundle = tmp_path / "wheels"
    manifest = gpu_bundle.download(bundle, f"{sys.version_info.major}.{sys.version_info.minor}", testbed=False)
    assert manifest["total_bytes"] <= gpu_bundle.LIMIT_BYTES
    env = gpu_bundle.install(bundle, tmp_path / "site", tmp_path / "cache")
    view = image_view(tmp_path / "image")

    def python(*args: str, bundle_on_path: bool = True, timeout: int = 300) -> subprocess.CompletedProcess:
        path = [str(view), *([env["PYTHONPATH"]] if bundle_on_path else [str(REPO)])]
        return subprocess.run([sys.executable, "-S", *args], cwd=tmp_path, capture_output=True, text=True,
                              timeout=timeout, env={"PATH": os.environ["PATH"], "PYTHONPATH": os.pathsep.join(path),
                                                    "ABCX_CACHE": os.environ["ABCX_CACHE"], "WANDB_MODE": "disabled",
                                                    "HOME": str(tmp_path)})

    imports = ("import abcx.cli, abcx.training.train, abcx.training.trainer, abcx.training.logprobs, abcx.record, abcx.testbed, trl.kernels, "
               "gpu_check, gpu_bundle, bench_head_roofline; print(gpu_bundle.unmet_requirements())")
    without = python("-c", f"import sys; sys.path.insert(0, {str(REPO / 'bench')!r}); {imports}", bundle_on_path=False)
    assert without.returncode and "ModuleNotFoundError" in without.stderr  # the image alone lacks them
    with_bundle = python("-c", f"import sys; sys.path.insert(0, {str(REPO / 'bench')!r}); {imports}")
    assert with_bundle.returncode == 0, with_bundle.stderr[-2000:]
    plan = python(str(SCRIPT), "--dry-run")
    assert plan.returncode == 0 and "3 run here, 2 not run" in plan.stdout, plan.stderr[-2000:]
    run = python("-m", "abcx.cli", "train", *gpu_check.TESTBED, "method=abc_grpo", "train.max_steps=2",
                 "train.save_steps=1000", "train.per_device_train_batch_size=16", "train.steps_per_generation=2",
                 f"results_dir={tmp_path / 'results'}")
    assert run.returncode == 0, run.stderr[-2000:]
    assert "finished at step 2" in run.stdout


def test_a_bundle_for_another_python_is_refused_in_one_line(tmp_path):
    (tmp_path / "wheels").mkdir()
    (tmp_path / "wheels" / gpu_bundle.MANIFEST).write_text('{"python_version": "2.7", "wheels": [], "testbed": null}')
    with pytest.raises(SystemExit) as err:
        gpu_bundle.install(tmp_path / "wheels", tmp_path / "site", tmp_path / "cache")
    here = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert str(err.value) == (f"{tmp_path / 'wheels'} holds wheels for Python 2.7, this is Python {here}; rebuild "
                              f"it with make gpu-wheels GPU_PYVER={here}")
    assert not (tmp_path / "site").exists()
