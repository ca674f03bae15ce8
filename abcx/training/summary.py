"""The few lines printed when a run ends: did it learn, how much did it explore, what got clipped."""
from __future__ import annotations

from abcx.record import RunRecord


def _fmt(value, spec: str = "{:.3f}") -> str:
    return "-" if value is None else spec.format(value)


def summary_lines(record: RunRecord) -> list[str]:
    s = record.summary()
    status = record.status()
    lines = [f"run {record.run_id}: {status.get('state', '?')} at step {status.get('step', '?')} "
             f"({status.get('elapsed_s', 0):.0f} s)  {record.path}"]
    if not s:
        return lines
    window = s.get("window/reward", s.get("last_n"))
    if s.get("first/reward") is None:
        lines.append("  reward   too few logged values to compare the start with the end")
    else:
        lines.append(f"  reward   {_fmt(s.get('first/reward'))} -> {_fmt(s.get('last/reward'))}  "
                     f"(mean of the first / last {window} logged values, no overlap)")
    lines.append(f"  entropy  {_fmt(s.get('first/entropy'))} -> {_fmt(s.get('last/entropy'))}")
    quads = "  ".join(f"{q.upper()} {_fmt(s.get(f'mean/clip/{q}'), '{:.2%}')}" for q in ("q1", "q2", "q3", "q4"))
    lines.append(f"  tokens outside the band: {quads}; clipped (zero gradient) {_fmt(s.get('mean/clip/clipped'), '{:.2%}')}")
    shares = "  ".join(f"{q.upper()} {_fmt(s.get(f'share/{q}'), '{:.0%}')}" for q in ("q1", "q2", "q3", "q4"))
    lines.append(f"  share of out-of-band events: {shares}")
    for row in record.evals()[-3:]:
        metrics, n = row.get("metrics", {}), row.get("n")
        passes = sorted((int(k.split("@")[1]), k) for k in metrics if k.startswith("pass@"))
        text = f"  eval {row.get('benchmark')} @ step {row.get('step')}: avg@{n} {_fmt(metrics.get(f'avg@{n}'))}"
        if passes:
            text += f"  {passes[-1][1]} {_fmt(metrics[passes[-1][1]])}"
        lines.append(text)
    return lines


def print_summary(record: RunRecord) -> None:
    print("\n".join(summary_lines(record)))
