"""Fast reading of many JSON-lines files into one wide numeric table.

All files are joined into one buffer and parsed by pyarrow's multithreaded JSON reader in a single
call (about 2x faster than one call per file and 3x faster than `json.loads` per line on 1,000 x 1,000
lines); rows are then split back per file by their line counts. A file pyarrow cannot parse (NaN
literals, a value that changes type, a corrupt line) is re-read alone with the standard `json` module,
which accepts NaN and names the bad line.
"""
from __future__ import annotations

import json
import math



def read_bytes_tolerant(path: str) -> bytes:
    """File content with a torn last line (a writer killed mid-append) cut off; blank lines removed."""
    with open(path, "rb") as fh:
        data = fh.read()
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1
        tail = data[cut:]
        try:
            ok = isinstance(json.loads(tail), dict)
        except (ValueError, RecursionError):
            ok = False
        data = data + b"\n" if ok else data[:cut]
    if b"\n\n" in data or data.startswith(b"\n") or b"\r" in data:
        data = b"".join(line.strip() + b"\n" for line in data.splitlines() if line.strip())
    return data


def parse_lines_python(path: str, data: bytes) -> list[dict]:
    """Rows of one file by the record's shared tolerant parser (abcx.record.parse_jsonl): a line that
    is torn, binary or not a JSON object, wherever it is, is skipped with a warning."""
    from abcx.record.io import parse_jsonl, warn_skipped

    rows, problems = parse_jsonl(data)
    warn_skipped(path, problems)
    return rows


def _numeric(value) -> float:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    return math.nan


def _columns_from_rows(rows: list[dict]) -> dict:
    import numpy as np

    keys: dict[str, None] = {}
    for r in rows:
        keys.update(dict.fromkeys(r))
    cols = {}
    for k in keys:
        vals = [r.get(k) for r in rows]
        if not any(isinstance(v, (int, float)) and not isinstance(v, bool) for v in vals):
            continue
        cols[k] = np.array([_numeric(v) for v in vals], dtype="float64")
    return cols


def _columns_from_arrow(table) -> dict:
    import pyarrow as pa
    import pyarrow.types as pt

    table = table.flatten()
    cols = {}
    for name, col in zip(table.column_names, table.columns):
        t = col.type
        if pt.is_integer(t) or pt.is_floating(t) or pt.is_boolean(t):
            cols[name] = col.cast(pa.float64()).to_numpy()
    return cols


def _read_all(paths: list[str]):
    """(one buffer with every file's lines, per-file line counts, per-file bytes or None).

    Regular files (ending in a newline) are read straight into one preallocated
    buffer, saving a 400 MB join; any irregular file makes it fall back to cleaned copies."""
    import os

    sizes = [os.path.getsize(p) for p in paths]
    buf = bytearray(sum(sizes))
    view = memoryview(buf)
    pos, counts, regular = 0, [], True
    for path, size in zip(paths, sizes):
        with open(path, "rb", buffering=0) as fh:
            got = fh.readinto(view[pos:pos + size])
        end = pos + got
        # Blank lines are caught later: pyarrow skips them, so the row count would not match.
        if got != size or (got and buf[end - 1] != 0x0A):
            regular = False
            break
        counts.append(buf.count(b"\n", pos, end))
        pos = end
    if regular:
        return view[:pos], counts, None
    datas = [read_bytes_tolerant(p) for p in paths]
    return b"".join(datas), [d.count(b"\n") for d in datas], datas


def _first_line_schema(buf):
    """Parse options declaring the first line's numeric keys float64: skips most type inference
    (~25% faster); keys it does not name are still inferred."""
    import pyarrow as pa
    import pyarrow.json as pj

    try:
        first = json.loads(bytes(buf[:bytes(buf[:65536]).index(b"\n")]))
    except (ValueError, RecursionError):
        return pj.ParseOptions()
    if not isinstance(first, dict):  # not a row: the slow path skips it
        return pj.ParseOptions()
    fields = [(k, pa.float64()) for k, v in first.items()
              if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return pj.ParseOptions(explicit_schema=pa.schema(fields), unexpected_field_behavior="infer")


def read_many(paths: list[str]) -> tuple[list[int], dict]:
    """Per-file row counts and {key: float64 array over all rows of all files, NaN where absent}."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.json as pj

    buf, counts, datas = _read_all(paths)
    total = sum(counts)
    if total == 0:
        return counts, {}
    try:
        table = pj.read_json(pa.BufferReader(buf), read_options=pj.ReadOptions(block_size=32 << 20),
                             parse_options=_first_line_schema(buf))
        if table.num_rows != total:
            raise ValueError("row count mismatch")
        return counts, _columns_from_arrow(table)
    except (pa.ArrowInvalid, ValueError):
        pass
    # Slow path: file by file, so one odd file does not cost the others their fast parse.
    datas = datas or [read_bytes_tolerant(p) for p in paths]
    parts, counts = [], []
    for path, data in zip(paths, datas):
        if not data:
            parts.append({})
            counts.append(0)
            continue
        try:
            table = pj.read_json(pa.BufferReader(data))
            parts.append(_columns_from_arrow(table))
            counts.append(table.num_rows)
        except pa.ArrowInvalid:  # unreadable lines are skipped: the file's count is of the rows kept
            rows = parse_lines_python(path, data)
            parts.append(_columns_from_rows(rows))
            counts.append(len(rows))
    keys: dict[str, None] = {}
    for p in parts:
        keys.update(dict.fromkeys(p))
    cols = {}
    for k in keys:
        cols[k] = np.concatenate([p.get(k, np.full(n, np.nan)) for p, n in zip(parts, counts)])
    return counts, cols


def compacted(path: str):
    """The run's metrics.arrow (abcx.record.run.compact_metrics) as a table, if it was made from the
    JSON lines exactly as they are now (same size and modification time); else None."""
    import os

    import pyarrow as pa

    import abcx.record.layout as layout

    arrow_path = os.path.join(os.path.dirname(path), layout.METRICS_ARROW)
    if not os.path.exists(arrow_path):
        return None
    try:
        st = os.stat(path)
        table = pa.ipc.open_file(pa.memory_map(arrow_path)).read_all()
    except (OSError, ValueError, pa.ArrowInvalid):
        return None
    source = (table.schema.metadata or {}).get(b"abcx_source", b"").decode()
    return table if source == f"{st.st_size}:{st.st_mtime_ns}" else None


def read_many_compacted(paths: list[str]) -> tuple[list[int], dict]:
    """read_many, but a file with a fresh columnar copy is read from the copy; rows keep file order."""
    import numpy as np

    copies = [compacted(p) for p in paths]
    if not any(copies):
        return read_many(paths)
    plain = [p for p, c in zip(paths, copies) if c is None]
    plain_counts, plain_cols = read_many(plain) if plain else ([], {})
    per_file: list[tuple[int, dict]] = []
    offsets = np.concatenate([[0], np.cumsum(plain_counts)]).astype(int) if plain else [0]
    j = 0
    for copy in copies:
        if copy is not None:
            per_file.append((copy.num_rows, _columns_from_arrow(copy)))
        else:
            a, b = offsets[j], offsets[j + 1]
            per_file.append((int(b - a), {k: v[a:b] for k, v in plain_cols.items()}))
            j += 1
    keys: dict[str, None] = {}
    for _, cols in per_file:
        keys.update(dict.fromkeys(cols))
    out = {k: np.concatenate([cols.get(k, np.full(n, np.nan)) for n, cols in per_file]) for k in keys}
    return [n for n, _ in per_file], out
