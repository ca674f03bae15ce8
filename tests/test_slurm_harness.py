"""What the local SLURM test cluster must do for abcx's SLURM launcher, exercised through submitit.

The callables submitted below live at module level: submitit pickles them by reference and the
job imports this module again (the harness puts the repo and tests/ on the job's PYTHONPATH).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import submitit
import yaml

from tests.slurm_harness import REPO_ROOT, job_result

PROFILES = REPO_ROOT / "slurm" / "profiles"
PROFILE_KEYS = {
    "partition", "account", "qos", "time_min", "gpus_per_node", "cpus_per_task", "mem_gb", "constraint",
    "nodes", "array_parallelism", "additional_parameters", "setup", "resources_by_model", "signal_delay_s",
}


def slurm(test):
    """Needs the local cluster; bounded so a stuck job fails the test instead of hanging the suite."""
    return pytest.mark.slurm(pytest.mark.timeout(180)(test))


# ---------------------------------------------------------------- job bodies (run on the cluster)

def add(a: int, b: int) -> int:
    return a + b


def square(x: int) -> int:
    return x * x


def explode(message: str) -> None:
    raise ValueError(message)


def sleep_then_return(seconds: float, started: str) -> str:
    Path(started).write_text("started")
    time.sleep(seconds)
    return "slept"


def _record_attempt(marker: str, line: str) -> int:
    """Append a line per attempt; return how many attempts have started, this one included."""
    with open(marker, "a") as f:
        f.write(line + "\n")
    return len(Path(marker).read_text().splitlines())


class RunsTwice(submitit.helpers.Checkpointable):
    """Blocks on its first attempt (waiting to be requeued), returns the attempt number after."""

    def __call__(self, marker: str) -> int:
        attempt = _record_attempt(marker, "attempt")
        if attempt == 1:
            time.sleep(120)
        return attempt


class ResumesFromCheckpoint(submitit.helpers.Checkpointable):
    """Blocks until preempted; its checkpoint resubmits itself with resumed=True."""

    def __call__(self, marker: str, resumed: bool = False) -> str:
        _record_attempt(marker, f"resumed={resumed}")
        if not resumed:
            time.sleep(120)
        return "resumed from checkpoint" if resumed else "ran without interruption"

    def checkpoint(self, marker: str, resumed: bool = False):
        return submitit.helpers.DelayedSubmission(self, marker, resumed=True)


def _wait_for_file(path: Path, lines: int = 1, timeout: float = 60) -> None:
    # The job's Python has really started (not just the SLURM allocation) once it writes here.
    deadline = time.monotonic() + timeout
    while not (path.exists() and len(path.read_text().splitlines()) >= lines):
        assert time.monotonic() < deadline, f"{path} never got {lines} line(s)"
        time.sleep(0.3)


# ---------------------------------------------------------------- profiles

@pytest.mark.parametrize("name", ["local.yaml", "example_gpu_cluster.yaml"])
def test_a_profile_uses_exactly_the_launcher_keys_and_overrides_only_those(name):
    profile = yaml.safe_load((PROFILES / name).read_text())
    assert set(profile) == PROFILE_KEYS
    assert isinstance(profile["additional_parameters"], dict)
    assert isinstance(profile["setup"], list) and all(isinstance(line, str) for line in profile["setup"])
    for model, overrides in profile["resources_by_model"].items():
        assert set(overrides) <= PROFILE_KEYS - {"resources_by_model"}, f"{name}: {model} overrides unknown keys"


def test_the_gpu_example_gives_the_larger_model_more_gpus_and_time():
    by_model = yaml.safe_load((PROFILES / "example_gpu_cluster.yaml").read_text())["resources_by_model"]
    small, large = by_model["1.7b"], by_model["4b"]
    assert large["gpus_per_node"] > small["gpus_per_node"]
    assert large["time_min"] > small["time_min"]


# ---------------------------------------------------------------- the cluster, through submitit

@slurm
def test_the_node_is_up_and_the_debug_partition_is_the_default(slurm_cluster):
    out = slurm_cluster.run("sinfo", "-h", "-o", "%P %a %l")
    assert "debug* up infinite" in out.splitlines()
    states = set(slurm_cluster.run("sinfo", "-h", "-N", "-o", "%T").split())
    assert states <= {"idle", "mixed", "allocated"}, f"node not usable: {states}"


@slurm
def test_a_submitted_job_returns_its_result(slurm_cluster, tmp_path):
    job = slurm_cluster.executor(tmp_path).submit(add, 2, 3)
    assert job_result(job, 120) == 5
    assert slurm_cluster.wait_for_state(job.job_id, "COMPLETED", timeout=30) == "COMPLETED"


@slurm
def test_a_job_array_of_three_returns_three_results_in_order(slurm_cluster, tmp_path):
    executor = slurm_cluster.executor(tmp_path, slurm_array_parallelism=3)
    jobs = executor.map_array(square, [1, 2, 3])
    assert len({job.job_id.split("_")[0] for job in jobs}) == 1, "one SLURM array, not 3 jobs"
    assert [job_result(job, 120) for job in jobs] == [1, 4, 9]


@slurm
def test_a_failing_job_raises_with_its_remote_traceback(slurm_cluster, tmp_path):
    job = slurm_cluster.executor(tmp_path).submit(explode, "boom from the job")
    with pytest.raises(submitit.core.utils.FailedJobError) as excinfo:
        job_result(job, 120)
    message = str(excinfo.value)
    assert "ValueError: boom from the job" in message
    assert "in explode" in message, "the traceback from inside the job is shown"


@slurm
def test_cancel_ends_a_running_job_as_cancelled(slurm_cluster, tmp_path):
    started = tmp_path / "started"
    job = slurm_cluster.executor(tmp_path).submit(sleep_then_return, 120, str(started))
    _wait_for_file(started)
    assert slurm_cluster.job_state(job.job_id) == "RUNNING"
    job.cancel()  # scancel <id>
    assert slurm_cluster.wait_for_state(job.job_id, "CANCELLED", timeout=60) == "CANCELLED"


@slurm
def test_sacct_shows_a_finished_job_with_its_elapsed_time(slurm_cluster, tmp_path):
    if not slurm_cluster.accounting:
        pytest.skip("cluster started without accounting (MariaDB/slurmdbd unavailable): no sacct")
    job = slurm_cluster.executor(tmp_path).submit(sleep_then_return, 2, str(tmp_path / "started"))
    assert job_result(job, 120) == "slept"
    # slurmctld forwards job records to slurmdbd asynchronously: poll briefly.
    deadline = time.monotonic() + 30
    while True:
        out = slurm_cluster.run("sacct", "-n", "-X", "-P", "-j", job.job_id, "-o", "JobID,State,Elapsed,ExitCode")
        rows = [line.split("|") for line in out.splitlines() if line.strip()]
        if rows and rows[0][1] == "COMPLETED":
            break
        assert time.monotonic() < deadline, f"sacct never showed job {job.job_id} COMPLETED: {out!r}"
        time.sleep(0.5)
    job_id, state, elapsed, exit_code = rows[0]
    assert (job_id, exit_code) == (job.job_id, "0:0")
    h, m, s = (int(part) for part in elapsed.split(":"))
    assert 2 <= h * 3600 + m * 60 + s < 120, f"elapsed {elapsed} should cover the 2 s sleep"


@slurm
def test_scontrol_requeue_reruns_a_running_checkpointable_job(slurm_cluster, tmp_path):
    marker = tmp_path / "attempts.txt"
    job = slurm_cluster.executor(tmp_path).submit(RunsTwice(), str(marker))
    _wait_for_file(marker, lines=1)
    slurm_cluster.run("scontrol", "requeue", job.job_id)
    assert job_result(job, 150) == 2, "the requeued job ran a second time and finished"
    restarts = slurm_cluster.run("scontrol", "show", "job", job.job_id)
    assert "Restarts=1" in restarts


@slurm
def test_a_preempted_checkpointable_job_resumes_from_its_checkpoint(slurm_cluster, tmp_path):
    # submitit's _interrupt() is what SLURM does on preemption: SIGTERM then the --signal USR2,
    # delivered to the job step; submitit then checkpoints and requeues the job itself.
    marker = tmp_path / "attempts.txt"
    job = slurm_cluster.executor(tmp_path).submit(ResumesFromCheckpoint(), str(marker))
    _wait_for_file(marker, lines=1)
    job._interrupt()
    assert job_result(job, 150) == "resumed from checkpoint"
    assert marker.read_text().splitlines() == ["resumed=False", "resumed=True"]


@slurm
def test_a_higher_priority_partition_preempts_and_requeues_a_debug_job(slurm_cluster, tmp_path):
    cpus = int(slurm_cluster.run("sinfo", "-h", "-N", "-o", "%c").split()[0])
    marker = tmp_path / "attempts.txt"
    victim = slurm_cluster.executor(tmp_path / "victim", cpus_per_task=cpus).submit(RunsTwice(), str(marker))
    _wait_for_file(marker, lines=1)
    urgent = slurm_cluster.executor(tmp_path / "urgent", slurm_partition="preempt", cpus_per_task=cpus).submit(add, 1, 1)
    assert job_result(urgent, 120) == 2
    assert job_result(victim, 150) == 2, "the preempted job was requeued and ran again"


@slurm
def test_a_job_with_the_local_profile_resources_runs_on_the_test_cluster(slurm_cluster, tmp_path):
    profile = yaml.safe_load((PROFILES / "local.yaml").read_text())
    executor = slurm_cluster.executor(
        tmp_path,
        slurm_partition=profile["partition"],
        timeout_min=profile["time_min"],
        cpus_per_task=profile["cpus_per_task"],
        mem_gb=profile["mem_gb"],
        nodes=profile["nodes"],
        gpus_per_node=profile["gpus_per_node"] or None,
        slurm_additional_parameters=profile["additional_parameters"],
        slurm_setup=slurm_cluster.job_env_setup + profile["setup"],
    )
    assert job_result(executor.submit(add, 20, 22), 120) == 42
