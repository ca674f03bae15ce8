"""Where abcx may write: names that become path components, containment in results_dir, and a
writable results_dir, each checked before any work starts so a bad path is one line, not a
traceback half-way through a run.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from abcx.errors import UserError

NAME = re.compile(r"[A-Za-z0-9._-]+")


def check_name(name: str, what: str = "sweep name") -> str:
    """A name used as one folder name: letters, digits, '.', '_', '-' (not '.' or '..')."""
    if not isinstance(name, str) or not NAME.fullmatch(name) or name in (".", ".."):
        raise UserError(f"{what} {name!r} is not a plain name: use letters, digits, '.', '_' and '-' only "
                        f"(one folder name, not a path)")
    from abcx.secrets import check_free_text

    check_free_text(what, name, into="a folder name (and every file that names it)")  # `hf_...` is a plain name
    return name


def inside(root: str | os.PathLike, path: str | os.PathLike, what: str = "results_dir") -> Path:
    """`path` made absolute, after checking that it lies inside `root`.

    Lexical (`..` and absolute parts count, symlinks are not followed): a results folder whose runs/
    is a symlink to a bigger disk is the user's choice; a name that climbs out of it is not."""
    base = os.path.normpath(os.path.abspath(os.path.expanduser(root)))
    target = os.path.normpath(os.path.abspath(os.path.expanduser(path)))
    if os.path.commonpath([base, target]) != base:
        raise UserError(f"{target} lies outside {what} {base}; abcx writes only inside it")
    return Path(target)


def _nearest_existing(path: Path) -> Path:
    while not os.path.lexists(path) and path.parent != path:
        path = path.parent
    return path


def check_writable(folder: str | os.PathLike, what: str = "results_dir", *, write: bool = True) -> Path:
    """Check that `folder` is (or can be made as) a folder abcx can write into; nothing is created.

    The nearest existing part of the path decides: a file there means no folder can be made; without
    write permission (or on a read-only file system, which access(2) reports even to root) nothing can
    be written. `write=False` (dry runs, status) checks only that no file stands in the way."""
    folder = Path(folder).expanduser().absolute()
    existing = _nearest_existing(folder)
    if not existing.is_dir():
        where = "" if existing == folder else f" ({existing} is a file, so {folder} cannot be made)"
        raise UserError(f"{what} {folder} is not a folder{where}; give a folder path")
    kernel = _kernel_fs(existing)
    if kernel:  # /proc, /sys: root's access(2) says writable, yet no folder or file can be made there
        raise UserError(f"{what} {folder} lies on {kernel}, the kernel's own file system (no files can be made "
                        f"there); give a folder on a disk")
    if write and not os.access(existing, os.W_OK | os.X_OK):
        made = "" if existing == folder else f": {folder} cannot be made in {existing}"
        reason = "a read-only file system" if _read_only_fs(existing) else "no write permission"
        raise UserError(f"{what} {folder} is not writable ({reason}{made}); give a folder abcx can write to")
    return folder


# File systems the kernel serves from memory of its own state: nothing abcx writes can live there.
KERNEL_FS = frozenset({"proc", "sysfs", "cgroup", "cgroup2", "debugfs", "tracefs", "securityfs", "pstore", "bpf",
                       "configfs", "efivarfs", "fusectl", "binfmt_misc", "devpts", "mqueue", "autofs", "nsfs"})


def _kernel_fs(path: Path) -> str | None:
    """The type of the kernel file system `path` lies on (by the mount table), None for any other."""
    try:
        with open("/proc/self/mounts", encoding="utf-8", errors="replace") as fh:
            mounts = [line.split()[1:3] for line in fh if len(line.split()) >= 3]
    except OSError:  # no /proc (not Linux): nothing to tell
        return None
    real = os.path.realpath(path)
    best = ("", None)
    for point, fstype in mounts:
        point = point.replace("\\040", " ")
        if (real == point or real.startswith(point.rstrip("/") + "/")) and len(point) >= len(best[0]):
            best = (point, fstype)
    return best[1] if best[1] in KERNEL_FS else None


def _read_only_fs(path: Path) -> bool:
    try:
        return bool(os.statvfs(path).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def check_results_dir(results_dir: str | os.PathLike, *inner: str | os.PathLike, write: bool = True) -> Path:
    """results_dir, and the folders inside it that a command will write (each checked to lie inside it
    and to be writable), before the command does any work. Its path is written into manifests and
    configs, so it is never a credential either."""
    from abcx.secrets import check_free_text

    check_free_text("results_dir", str(results_dir), into="the manifests and configs that name it")
    root = check_writable(results_dir, "results_dir", write=write)
    for folder in inner:
        check_writable(inside(root, folder), "folder", write=write)
    return root
