"""Reading the YAML files abcx takes as input (sweep files, cluster profiles, a run's config.yaml).

YAML can describe a structure far larger than its text: nine aliases of nine aliases ... (a
"billion laughs" bomb, 472 bytes) is shared in memory but explodes for any code that walks it, and
deep nesting overflows the recursive composer. abcx writes none of these itself, so it refuses
them: aliases, nesting deeper than MAX_DEPTH, files over a size limit and non-UTF-8 bytes are each
one UserError naming the file, before anything is built from the content. The check runs on the
parser's event stream (LibYAML when available, ~0.1 ms for a run's config), so reports over
thousands of runs stay fast.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from abcx.errors import UserError

MAX_BYTES = 1 << 20  # a sweep file or a run's config is a few KB; 1 MiB leaves room for generated grids
MAX_DEPTH = 64  # nesting of mappings and sequences; abcx's own configs nest 4 levels


def _loader():
    import yaml

    return getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _read_text(path: Path, max_bytes: int) -> str:
    import stat

    try:
        mode = os.stat(path).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError
        if not stat.S_ISREG(mode):  # a device (/dev/zero) or a pipe: endless or blocking, never a file's content
            raise UserError(f"{path}: not a regular file (a device or a pipe); expected a YAML file")
        with open(path, "rb") as fh:
            data = fh.read(max_bytes + 1)
    except IsADirectoryError:
        raise UserError(f"{path}: is a folder, not a YAML file") from None
    except OSError as err:
        raise UserError(f"{path}: cannot be read ({err.strerror or err})") from None
    if len(data) > max_bytes:
        raise UserError(f"{path}: larger than {max_bytes // 1024} KiB; abcx reads only small YAML files")
    if b"\0" in data:
        raise UserError(f"{path}: not a text file (it holds NUL bytes); expected YAML")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not a UTF-8 text file (byte {err.start} is {data[err.start]:#04x}); expected YAML") \
            from None


def _check_events(path: Path, text: str, max_depth: int) -> None:
    """Refuse aliases and deep nesting from the event stream, before anything is composed."""
    import yaml

    depth = 0
    for event in yaml.parse(text, Loader=_loader()):
        if isinstance(event, yaml.AliasEvent):
            raise UserError(f"{path} line {event.start_mark.line + 1}: YAML aliases (*{event.anchor}) are not "
                            f"accepted; write the values out")
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > max_depth:
                raise UserError(f"{path} line {event.start_mark.line + 1}: nested deeper than {max_depth} levels")
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1


def load_yaml(path: str | os.PathLike, *, max_bytes: int = MAX_BYTES, max_depth: int = MAX_DEPTH) -> Any:
    """The content of a small YAML file, or one UserError naming the file and what is wrong."""
    import yaml

    path = Path(path)
    text = _read_text(path, max_bytes)
    try:
        _check_events(path, text, max_depth)
        return yaml.load(text, Loader=_loader())
    except yaml.YAMLError as err:
        raise UserError(f"{path}: not valid YAML ({' '.join(str(err).split())[:200]})") from None
    except RecursionError:  # a nesting the event check let through should still not be a traceback
        raise UserError(f"{path}: nested too deeply to read") from None
