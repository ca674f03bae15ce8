"""Where the training processes of a multi-node SLURM job meet, read from SLURM in each task.

A multi-node job runs one task per node (the SLURM backend asks for ntasks_per_node=1); each task
starts its node's share of the processes with `accelerate launch`, which needs the same rendezvous on
every node. It is taken from SLURM, as torchrun-on-SLURM recipes do:

- machines: SLURM_JOB_NUM_NODES; this machine's rank: SLURM_NODEID (0 .. nodes-1);
- main host: the first host of SLURM_JOB_NODELIST (`n[1-2]` -> `n1`), where node rank 0 runs;
- main port: a port that is free on the main host. Only node 0 can know one, so it binds port 0,
  and publishes the number in a file of the job's folder (shared by every node, as submitit's own
  pickles are); the other nodes wait for that file. The file is named by job id and SLURM's restart
  count, so a requeued attempt never reads the previous attempt's port.

Pure parts (nodelist expansion, the decision) are separate from the waiting, for tests.
"""
from __future__ import annotations

import os
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from abcx.errors import UserError

PORT_WAIT_S = 180.0  # the other nodes' tasks may start this much later than node 0's


@dataclass(frozen=True)
class Rendezvous:
    num_machines: int
    machine_rank: int
    main_host: str
    main_port: int

    def accelerate_args(self) -> list[str]:
        return ["--num_machines", str(self.num_machines), "--machine_rank", str(self.machine_rank),
                "--main_process_ip", self.main_host, "--main_process_port", str(self.main_port),
                "--rdzv_backend", "static"]


def expand_nodelist(nodelist: str) -> list[str]:
    """SLURM's compressed host list, expanded in order: `gpu[01-03,7],login1` -> gpu01 gpu02 gpu03 gpu7 login1.
    Zero padding is kept (`[08-10]` -> 08 09 10); several bracket groups multiply (`a[1-2]b[3-4]`)."""
    hosts: list[str] = []
    for item in _split_top_level(nodelist.strip()):
        hosts.extend(_expand_one(item))
    return hosts


def _split_top_level(text: str) -> list[str]:
    items, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += {"[": 1, "]": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    items.append(text[start:])
    return [item for item in items if item]


def _expand_one(item: str) -> list[str]:
    match = re.search(r"\[([^\]]*)\]", item)
    if not match:
        return [item]
    head, tail = item[:match.start()], item[match.end():]
    out = []
    for part in match.group(1).split(","):
        lo, _, hi = part.partition("-")
        if not lo.isdigit() or (hi and not hi.isdigit()):
            raise ValueError(f"cannot expand SLURM host list {item!r}")
        width = len(lo)
        for n in range(int(lo), int(hi or lo) + 1):
            out.extend(head + str(n).zfill(width) + rest for rest in _expand_one(tail))
    return out


def slurm_nodes(env: Mapping[str, str]) -> int:
    """How many nodes this SLURM job spans (1 outside SLURM)."""
    return int(env.get("SLURM_JOB_NUM_NODES") or env.get("SLURM_NNODES") or 1)


def port_file(folder: str | Path, env: Mapping[str, str]) -> Path:
    return Path(folder) / f"rendezvous-{env['SLURM_JOB_ID']}.{env.get('SLURM_RESTART_COUNT') or 0}.port"


def from_slurm(env: Mapping[str, str], folder: str | Path, num_processes: int,
               wait_s: float = PORT_WAIT_S, train_nodes: int | None = None) -> Rendezvous:
    """The rendezvous of this task of a multi-node job; `folder` is shared by all its nodes.
    `train_nodes`: how many of the job's nodes (the first ones) train, when the others serve vLLM."""
    allocated = slurm_nodes(env)
    tasks = int(env.get("SLURM_NTASKS") or allocated)
    if tasks != allocated:
        raise UserError(f"a multi-node run needs one task per node; this job has {tasks} tasks on {allocated} nodes")
    nodes = train_nodes or allocated
    if num_processes % nodes:
        raise UserError(f"launcher.num_processes={num_processes} does not divide over {nodes} training nodes; "
                        f"valid: a multiple of {nodes} (processes per node x nodes)")
    rank = int(env["SLURM_NODEID"])
    host = expand_nodelist(env["SLURM_JOB_NODELIST"])[0]
    path = port_file(folder, env)
    port = publish_free_port(path) if rank == 0 else wait_for_port(path, host, wait_s)
    return Rendezvous(nodes, rank, host, port)


def free_port(host: str = "") -> int:
    # Another process may take it between this probe and torch binding it: a short race, as with any
    # free-port probe; a collision fails the rendezvous loudly rather than joining the wrong job.
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def publish_free_port(path: Path) -> int:
    port = free_port()
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(f"{port}\n")
    tmp.replace(path)  # the other nodes see the whole number or nothing
    return port


def wait_for_port(path: Path, host: str, wait_s: float) -> int:
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return int(path.read_text())
        except (FileNotFoundError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"node rank {os.environ.get('SLURM_NODEID')} waited {wait_s:.0f} s for node 0 "
                               f"({host}) to publish its rendezvous port in {path}; did node 0's task start?")
        time.sleep(0.2)

