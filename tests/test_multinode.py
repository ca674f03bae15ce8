"""Multi-node training on a real multi-node SLURM cluster: two compute nodes on this machine, each slurmd
in a network namespace of its own on a bridge (tests/slurm_harness.py `multi_node_cluster`), jobs
submitted through submitit with nodes=2. Each node's task starts its part through `accelerate launch`
with the rendezvous read from SLURM (abcx/launch/rendezvous.py), over gloo between the namespaces."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from abcx.record import RunRecord, read_jsonl
from abcx.sweep import command, manifest
from tests.slurm_harness import DEFAULT_PORT_BASE, job_result, multi_node_cluster, start_cluster, stop_cluster  # noqa: F401
from tests.helpers import call, wait_until

pytestmark = [pytest.mark.slurm, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[1]
TWO_NODES = ["launcher=slurm", "launcher.profile=local_2nodes", "launcher.num_processes=2",
             "launcher.accelerate_config=cpu", "method=grpo"]
# Steps that take the same short time whatever the default task: what is tested is the record, not learning.
QUICK_STEPS = ["train.per_device_train_batch_size=16", "train.max_completion_length=16"]


def test_each_node_is_a_host_of_its_own_and_the_harness_removes_what_it_made(multi_node_cluster, tmp_path):
    """Every node has its own name and address and reaches the others; a cluster stopped by the
    harness leaves no namespace, bridge or veth behind (checked on a second, throwaway cluster)."""
    out = multi_node_cluster.run("srun", "-N2", "-n2", "-l", "bash", "-c",
                                 "echo $(hostname) $(hostname -i) $(getent hosts n1 n2 | wc -l)", timeout=60)
    rows = sorted(line.split(": ", 1)[1].split() for line in out.strip().splitlines())
    names = multi_node_cluster.node_names()
    assert [r[0] for r in rows] == names and len({r[1] for r in rows}) == 2 and all(r[2] == "2" for r in rows)
    port_base = int(os.environ.get("ABCX_SLURM_PORT_BASE") or DEFAULT_PORT_BASE) + 8
    spare = start_cluster(tmp_path / "spare", nodes=2, port_base=port_base)
    made = set(spare.netns) | {f"abcx{port_base}br", f"abcx{port_base}h1", f"abcx{port_base}h2"}
    assert set(spare.netns) <= set(_netns()) and len(spare.netns) == 2
    stop_cluster(spare)
    assert not made & (set(_netns()) | set(_links()))


def _netns() -> list[str]:
    return [line.split()[0] for line in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.splitlines()]


def _links() -> list[str]:
    out = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True).stdout
    return [line.split()[0].split("@")[0] for line in out.splitlines()]


def launch_on_each_node(script: str, out: str) -> dict:
    """Runs in each task of the 2-node job: this node's part of `script` under accelerate."""
    from abcx.launch.job import accelerate_prefix, job_rendezvous

    rdzv = job_rendezvous(2)
    proc = subprocess.run([*accelerate_prefix(2, "cpu", rdzv), script, out], capture_output=True, text=True)
    return {"rendezvous": rdzv, "returncode": proc.returncode, "stderr": proc.stderr[-3000:]}


def test_across_two_nodes_loss_gradients_and_quadrant_fractions_equal_the_single_process_run(
        multi_node_cluster, tmp_path):
    """One batch of 16 sequences: split over two nodes (8 each), the data-parallel average of the
    `grpo` preset's loss and gradients equals one process scoring all 16, and the quadrant
    fractions each node logs are those of all 16 (global), not of its own half."""
    script = str(REPO / "tests" / "scripts" / "data_parallel_loss.py")
    nodes_out, single_out = tmp_path / "two_nodes", tmp_path / "single"
    nodes_out.mkdir()
    single_out.mkdir()
    executor = multi_node_cluster.executor(tmp_path / "jobs", nodes=2, tasks_per_node=1, cpus_per_task=1)
    job = executor.submit(launch_on_each_node, script, str(nodes_out))
    # The reference runs here meanwhile: one process, no accelerate, the whole batch.
    single = subprocess.run([sys.executable, script, str(single_out)], cwd=REPO, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    tasks = job_result(job, timeout=300, all_tasks=True)
    assert [t["rendezvous"].machine_rank for t in tasks] == [0, 1]
    assert all(t["returncode"] == 0 for t in tasks), [t["stderr"] for t in tasks]
    assert tasks[0]["rendezvous"].main_host == tasks[1]["rendezvous"].main_host == multi_node_cluster.node_names()[0]

    import torch

    ref = torch.load(single_out / "rank0.pt")
    ranks = [torch.load(nodes_out / f"rank{r}.pt") for r in (0, 1)]
    assert ref["world"] == 1 and [r["world"] for r in ranks] == [2, 2]
    assert ranks[0]["local_loss"] != ranks[1]["local_loss"]  # the nodes really scored different halves
    for r in ranks:
        assert abs(r["loss"] - ref["loss"]) <= 1e-6 * max(1.0, abs(ref["loss"]))
        assert len(r["grads"]) == len(ref["grads"]) > 0
        for mine, theirs in zip(r["grads"], ref["grads"]):
            assert torch.allclose(mine, theirs, atol=1e-7, rtol=1e-5)
        assert r["logged"].keys() == ref["logged"].keys() and "clip/q4" in ref["logged"]
        for key, value in ref["logged"].items():
            assert r["logged"][key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
    # Global, not local: each node's own half has other fractions than the whole batch.
    assert any(ranks[0]["local_fractions"][k] != ref["logged"][k] for k in ("clip/q1", "clip/q2", "clip/q3", "clip/q4"))


def the_run(results: Path) -> RunRecord:
    (entry,) = manifest.load(results, "smoke")["runs"]
    return RunRecord(results / "runs" / entry["run_id"])


def loss_steps(record: RunRecord) -> list[int]:
    return [r["step"] for r in read_jsonl(record.metrics_path) if "loss" in r]


def job_logs(results: Path, job_id: str) -> str:
    return "\n".join(p.read_text() for p in (results / "sweeps" / "smoke" / "jobs").glob(f"{job_id}*/*.err"))


def start_two_node_run(results: Path, steps: int) -> RunRecord:
    cli = [*TWO_NODES, f"results_dir={results}", f"train.max_steps={steps}", "train.save_steps=4", *QUICK_STEPS]
    code, out = call(command.sweep_run, "smoke", cli)
    assert code == 0, out
    record = the_run(results)
    wait_until(lambda: record.state() == "running" and record.latest_checkpoint() is not None, 240,
               "a checkpoint of the running 2-node job")
    assert record.status()["step"] < steps
    return record


def test_a_requeued_two_node_job_resumes_from_its_checkpoint_with_each_step_once(multi_node_cluster, tmp_path,
                                                                                tiny_model_path):
    results = tmp_path / "results"
    # The requeue's SIGTERM interrupts the trainer at once (train() turns it into a `cancelled` record
    # and exits), so the run needs only to outlast the step between the check and `scontrol requeue`.
    steps = 16
    record = start_two_node_run(results, steps)
    job_id = record.status()["job_id"]
    multi_node_cluster.run("scontrol", "requeue", job_id)
    wait_until(lambda: record.state() == "finished", 300, "the requeued 2-node run to finish")
    assert loss_steps(record) == list(range(1, steps + 1))
    assert record.meta()["world_size"] == 2 and record.meta()["attempts"] >= 2
    assert record.status()["job_id"] == job_id
    assert "resuming from checkpoint-" in job_logs(results, job_id)


def test_a_node_lost_mid_run_fails_the_run_clearly_and_a_resubmitted_sweep_resumes_it(multi_node_cluster, tmp_path,
                                                                                     tiny_model_path):
    results = tmp_path / "results"
    steps = 16
    record = start_two_node_run(results, steps)
    job_id = record.status()["job_id"]
    assert multi_node_cluster.kill_job_on_node(job_id, node=1), "no process of the job on the second node"
    wait_until(lambda: record.state() == "failed", 180, "the run to fail after losing a node")
    error = record.status()["error"]
    lost = multi_node_cluster.node_names()[1]
    assert error.startswith(f"lost contact with {lost} ") and "resume from the newest checkpoint" in error, error
    code, out = call(command.sweep_run, "smoke", [*TWO_NODES, f"results_dir={results}", f"train.max_steps={steps}",
                                                  "train.save_steps=4", *QUICK_STEPS], wait=True)
    assert code == 0, out
    assert record.state() == "finished"
    assert loss_steps(record) == list(range(1, steps + 1))
    assert record.status()["job_id"] != job_id and record.meta()["attempts"] >= 2
    assert "resuming from checkpoint-" in job_logs(results, record.status()["job_id"])
