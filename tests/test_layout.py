"""The vLLM-server layout of a multi-node SLURM job (abcx/launch/layout.py, profile option `vllm_server`):
one allocation whose last node(s) run `trl vllm-serve` while the others train with vllm_mode=server,
as `abcx sweep run --dry-run` prints it; bad profiles and points are one line before anything is
written. The real run needs GPUs (vLLM); this is what can be checked on CPU."""
from __future__ import annotations

from pathlib import Path

import pytest

from abcx.config.compose import compose

from abcx.config.identity import run_id
from abcx.errors import UserError
from abcx.launch import layout as LY
from abcx.launch import rendezvous as R
from abcx.sweep import command

SERVER_POINT = ["launcher=slurm", "train.use_vllm=true", "train.vllm_mode=server", "method=grpo",
                "model=qwen3_4b_base"]


def profile(tmp_path: Path, text: str) -> str:
    path = tmp_path / "cluster.yaml"
    path.write_text("partition: gpu\ntime_min: 60\ngpus_per_node: 8\n" + text)
    return str(path)


# Distinct values everywhere, so a swapped mapping fails.
FOUR_NODES = """nodes: 4
vllm_server:
  nodes: 2
  port: 8123
  tensor_parallel_size: 4
  data_parallel_size: 2
  gpu_memory_utilization: 0.85
"""


def dry_run(tmp_path: Path, overrides: list[str]) -> tuple[int, str]:
    lines: list[str] = []
    code = command.sweep_run("smoke", [*overrides, f"results_dir={tmp_path / 'results'}"], dry_run=True,
                             out=lines.append)
    return code, "\n".join(lines)


def test_the_dry_run_prints_which_nodes_train_and_which_serve_and_how_the_trainer_finds_the_server(tmp_path):
    code, out = dry_run(tmp_path, [*SERVER_POINT, f"launcher.profile={profile(tmp_path, FOUR_NODES)}",
                                   "launcher.num_processes=16"])
    assert code == 0, out
    assert "job layout: 4 node(s) x 8 GPU(s) in one allocation; nodes 0-1 train (16 process(es)" in out
    assert ("nodes 2-3 serve generation: trl vllm-serve --model Qwen/Qwen3-4B-Base --host 0.0.0.0 --port 8123 "
            "--tensor-parallel-size 4 --data-parallel-size 2 --gpu-memory-utilization 0.85") in out
    assert "vllm_server_host=<host of node 2> vllm_server_port=8123" in out
    assert not (tmp_path / "results").exists()  # a dry run writes nothing


def test_the_example_profile_splits_three_nodes_into_two_training_and_one_serving(tmp_path):
    code, out = dry_run(tmp_path, [*SERVER_POINT, "launcher.profile=example_gpu_vllm_server",
                                   "launcher.num_processes=16"])
    assert code == 0, out
    assert "3 node(s) x 8 GPU(s) in one allocation; nodes 0-1 train" in out and "node 2 serve generation" in out


def test_a_profile_without_vllm_server_prints_no_server_and_single_node_points_no_layout(tmp_path):
    code, out = dry_run(tmp_path, ["launcher=slurm", f"launcher.profile={profile(tmp_path, 'nodes: 2')}",
                                   "launcher.num_processes=16", "method=grpo"])
    assert "job layout: 2 node(s) x 8 GPU(s) in one allocation; nodes 0-1 train" in out and "vllm-serve" not in out
    code, out = dry_run(tmp_path, ["launcher=slurm", "launcher.profile=local", "method=grpo"])
    assert code == 0 and "job layout" not in out


@pytest.mark.parametrize("extra, text, message", [
    (["launcher=slurm", "method=grpo"], FOUR_NODES, "reserves 2 node(s) for a vLLM server: set train.use_vllm=true train.vllm_mode=server"),
    (SERVER_POINT, "nodes: 2\nvllm_server:\n  nodes: 2\n", "vllm_server.nodes=2 leaves no node to train on of nodes=2"),
    (SERVER_POINT, "nodes: 2\nvllm_server:\n  gpus: 8\n", "vllm_server.gpus is unknown; valid: nodes, port,"),
    (SERVER_POINT, "nodes: 2\nvllm_server:\n  port: http\n", "vllm_server.port='http' is not a int"),
])
def test_a_server_layout_the_point_cannot_use_is_one_line_before_anything_is_written(tmp_path, extra, text, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")) as err:
        command.sweep_run("smoke", [*extra, f"launcher.profile={profile(tmp_path, text)}",
                                    f"results_dir={tmp_path / 'results'}"], out=lambda line: None)
    assert "\n" not in str(err.value)
    assert not (tmp_path / "results").exists()


def test_in_the_job_the_last_nodes_serve_the_first_train_and_only_they_meet(tmp_path):
    cfg = compose([*SERVER_POINT, f"launcher.profile={profile(tmp_path, FOUR_NODES)}", "launcher.num_processes=16"])
    lay = LY.for_config(cfg)
    assert [lay.role(r) for r in range(4)] == ["train", "train", "vllm-serve", "vllm-serve"]
    assert lay.server_host(R.expand_nodelist("gpu[11-14]")) == "gpu13"
    env = {"SLURM_JOB_ID": "7", "SLURM_JOB_NUM_NODES": "4", "SLURM_NTASKS": "4", "SLURM_NODEID": "0",
           "SLURM_JOB_NODELIST": "gpu[11-14]"}
    rdzv = R.from_slurm(env, tmp_path, num_processes=16, train_nodes=lay.train_nodes)
    assert (rdzv.num_machines, rdzv.main_host) == (2, "gpu11")  # 8 processes on each training node
    with pytest.raises(UserError, match="num_processes=15 does not divide over 2 training nodes"):
        R.from_slurm({**env, "SLURM_JOB_ID": "8"}, tmp_path, num_processes=15, train_nodes=2)


def test_the_trainer_is_pointed_at_the_server_without_changing_the_run_id(tmp_path, monkeypatch):
    from abcx.config.trl_args import trainer_kwargs

    cfg = compose([*SERVER_POINT, f"launcher.profile={profile(tmp_path, FOUR_NODES)}"])
    before = run_id(cfg)
    monkeypatch.setenv(LY.HOST_ENV, "gpu13")
    monkeypatch.setenv(LY.PORT_ENV, "8123")
    kwargs = trainer_kwargs(cfg, str(tmp_path), report_to=[], on_gpu=False, run_name="x")
    assert (kwargs["vllm_mode"], kwargs["vllm_server_host"], kwargs["vllm_server_port"]) == ("server", "gpu13", 8123)
    assert run_id(compose([*SERVER_POINT, f"launcher.profile={profile(tmp_path, FOUR_NODES)}"])) == before
