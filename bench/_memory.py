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
