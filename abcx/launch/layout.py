"""How one SLURM job's nodes are used: all of them training, or (profile option `vllm_server`) a split
inside one allocation where the last node(s) serve generation with `trl vllm-serve` and the others
train with TRL's `vllm_mode="server"` pointed at it -- the layout open-r1's slurm/train.slurm uses
for multi-node GRPO.

Profile (slurm/profiles/*.yaml, also under resources_by_model):

    nodes: 3                  # the whole allocation
    gpus_per_node: 8
    vllm_server:
      nodes: 1                # the last node(s) of the allocation run the server
      port: 8000
      tensor_parallel_size: 8 # trl vllm-serve's own options
      data_parallel_size: 1
      gpu_memory_utilization: 0.9

Node ranks 0 .. train_nodes-1 train (accelerate; rendezvous on node 0, abcx/launch/rendezvous.py;
launcher.num_processes counts their processes); the server's host is the first server node of
SLURM_JOB_NODELIST and its port the profile's, handed to the trainer through ABCX_VLLM_SERVER_HOST /
ABCX_VLLM_SERVER_PORT (volatile, so they never change the run id). The server stops when node 0
writes the job's "training done" file. A point of such a profile must set train.use_vllm=true and
train.vllm_mode=server; `abcx sweep run --dry-run` prints the layout (`describe`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from abcx.errors import UserError

SERVER_KEYS = {"nodes": int, "port": int, "tensor_parallel_size": int, "data_parallel_size": int,
               "gpu_memory_utilization": float}
SERVER_DEFAULTS = {"nodes": 1, "port": 8000, "tensor_parallel_size": 1, "data_parallel_size": 1,
                   "gpu_memory_utilization": 0.9}
HOST_ENV, PORT_ENV = "ABCX_VLLM_SERVER_HOST", "ABCX_VLLM_SERVER_PORT"


@dataclass(frozen=True)
class JobLayout:
    nodes: int  # the allocation
    server_nodes: int  # 0: every node trains
    gpus_per_node: int
    num_processes: int  # training processes over the training nodes
    server: Mapping[str, Any]

    @property
    def train_nodes(self) -> int:
        return self.nodes - self.server_nodes

    def role(self, node_rank: int) -> str:
        return "train" if node_rank < self.train_nodes else "vllm-serve"

    def server_host(self, hosts: list[str]) -> str:
        return hosts[self.train_nodes]

    def serve_command(self, model: str) -> list[str]:
        s = self.server
        return ["trl", "vllm-serve", "--model", model, "--host", "0.0.0.0", "--port", str(s["port"]),
                "--tensor-parallel-size", str(s["tensor_parallel_size"]),
                "--data-parallel-size", str(s["data_parallel_size"]),
                "--gpu-memory-utilization", str(s["gpu_memory_utilization"])]

    def describe(self, model: str) -> list[str]:
        """The layout in words, for `abcx sweep run --dry-run`."""
        gpus = f" x {self.gpus_per_node} GPU(s)" if self.gpus_per_node else ""
        train = _ranks(0, self.train_nodes)
        lines = [f"job layout: {self.nodes} node(s){gpus} in one allocation; {train} train "
                 f"({self.num_processes} process(es) under accelerate, rendezvous on node 0)"]
        if self.server_nodes:
            s = self.server
            lines += [f"  {_ranks(self.train_nodes, self.nodes)} serve generation: {' '.join(self.serve_command(model))}",
                      f"  trainer: use_vllm=true vllm_mode=server vllm_server_host=<host of node {self.train_nodes}> "
                      f"vllm_server_port={s['port']} (from SLURM_JOB_NODELIST at run time)"]
        return lines


def _ranks(lo: int, hi: int) -> str:
    return f"node {lo}" if hi - lo == 1 else f"nodes {lo}-{hi - 1}"


def from_resources(res: Mapping[str, Any], cfg: Any) -> JobLayout:
    """The layout of a point from its resource request (abcx.launch.profiles.resources) and config;
    a `vllm_server` the point cannot use is a one-line UserError naming what to change."""
    nodes = int(res.get("nodes") or 1)
    server = _server_options(res.get("vllm_server"), cfg.launcher.profile)
    server_nodes = server["nodes"] if server else 0
    if server and server_nodes >= nodes:
        raise UserError(f"launcher.profile={cfg.launcher.profile}: vllm_server.nodes={server_nodes} leaves no node "
                        f"to train on of nodes={nodes}; valid: 1 .. {nodes - 1}, or raise nodes")
    if server and not (cfg.train.use_vllm and cfg.train.vllm_mode == "server"):
        raise UserError(f"launcher.profile={cfg.launcher.profile} reserves {server_nodes} node(s) for a vLLM server: "
                        f"set train.use_vllm=true train.vllm_mode=server (or use a profile without vllm_server)")
    return JobLayout(nodes, server_nodes, int(res.get("gpus_per_node") or 0), int(cfg.launcher.num_processes),
                     server or {})


def _server_options(raw: Any, profile: str) -> dict | None:
    if raw in (None, False):
        return None
    if not isinstance(raw, Mapping):
        raise UserError(f"launcher.profile={profile}: vllm_server must be a mapping of {', '.join(SERVER_KEYS)}")
    unknown = sorted(set(raw) - set(SERVER_KEYS))
    if unknown:
        raise UserError(f"launcher.profile={profile}: vllm_server.{unknown[0]} is unknown; valid: {', '.join(SERVER_KEYS)}")
    out = {**SERVER_DEFAULTS, **raw}
    for key, kind in SERVER_KEYS.items():
        try:
            out[key] = kind(out[key])
        except (TypeError, ValueError):
            raise UserError(f"launcher.profile={profile}: vllm_server.{key}={out[key]!r} is not a {kind.__name__}") from None
        if out[key] <= 0:
            raise UserError(f"launcher.profile={profile}: vllm_server.{key}={out[key]} must be > 0")
    return out


def for_config(cfg: Any, profiles: dict | None = None) -> JobLayout | None:
    """The layout of a composed SLURM point (None for other backends); `profiles` caches loaded profiles."""
    if cfg.launcher.name != "slurm":
        return None
    from abcx.launch.profiles import load_profile, resources

    profiles = {} if profiles is None else profiles
    if cfg.launcher.profile not in profiles:
        profiles[cfg.launcher.profile] = load_profile(cfg.launcher.profile)
    return from_resources(resources(profiles[cfg.launcher.profile], cfg), cfg)


def done_file(folder: str | Path, env: Mapping[str, str]) -> Path:
    """Written by node 0 when its training ends (either way): the server node then stops its server."""
    return Path(folder) / f"training-done-{env['SLURM_JOB_ID']}.{env.get('SLURM_RESTART_COUNT') or 0}"


def describe_points(planned: list) -> list[str]:
    """The distinct layouts of a sweep's planned points (abcx.sweep.plan.PlannedRun), for --dry-run."""
    from abcx.training.train import model_path

    seen: dict[tuple, list[str]] = {}
    profiles: dict = {}
    for run in planned:
        lay = for_config(run.cfg, profiles)
        if lay is None or (lay.nodes == 1 and not lay.server_nodes):
            continue
        model = run.cfg.model.path or ("<the testbed model>" if run.cfg.model.name == "tiny" else model_path(run.cfg))
        seen.setdefault((repr(lay), model), lay.describe(model))
    return [line for lines in seen.values() for line in lines]
