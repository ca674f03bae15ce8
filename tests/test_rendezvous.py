"""The multi-node rendezvous as each SLURM task derives it (abcx/launch/rendezvous.py), without a cluster:
host-list expansion, the rank/host/port decision, the port hand-over between nodes, and the status
line of a run that lost a node. The real 2-node jobs are in tests/test_multinode.py."""
from __future__ import annotations

import threading

import pytest

from abcx.errors import UserError
from abcx.launch import rendezvous as R
from abcx.training.peers import peer_loss
from abcx.launch.job import accelerate_prefix


@pytest.mark.parametrize("nodelist, hosts", [
    ("n1", ["n1"]),
    ("n[1-2]", ["n1", "n2"]),
    ("gpu[08-10,3],login1", ["gpu08", "gpu09", "gpu10", "gpu3", "login1"]),
    ("a[1-2]b[7-8]", ["a1b7", "a1b8", "a2b7", "a2b8"]),
    ("node-[4,2]", ["node-4", "node-2"]),  # SLURM's order, not sorted: the first host is node 0's
])
def test_slurm_host_lists_expand_in_order(nodelist, hosts):
    assert R.expand_nodelist(nodelist) == hosts


def slurm_env(node_id: int, **extra) -> dict:
    return {"SLURM_JOB_ID": "41", "SLURM_JOB_NUM_NODES": "3", "SLURM_NTASKS": "3", "SLURM_NODEID": str(node_id),
            "SLURM_JOB_NODELIST": "gpu[07-09]", **extra}


def test_every_node_gets_the_first_host_and_node_zeros_free_port_with_its_own_rank(tmp_path):
    first = R.from_slurm(slurm_env(0), tmp_path, num_processes=6)
    others = [R.from_slurm(slurm_env(i), tmp_path, num_processes=6, wait_s=5) for i in (2, 1)]
    assert first.main_host == "gpu07" and first.num_machines == 3 and first.machine_rank == 0
    assert [o.machine_rank for o in others] == [2, 1]
    assert {o.main_port for o in others} == {first.main_port} and 1024 < first.main_port < 65536
    args = others[0].accelerate_args()
    assert args[args.index("--machine_rank") + 1] == "2" and args[args.index("--main_process_ip") + 1] == "gpu07"


def test_a_later_node_waits_for_node_zero_and_a_requeued_attempt_gets_a_new_port_file(tmp_path):
    got = {}
    waiter = threading.Thread(target=lambda: got.setdefault("rdzv", R.from_slurm(slurm_env(1), tmp_path, 6, wait_s=30)))
    waiter.start()  # node 1's task starts before node 0's
    first = R.from_slurm(slurm_env(0), tmp_path, num_processes=6)
    waiter.join(30)
    assert got["rdzv"].main_port == first.main_port
    requeued = slurm_env(1, SLURM_RESTART_COUNT="1")
    assert R.port_file(tmp_path, requeued) != R.port_file(tmp_path, slurm_env(1))
    with pytest.raises(RuntimeError, match="waited 0 s for node 0 \\(gpu07\\)"):
        R.from_slurm(requeued, tmp_path, 6, wait_s=0.1)  # the old attempt's port is never reused


def test_process_counts_that_do_not_fit_the_nodes_are_one_line_errors(tmp_path):
    with pytest.raises(UserError, match=r"launcher.num_processes=4 does not divide over 3 training nodes; valid: a multiple of 3"):
        R.from_slurm(slurm_env(0), tmp_path, num_processes=4)
    with pytest.raises(UserError, match="one task per node; this job has 6 tasks on 3 nodes"):
        R.from_slurm(slurm_env(0, SLURM_NTASKS="6"), tmp_path, num_processes=6)
    assert not list(tmp_path.iterdir())  # refused before any port was published


def test_accelerate_gets_the_rendezvous_on_several_nodes_and_a_local_port_on_one():
    multi = accelerate_prefix(6, "cpu", R.Rendezvous(3, 1, "gpu07", 29512))
    assert multi[multi.index("--num_machines") + 1] == "3" and multi[multi.index("--main_process_port") + 1] == "29512"
    single = accelerate_prefix(2, "cpu")
    assert "--num_machines" not in single and "--main_process_port" in single


def test_a_lost_peer_is_named_in_the_status_line_and_other_errors_are_left_alone():
    gloo = ("RuntimeError: [../gloo/transport/tcp/pair.cc:537] Read error [127.0.0.1]:24758: Connection reset by "
            "peer. This is typically caused by a remote worker hanging")
    line = peer_loss(gloo, world_size=2)
    assert line.startswith("lost contact with localhost (127.0.0.1), another node or process of this 2-process run")
    assert "resubmit to resume from the newest checkpoint" in line and "\n" not in line
    assert peer_loss(gloo, world_size=1) is None  # a single process has no peer to lose
    assert peer_loss("ValueError: reward function returned 3 values for 4 completions", world_size=2) is None
