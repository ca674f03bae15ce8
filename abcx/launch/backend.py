"""The registry of backends: `launcher.name` -> a Backend (abcx.launch.protocol). A backend is declared
here once; the sweep code never asks which backend it holds, and nothing outside abcx/launch/ compares
a backend's name (conf/launcher/ has one group per entry, tests/test_layers.py keeps them equal).
"""
from __future__ import annotations

from typing import Callable

from abcx.errors import UserError
from abcx.launch.protocol import Backend, JobAlive, stop_runs  # noqa: F401 - the seam, re-exported

def get(name: str) -> Backend:
    """The backend of `launcher.name` (a fresh instance: the local one holds its running jobs)."""
    factory = BACKENDS.get(name)
    if factory is None:
        raise UserError(f"launcher.name={name}: no such backend; available: {', '.join(BACKENDS)}")
    return factory()


def _local() -> Backend:
    from abcx.launch.local import LocalBackend

    return LocalBackend()


def _slurm() -> Backend:
    from abcx.launch.slurm import SlurmBackend

    return SlurmBackend()


BACKENDS: dict[str, Callable[[], Backend]] = {"local": _local, "slurm": _slurm}
DEFAULT = "local"  # the backend of a sweep whose manifest does not say (older manifests)


def of_manifest(manifest: dict | None) -> Backend:
    """The backend a sweep was submitted to (its manifest's `backend`)."""
    return get((manifest or {}).get("backend") or DEFAULT)
