"""What `abcx methods` prints and the README's method table: both rendered from the registry."""
from __future__ import annotations

from abcx.methods import Method, registry


def _value(value: object) -> str:
    return "null" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def _bounds_text(method: Method) -> str:
    if method.bounds is None:
        return "controller (eps1..eps4 from Q1..Q4)" if method.controller is not None else "-"
    b = method.bounds(**method.own(method.defaults()))
    return " / ".join(_value(v) for v in (b.eps1, b.eps2, b.eps3, b.eps4))


def text() -> str:
    """Every method: its one-line doc, parameters with default, domain and doc, and its reference."""
    lines = []
    for method in registry().values():
        lines.append(f"{method.name}: {method.doc}")
        if method.extra.get("formula"):
            lines.append(f"    loss per token: {method.extra['formula']}")
        for p in method.params:
            if method.is_schedule_param(p.name) and p.name != "schedule":
                continue
            lines.append(f"    {p.name} = {_value(p.default)}  ({p.domain})  {p.doc}")
        if method.bounds is not None:
            lines.append(f"    <param>_end = null  (float)  end value of <param> under schedule=linear|cosine")
            lines.append(f"    bounds eps1/eps2/eps3/eps4 at the defaults: {_bounds_text(method)}")
        if method.aggregation:
            lines.append(f"    aggregation: {method.aggregation} (fixed by the method)")
        lines.append(f"    reference: {method.reference}")
        if method.origin is not None:
            lines.append(f"    from: {method.origin.describe()}")
    return "\n".join(lines)


def markdown_table() -> str:
    """The README's method table of the built-in methods (tests/test_methods_registry.py keeps the README
    equal to it); plugins are listed by `abcx methods` only."""
    rows = ["| method | rule | parameters (defaults) | ε1 / ε2 / ε3 / ε4 at the defaults | reference |",
            "|---|---|---|---|---|"]
    for method in (m for m in registry().values() if m.origin is None):
        params = ", ".join(f"{p.name}={_value(p.default)}" for p in method.params if not method.is_schedule_param(p.name))
        rule = f"`{method.extra['formula']}`" if method.extra.get("formula") else method.doc
        rule = rule.replace("|", "\\|")  # a pipe inside a table cell, even in code, is escaped
        rows.append(f"| `{method.name}` | {rule} | {params or '-'} | {_bounds_text(method)} | "
                    f"{method.reference} |")
    return "\n".join(rows)
