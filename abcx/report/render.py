"""Renderers for the report's tables: rich (terminal), markdown, csv, latex, json.

Each `Table` carries two views: `data` (numeric, for csv/json: means and CI half-widths as separate
columns) and `display` (strings like "0.512 ± 0.021", for people: rich/markdown/latex).
"""
from __future__ import annotations

import sys

import dataclasses
import io
import json
import math
from typing import Any

from abcx.errors import UserError
from abcx.record.states import State

FORMATS = ("rich", "markdown", "csv", "latex", "json")


@dataclasses.dataclass
class Table:
    key: str
    title: str
    data: Any  # pandas.DataFrame, numeric
    display: Any  # pandas.DataFrame, strings
    notes: list = dataclasses.field(default_factory=list)
    compact: bool = False  # the verdict table: one block that fits 80 columns, never split into parts


def fmt_num(x, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    if isinstance(x, (int,)) and not isinstance(x, bool):
        return str(x)
    x = float(x)
    if x != 0 and (abs(x) >= 1e5 or abs(x) < 1e-3):
        return f"{x:.{digits}g}"
    return f"{x:.{digits}f}" if abs(x) < 100 else f"{x:.1f}"


def fmt_ci(mean, hw, digits: int = 3) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    if hw is None or (isinstance(hw, float) and math.isnan(hw)):
        return fmt_num(mean, digits)
    return f"{fmt_num(mean, digits)} ± {fmt_num(hw, digits)}"


def _cell(v) -> str:
    if isinstance(v, float):
        return fmt_num(v)
    return "" if v is None else str(v)


def to_markdown(tables: list[Table], notes: list[str], verdict=()) -> str:
    out = []
    for t in tables:
        out.append(f"### {t.title}\n")
        cols = [str(c) for c in t.display.columns]
        out.append("| " + " | ".join(cols) + " |")
        out.append("|" + "|".join("---" for _ in cols) + "|")
        for row in t.display.itertuples(index=False):
            out.append("| " + " | ".join(_cell(v).replace("|", "\\|") for v in row) + " |")
        out.extend(f"\n_{n}_" for n in t.notes)
        out.append("")
    out.extend(f"- {n}" for n in notes)
    if verdict:
        out += [""] + [f"**{line}**" if i == 0 else line for i, line in enumerate(verdict)]
    return "\n".join(out).rstrip() + "\n"


_LATEX_ESCAPE = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                 "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_ESCAPE.get(ch, ch) for ch in text).replace("±", r"$\pm$")


def _latex_cell(v) -> str:
    text = _cell(v)
    return "--" if text in ("", "–", "nan", "None") else latex_escape(text)


def to_latex(tables: list[Table], notes: list[str], verdict=()) -> str:
    """booktabs tables: text columns left-aligned, numeric ones right-aligned, `--` for a missing
    value, and a `\\label{tab:abcx-<key>}` to \\ref."""
    out = ["% needs \\usepackage{booktabs}"]
    for t in tables:
        cols = [str(c) for c in t.display.columns]
        align = "".join("r" if i and _numeric_column(t.display[c]) else "l" for i, c in enumerate(t.display.columns))
        out += [r"\begin{table}[t]", r"\centering", f"\\caption{{{latex_escape(t.title)}}}",
                f"\\label{{tab:abcx-{t.key}}}", r"\begin{tabular}{" + align + "}",
                r"\toprule", " & ".join(latex_escape(c) for c in cols) + r" \\", r"\midrule"]
        for row in t.display.itertuples(index=False):
            out.append(" & ".join(_latex_cell(v) for v in row) + r" \\")
        out += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    out.extend(f"% {n}" for n in [*notes, *verdict])
    return "\n".join(out) + "\n"


def to_csv(tables: list[Table], notes: list[str], verdict=()) -> str:
    """A single tidy table (the report's `long` table) as plain CSV that `pandas.read_csv` loads in
    one call; otherwise sections `# <key>: <title>` followed by each table's numeric CSV."""
    buf = io.StringIO()
    if len(tables) == 1 and tables[0].key == "long":
        tables[0].data.to_csv(buf, index=False, lineterminator="\n")
        return buf.getvalue()
    for t in tables:
        buf.write(f"# {t.key}: {t.title}\n")
        t.data.to_csv(buf, index=t.key.startswith("pivot"), lineterminator="\n")
        buf.write("\n")
    for n in [*notes, *verdict]:
        buf.write(f"# note: {n}\n")
    return buf.getvalue()


def _jsonable(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if hasattr(v, "item"):
        return _jsonable(v.item())
    return v


def to_json(tables: list[Table], notes: list[str], verdict=()) -> str:
    doc = {"verdict": list(verdict), "tables": {}, "notes": list(notes)}
    for t in tables:
        data = t.data.reset_index() if t.key.startswith("pivot") else t.data
        rows = [{str(k): _jsonable(v) for k, v in rec.items()} for rec in data.to_dict(orient="records")]
        doc["tables"][t.key] = {"title": t.title, "columns": [str(c) for c in data.columns], "rows": rows,
                                "notes": list(t.notes)}
    return json.dumps(doc, indent=2, default=str) + "\n"


def _column_chunks(display, width: int) -> list[list]:
    """Columns in groups that fit `width`: the leading text columns (the row's identity) repeat in each
    group, so a narrow terminal shows the table in parts instead of cutting every cell to "0.5…"."""
    cols = list(display.columns)
    natural = {c: max([len(str(c))] + [len(_cell(v)) for v in display[c]]) + 3 for c in cols}
    if sum(natural.values()) + 1 <= width:
        return [cols]
    ids = []
    for c in cols:
        if ids and _numeric_column(display[c]):
            break
        ids.append(c)
    ids = ids[:max(1, len(cols) - 1)]
    chunks, current, used = [], list(ids), sum(natural[c] for c in ids) + 1
    for c in cols[len(ids):]:
        if current != ids and used + natural[c] > width:
            chunks.append(current)
            current, used = list(ids), sum(natural[c] for c in ids) + 1
        current.append(c)
        used += natural[c]
    chunks.append(current)
    return chunks


def to_rich(tables: list[Table], notes: list[str], console=None, verdict=()) -> None:
    from rich.console import Console
    from rich.text import Text

    # Piped output (logs, CI, `make demo`) is never cut to a width: each table keeps its natural width
    # (rich would otherwise shrink every column to fit 80 and drop cells behind an ellipsis).
    console = console or Console(width=None if sys.stdout.isatty() else 10_000)
    # Titles and notes are Text, printed on their own: they wrap at the console's width (a table's own
    # title would wrap at the table's), and rich's highlighter does not colour the numbers in them.
    for t in tables:
        display = t.display[[c for c in t.display.columns if not (t.display[c].map(_cell) == "").all()]]
        chunks = [list(display.columns)] if t.compact else _column_chunks(display, console.width)
        for part, cols in enumerate(chunks):
            title = t.title if part == 0 else f"{t.title.split(':')[0]} (continued, {part + 1}/{len(chunks)})"
            console.print(Text(title, style="bold"))
            console.print(_rich_table(display, cols, t.compact))
        for n in t.notes:
            console.print(Text(n, style="dim"))
        console.print()
    for n in notes:
        console.print(Text(f"note: {n}"))
    if verdict:
        console.print()
    for line in verdict:
        console.print(Text(line, style="bold"))


def _rich_table(display, cols: list, compact: bool):
    from rich import box
    from rich.table import Table as RichTable

    # The verdict table is drawn without side borders and with its text columns allowed to wrap, so it
    # fits 80 columns whole; the others are cut into parts (_column_chunks) and never wrap their ids.
    rt = RichTable(box=box.SIMPLE_HEAD if compact else box.HEAVY_HEAD, show_edge=not compact, pad_edge=not compact)
    for i, c in enumerate(cols):
        numeric = i > 0 and _numeric_column(display[c])
        free = str(c) in ("detail", "left out", "path") or (compact and not numeric)
        rt.add_column(str(c), justify="right" if numeric else "left", no_wrap=not free,
                      overflow="fold" if free else "ellipsis")
    states = display["state"].astype(str).tolist() if "state" in display.columns else None
    for r, row in enumerate(display[cols].itertuples(index=False)):
        style = None
        if states is not None:
            state = states[r]
            style = None if state == State.FINISHED else "yellow" if state.startswith(State.RUNNING.value) else "red"
        rt.add_row(*[_cell(v) for v in row], style=style)
    return rt


def _numeric_column(values) -> bool:
    """A column of numbers (or number ± CI cells), blanks aside: right-aligned."""
    cells = [_cell(v) for v in values]
    return any(c not in ("", "–") for c in cells) and all(_looks_numeric(v) for v in cells)


def _looks_numeric(v) -> bool:
    s = _cell(v).split(" ")[0].replace("%", "").lstrip("+-–")
    return s == "" or s.replace(".", "", 1).replace("e", "", 1).replace("-", "").isdigit()


def render(tables: list[Table], notes: list[str], fmt: str, console=None, verdict=()) -> str | None:
    """Text of the report in `fmt`; for `rich` prints to the console and returns None. `verdict`: the
    lines that end the report (abcx.report.verdict.verdict_lines)."""
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r}: valid formats are {', '.join(FORMATS)}")
    if fmt == "rich":
        to_rich(tables, notes, console, verdict)
        return None
    return {"markdown": to_markdown, "csv": to_csv, "latex": to_latex, "json": to_json}[fmt](tables, notes, verdict)
