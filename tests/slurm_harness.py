"""Real SLURM clusters for tests, as pytest fixtures.

`slurm_cluster` runs slurm/cluster_up.sh once per test session, points SLURM_CONF at the generated
config, and stops the cluster at the end (unless it was already up before the session, or
ABCX_SLURM_KEEP=1). Where SLURM cannot be had (not root, no apt-get) the tests are skipped -- except
under CI=true, where a missing cluster is a failure: CI must run them.

`multi_node_cluster` (module scope) is a second cluster of MULTINODE_NODES compute nodes, each slurmd
in a network namespace of its own on a bridge (cluster_up.sh with ABCX_SLURM_NODES), with its own
state dir and ports, so it runs beside the single-node one; SLURM_CONF points at it while the module
runs. A namespace that cannot be created skips its tests, and fails them under CI=true, saying why.

Knobs: ABCX_SLURM_STATE_DIR (default /tmp/abcx-slurm; the multi-node cluster uses <it>-multinode),
ABCX_SLURM_PORT_BASE (the multi-node cluster uses <it>+4), ABCX_SLURM_KEEP=1 (leave clusters running
for the next session; starting takes ~3 s, installing ~15 s), and those of cluster_up.sh itself.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
CLUSTER_UP = REPO_ROOT / "slurm" / "cluster_up.sh"
CLUSTER_DOWN = REPO_ROOT / "slurm" / "cluster_down.sh"
DEFAULT_STATE_DIR = "/tmp/abcx-slurm"
DEFAULT_PORT_BASE = 16817
MULTINODE_NODES = 2
CANNOT_RUN_HERE = 3  # cluster_up.sh's exit code for "no root / no apt / packages unavailable"

# States after which a job never changes again (array parents and steps aside).
TERMINAL_STATES = frozenset(
    {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED",
     "BOOT_FAIL", "DEADLINE"}
)


@dataclass
class SlurmCluster:
    """A running test cluster: `env` holds what a client needs (SLURM_CONF), merged into os.environ."""

    state_dir: Path
    env: dict[str, str]
    accounting: bool
    reused: bool = False
    partition: str = "debug"
    job_env_setup: list[str] = field(default_factory=list)
    nodes: int = 1
    netns: list[str] = field(default_factory=list)  # node i's network namespace (multi-node only)

    def run(self, *argv: str, check: bool = True, timeout: float = 30) -> str:
        """Run a SLURM client command (sbatch, scontrol, sacct, ...) against this cluster; stdout."""
        proc = subprocess.run(
            argv, env={**os.environ, **self.env}, capture_output=True, text=True, timeout=timeout
        )
        if check and proc.returncode != 0:
            raise RuntimeError(f"{shlex.join(argv)} exited {proc.returncode}: {proc.stderr.strip()}")
        return proc.stdout

    def job_state(self, job_id: str) -> str | None:
        return job_state(job_id, env={**os.environ, **self.env})

    def wait_for_state(self, job_id: str, states, timeout: float = 60) -> str:
        return wait_for_state(job_id, states, timeout, env={**os.environ, **self.env})

    def executor(self, folder, **parameters):
        """A submitit executor for this cluster whose jobs can import the repo and tests/ modules.

        submitit unpickles the submitted callable in the job, so its module must be importable
        there; jobs inherit the environment, but PYTHONPATH is set explicitly so that neither the
        submitting process's cwd nor pytest's import mode matters.
        """
        import submitit  # lazy: heavy-ish and only needed by SLURM tests

        ex = submitit.AutoExecutor(folder=folder, cluster="slurm")
        defaults = {
            "slurm_partition": self.partition,
            "timeout_min": 10,
            "cpus_per_task": 1,
            "mem_gb": 1,
            "slurm_setup": list(self.job_env_setup),
        }
        ex.update_parameters(**{**defaults, **parameters})
        return ex


    def node_names(self) -> list[str]:
        return self.run("sinfo", "-h", "-N", "-p", self.partition, "-o", "%N").split()

    def kill_job_on_node(self, job_id: str, node: int) -> list[int]:
        """SIGKILL every process of job `job_id` on node `node` (0-based; multi-node only): the
        job's step dies there as if the node were lost, its slurmd stays. Returns the pids killed."""
        netns = Path("/run/netns") / self.netns[node]
        want = os.stat(netns).st_ino
        killed = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                if os.stat(proc / "ns" / "net").st_ino != want or (proc / "comm").read_text().strip() == "slurmstepd":
                    continue
                environ = (proc / "environ").read_bytes().split(b"\0")
            except OSError:  # gone meanwhile, or a kernel thread
                continue
            if f"SLURM_JOB_ID={job_id}".encode() in environ:
                try:
                    os.kill(int(proc.name), 9)
                    killed.append(int(proc.name))
                except ProcessLookupError:
                    pass
        return killed


def _slurm_env(env: dict | None) -> dict:
    return dict(os.environ if env is None else env)


def job_state(job_id: str, env: dict | None = None) -> str | None:
    """The job's current state ("PENDING", "RUNNING", "COMPLETED", ...), or None if SLURM forgot it.

    squeue first (live, also finished jobs for MinJobAge); sacct when squeue no longer knows it.
    For an array parent id the state of the first task listed is returned.
    """
    env = _slurm_env(env)
    proc = subprocess.run(
        ["squeue", "-h", "-t", "all", "-j", str(job_id), "-o", "%T"],
        env=env, capture_output=True, text=True, timeout=30,
    )
    lines = proc.stdout.split()
    if proc.returncode == 0 and lines:
        return lines[0]
    proc = subprocess.run(
        ["sacct", "-n", "-X", "-P", "-j", str(job_id), "-o", "State"],
        env=env, capture_output=True, text=True, timeout=30,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    if proc.returncode == 0 and lines:
        return lines[-1].split()[0]  # "CANCELLED by 0" -> "CANCELLED"
    return None


def wait_for_state(job_id: str, states, timeout: float = 60, env: dict | None = None) -> str:
    """Poll until the job is in one of `states` (a str or iterable of str); return that state.

    Raises TimeoutError naming the last state seen, and AssertionError if the job reaches a
    terminal state that was not asked for (waiting longer could never succeed).
    """
    wanted = {states} if isinstance(states, str) else set(states)
    deadline = time.monotonic() + timeout
    state = None
    while True:
        state = job_state(job_id, env)
        if state in wanted:
            return state
        if state in TERMINAL_STATES:
            raise AssertionError(f"job {job_id} ended {state}, waited for {sorted(wanted)}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} not in {sorted(wanted)} after {timeout} s (last: {state})")
        time.sleep(0.5)


def job_result(job, timeout: float = 120, all_tasks: bool = False):
    """`job.result()` of a submitit job (`job.results()`, one per task, with all_tasks), but failing
    after `timeout` s instead of waiting forever.

    On timeout the job is cancelled and the error shows its SLURM state and the tail of its log.
    """
    deadline = time.monotonic() + timeout
    while not job.done():
        if time.monotonic() > deadline:
            state = job_state(job.job_id)
            try:
                log = (job.stderr() or "")[-2000:]
            except OSError:
                log = ""
            job.cancel(check=False)
            raise TimeoutError(f"job {job.job_id} not done after {timeout} s (state {state}); stderr tail:\n{log}")
        time.sleep(0.5)
    return job.results() if all_tasks else job.result()


def _unavailable(reason: str):
    # CI must exercise SLURM: there a missing cluster is a failure, not a skip.
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"SLURM test cluster unavailable under CI=true: {reason}", pytrace=False)
    pytest.skip(f"SLURM test cluster unavailable: {reason}")


def _parse_exports(stdout: str) -> dict[str, str]:
    env = {}
    for line in stdout.splitlines():
        if line.startswith("export ") and "=" in line:
            key, _, value = line[len("export "):].partition("=")
            env[key.strip()] = value.strip()
    return env


def start_cluster(state_dir: str | os.PathLike | None = None, *, nodes: int = 1,
                  port_base: int | None = None) -> SlurmCluster:
    """Start (or reuse) the cluster; raises pytest skip/fail when SLURM cannot run here."""
    state_dir = Path(state_dir or os.environ.get("ABCX_SLURM_STATE_DIR") or DEFAULT_STATE_DIR)
    if sys.platform != "linux":
        _unavailable(f"needs Linux, this is {sys.platform}")
    if os.geteuid() != 0 and not _already_up(state_dir):
        what = "network namespaces and " if nodes > 1 else ""
        _unavailable(f"needs root to create {what}install and run the SLURM daemons (cluster_up.sh)")
    env = {**os.environ, "ABCX_SLURM_NODES": str(nodes)}
    if port_base is not None:
        env["ABCX_SLURM_PORT_BASE"] = str(port_base)
    proc = subprocess.run(
        ["bash", str(CLUSTER_UP), str(state_dir)], capture_output=True, text=True, timeout=900, env=env
    )
    if proc.returncode and nodes > 1:
        # A half-built multi-node cluster holds namespaces and a bridge: remove them now.
        subprocess.run(["bash", str(CLUSTER_DOWN), str(state_dir)], capture_output=True, timeout=120)
    if proc.returncode == CANNOT_RUN_HERE:
        _unavailable(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "cluster_up.sh exit 3")
    if proc.returncode != 0:
        # Root and apt are there, so this is a real failure of the cluster scripts: never skip it.
        pytest.fail(
            f"slurm/cluster_up.sh {state_dir} exited {proc.returncode}:\n{proc.stderr[-4000:]}", pytrace=False
        )
    exports = _parse_exports(proc.stdout)
    pythonpath = f"{REPO_ROOT}:{REPO_ROOT / 'tests'}"
    return SlurmCluster(
        state_dir=state_dir,
        env={"SLURM_CONF": exports["SLURM_CONF"]},
        accounting=exports.get("ABCX_SLURM_ACCOUNTING") == "1",
        reused=exports.get("ABCX_SLURM_REUSED") == "1",
        job_env_setup=[f"export PYTHONPATH={shlex.quote(pythonpath)}${{PYTHONPATH:+:$PYTHONPATH}}"],
        nodes=int(exports.get("ABCX_SLURM_NODES") or 1),
        netns=[n for n in exports.get("ABCX_SLURM_NETNS", "").split(",") if n],
    )


def _already_up(state_dir: Path) -> bool:
    conf = state_dir / "etc" / "slurm.conf"
    if not conf.exists():
        return False
    try:
        out = subprocess.run(
            ["scontrol", "ping"], env={**os.environ, "SLURM_CONF": str(conf)},
            capture_output=True, text=True, timeout=10,
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "is UP" in out


def stop_cluster(cluster: SlurmCluster) -> None:
    subprocess.run(["bash", str(CLUSTER_DOWN), str(cluster.state_dir)], capture_output=True, timeout=120)


@contextmanager
def _serving(cluster: SlurmCluster):
    """SLURM_CONF points at `cluster` while the block runs; the cluster is stopped after it unless it
    was up before or ABCX_SLURM_KEEP=1."""
    saved = {k: os.environ.get(k) for k in cluster.env}
    os.environ.update(cluster.env)
    try:
        yield cluster
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        # Leave alone a cluster this session did not start (a developer's, or another worker's).
        if not cluster.reused and os.environ.get("ABCX_SLURM_KEEP") != "1":
            stop_cluster(cluster)


@pytest.fixture(scope="session")
def slurm_cluster():
    """The session's SLURM cluster; SLURM_CONF is set in os.environ while it lives."""
    with _serving(start_cluster()) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def multi_node_cluster():
    """A MULTINODE_NODES-node cluster (one network namespace per node) for one test module; SLURM_CONF
    points at it during the module, and back at whatever it was (the single-node cluster) after."""
    base = os.environ.get("ABCX_SLURM_STATE_DIR") or DEFAULT_STATE_DIR
    port_base = int(os.environ.get("ABCX_SLURM_PORT_BASE") or DEFAULT_PORT_BASE) + 4
    cluster = start_cluster(f"{base}-multinode", nodes=MULTINODE_NODES, port_base=port_base)
    if cluster.nodes != MULTINODE_NODES or len(cluster.netns) != MULTINODE_NODES:
        pytest.fail(f"cluster_up.sh started {cluster.nodes} node(s) in namespaces {cluster.netns}, "
                    f"not {MULTINODE_NODES}", pytrace=False)
    with _serving(cluster):
        yield cluster
