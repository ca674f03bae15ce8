"""What a generated results file says about the software it was measured with: the testbed's numbers
(its runs' trajectories) move with the versions of torch and transformers, so they are written beside them."""
from __future__ import annotations

import os
import platform
import time


def version(pkg: str) -> str:
    from importlib.metadata import PackageNotFoundError, version as installed

    try:
        return installed(pkg)
    except PackageNotFoundError:
        return "not installed"


def versions(packages: tuple[str, ...] = ("torch", "transformers", "trl")) -> str:
    return ", ".join(f"{p} {version(p)}" for p in packages)


def machine_line() -> str:
    return (f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python "
            f"{platform.python_version()}, {versions()}; {time.strftime('%Y-%m-%d')}.")
