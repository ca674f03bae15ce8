"""The status line of a multi-process run that failed because another of its processes vanished (a
node lost, its job step killed): the collective's error says "connection reset by peer" or the like,
which a user cannot act on; this names the peer and what to do."""
from __future__ import annotations

import re
import socket

# What gloo, NCCL and torch.distributed say when another process of the run disappears mid-collective.
_PEER_LOSS = re.compile(r"Connection (reset|closed) by peer|Broken pipe|ncclRemoteError|NCCL communicator was aborted"
                        r"|DistBackendError|DistNetworkError|Socket Timeout|Timed out waiting for", re.IGNORECASE)
_PEER_ADDR = re.compile(r"\[(\d{1,3}(?:\.\d{1,3}){3})\]:\d+")


def peer_loss(error: str, world_size: int) -> str | None:
    """A one-line status for a run that failed because another of its processes (another node's, in a
    multi-node job) vanished; None when `error` is something else. Names the lost peer when the
    error carries its address and the address resolves to a host name."""
    if world_size <= 1 or not _PEER_LOSS.search(error):
        return None
    peer = "a peer process"
    match = _PEER_ADDR.search(error)
    if match:
        addr = match.group(1)
        try:
            peer = f"{socket.gethostbyaddr(addr)[0]} ({addr})"
        except OSError:
            peer = addr
    detail = " ".join(error.split())[:300]
    return (f"lost contact with {peer}, another node or process of this {world_size}-process run (the node "
            f"failed or its job step was killed); resubmit to resume from the newest checkpoint. [{detail}]")
