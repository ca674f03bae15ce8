"""Peak resident memory of this process on Linux, shared by the memory benchmarks.

torch's CPU allocator bypasses Python's, so tracemalloc cannot see tensors: the kernel's VmHWM (peak
resident set) is read instead, after resetting it through /proc/self/clear_refs. Run the measured code in
a subprocess with MALLOC_MMAP_THRESHOLD_=65536 so that freed tensors leave the resident set at once.
"""
from __future__ import annotations


def rss_kb(field: str) -> int:
    """A /proc/self/status field in kB: VmRSS (now) or VmHWM (peak since the last reset)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(field)


def reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


def run_measured(script: str, args: list[str]) -> dict:
    """Run `python script *args` with the allocator set up for these measurements (freed tensors leave the
    resident set at once) and return the JSON it prints on its last `WORKER {json}` line."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo), "MALLOC_MMAP_THRESHOLD_": "65536", "WANDB_MODE": "disabled"}
    out = subprocess.run([sys.executable, script, *args], env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"worker {' '.join(args)} failed:\n{out.stderr[-3000:]}")
    return json.loads([x for x in out.stdout.splitlines() if x.startswith("WORKER ")][-1][len("WORKER "):])
