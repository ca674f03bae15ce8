"""Run every bench/*.py script in turn and write results/bench/README.md: one table row per target
(target | measured | baseline | ratio | goal | met?) plus a description of the machine.

Scripts that end with `RESULT {json}` lines (a dict or a list of dicts with target, measured,
baseline, ratio, goal, met, load, note) are read as they are; the older scripts' plain-text output is
read by the small parsers in ADAPTERS. The testbed build (target 7) takes minutes and is left out
unless --with-testbed is given.

    .venv/bin/python bench/run_all.py            # quick mode of each script (a few minutes)
    .venv/bin/python bench/run_all.py --full     # the scripts' default sizes (longer, steadier)
    .venv/bin/python bench/run_all.py --only bench_loss --out /tmp/bench.md

Set ABCX_CACHE to reuse an existing tiny-model build (the trainer-step benchmark needs one).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
OUT = REPO / "results" / "bench" / "README.md"
RESULT_PREFIX = "RESULT "


@dataclass
class Script:
    quick: list[str] = field(default_factory=lambda: ["--quick"])
    full: list[str] = field(default_factory=list)
    parse: Callable[[str], list[dict]] | None = None  # None: the script prints RESULT lines
    optional: bool = False  # only with --with-testbed
    variants: list[list[str]] = field(default_factory=lambda: [[]])  # one run per entry, args appended


def _num(pattern: str, text: str) -> float:
    m = re.search(pattern, text)
    if not m:
        raise ValueError(f"output does not match {pattern!r}")
    return float(m.group(1))


def parse_report(text: str) -> list[dict]:
    total = _num(r"report engine: .*= ([\d.]+) s", text)
    base = _num(r"baseline json.loads of every line: ([\d.]+) s", text)
    size = re.search(r"metrics.jsonl: (\d+) files, (\d+) lines", text)
    return [{"target": "6. Report: read + summarise runs x steps", "measured": f"{total:.2f} s",
             "baseline": f"json.loads of every line {base:.2f} s", "ratio": round(total / base, 2),
             "goal": "<= 3 s", "met": total <= 3.0,
             "note": f"{size.group(1)} runs, {size.group(2)} lines" if size else ""}]


def parse_sweep(text: str) -> list[dict]:
    fast = _num(r"dry-run plan .*?: ([\d.]+) s", text)
    slow = _num(r"plain compose\(\) per point: .*?-> ([\d.]+) s", text)
    points = int(_num(r"points: (\d+)", text))
    return [{"target": f"5. Sweep expansion: dry-run plan of {points} points", "measured": f"{fast:.2f} s",
             "baseline": f"compose() per point, extrapolated {slow:.1f} s", "ratio": round(fast / slow, 3),
             "goal": "<= 2 s for 1,000 points (expanded, validated, planned)", "met": fast <= 2.0 and points >= 1000,
             "note": f"speed-up {slow / fast:.1f}x"}]


def parse_testbed(text: str) -> list[dict]:
    data = json.loads(text[text.index("{"):])
    grpo = data.get("grpo", {})
    return [{"target": "7. Testbed build (cold) + GRPO steps", "measured": f"{data['build_s']:.0f} s build",
             "baseline": "-", "ratio": None, "goal": "see issue (ablation wall time)", "met": None,
             "note": f"sft {data['sft_s']:.0f} s; GRPO mean step {grpo.get('mean_step_s', float('nan')) * 1e3:.0f} ms"}]


SCRIPTS: dict[str, Script] = {
    "bench_cli_start": Script(),
    # Its default (3 interleaved rounds x 40 steps + 1 RSS pair, ~70 s) runs even in quick mode: the A/A
    # control is steadier with more steps.
    # auto: what users get (abcx's chunked head on CPU); fused: TRL's head on both sides, so only abcx's
    # loss code differs from TRL's.
    "bench_trainer_step": Script(quick=[], variants=[["--logprob-path", "auto"], ["--logprob-path", "fused"]]),
    "bench_loss": Script(variants=[["--logprob-path", "auto"], ["--logprob-path", "fused"]]),
    "bench_logprobs": Script(),
    "bench_head_roofline": Script(),  # on a CPU: fraction of the same GEMMs alone; the roofline needs a GPU
    "bench_sweep": Script(quick=["--subset", "20"], parse=parse_sweep),
    "bench_report": Script(quick=[], parse=parse_report),
    "bench_testbed_build": Script(quick=["--grpo-steps", "10"], parse=parse_testbed, optional=True),
    "bench_ablation": Script(quick=["--quick"]),
}


def run_script(path: Path, args: list[str], timeout: float) -> tuple[int, str, float, float]:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "WANDB_MODE": "disabled", "TOKENIZERS_PARALLELISM": "false"}
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    try:
        out = subprocess.run([sys.executable, str(path), *args], env=env, capture_output=True, text=True,
                             timeout=timeout, cwd=REPO)
        rc, text = out.returncode, out.stdout + ("\n" + out.stderr if out.returncode else "")
    except subprocess.TimeoutExpired as err:
        rc, text = 124, f"timed out after {timeout:.0f} s\n{err.stdout or ''}"
    return rc, text, time.perf_counter() - t0, max(load, os.getloadavg()[0])


def rows_from(name: str, spec: Script, text: str) -> list[dict]:
    if spec.parse is not None:
        return spec.parse(text)
    lines = [x for x in text.splitlines() if x.startswith(RESULT_PREFIX)]
    if not lines:
        raise ValueError("no RESULT line in the output")
    data = json.loads(lines[-1][len(RESULT_PREFIX):])
    return data if isinstance(data, list) else [data]


def machine() -> dict[str, str]:
    from _env import version as ver  # bench/ is on sys.path when a script runs

    def sh(cmd: str) -> str:
        try:
            return subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=30).stdout.rstrip()
        except Exception:  # noqa: BLE001 - a missing tool only blanks one line
            return "?"

    model = sh("lscpu | sed -n 's/^Model name:[[:space:]]*//p'")
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "nproc": sh("nproc"), "cpu": model or "?",
        "free -g": sh("free -g"), "python": sys.version.split()[0], "torch": ver("torch"), "trl": ver("trl"),
        "transformers": ver("transformers"), "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def _target_key(target: str) -> tuple:
    m = re.match(r"(\d+)([a-z]?)\.", target)
    return (int(m.group(1)), m.group(2)) if m else (99, target)


def fmt_ratio(value) -> str:
    return "-" if value is None else f"{value:g}x"


def fmt_met(value) -> str:
    return {True: "yes", False: "**no**", None: "-"}[value]


def render(rows: list[dict], logs: list[tuple[str, str, int, float, float, str]], info: dict, mode: str) -> str:
    out = [
        "# abcx benchmarks", "",
        f"Generated by `bench/run_all.py` ({mode} mode) on {info['date']}. Each figure is a ratio against a "
        "baseline measured in the same run (see each script's docstring for the method). The machine is "
        "shared with other processes: `load` is the 1-minute load average while the script ran.", "",
        "| target | measured | baseline | ratio | goal | met? | load |", "|---|---|---|---|---|---|---|",
    ]
    # Rows in target order (1., 2a., ...), whatever order the scripts ran in.
    for r in sorted(rows, key=lambda r: _target_key(r["target"])):
        load = r.get("load")
        out.append(f"| {r['target']} | {r['measured']} | {r['baseline']} | {fmt_ratio(r.get('ratio'))} | "
                   f"{r['goal']} | {fmt_met(r.get('met'))} | {'-' if load is None else f'{load:.2f}'} |")
    ordered = sorted(rows, key=lambda r: _target_key(r["target"]))
    # Missed and unmeasured targets are listed on their own, with the figure and the script's reason.
    open_rows = [r for r in ordered if r.get("met") is not True]
    out += ["", "Missed or not measured here:", ""]
    out += [f"- {r['target']}: {'missed' if r.get('met') is False else 'not measured'} "
            f"({r['measured']}; goal {r['goal']}){': ' + r['note'] if r.get('note') else ''}" for r in open_rows]
    out += [] if open_rows else ["- none"]
    out += ["", "Notes:", ""]
    out += [f"- {r['target']}: {r['note']}" for r in ordered if r.get("note")]
    out += ["", "## Machine", "", "```"]
    out += [f"{k}: {v}" if "\n" not in v else f"{k}:\n{v}" for k, v in info.items()]
    out += ["```", "", "## Script output", ""]
    for name, args, rc, seconds, load, text in logs:
        # The script's own lines, so that every figure in the table can be traced to its raw output.
        body = "\n".join(x for x in text.splitlines() if not x.startswith(RESULT_PREFIX)).strip()
        out += [f"### {name} {args}".rstrip(), "", f"exit {rc}, {seconds:.0f} s wall, load {load:.2f}", "",
                "```", body[-6000:], "```", ""]
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--full", action="store_true", help="the scripts' default sizes instead of --quick")
    ap.add_argument("--with-testbed", action="store_true", help="also time the cold testbed build (minutes)")
    ap.add_argument("--only", action="append", help="run only this script (repeatable), e.g. bench_loss")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per script")
    opts = ap.parse_args(argv)

    info = machine()
    rows: list[dict] = []
    logs: list[tuple[str, str, int, float, float, str]] = []
    found = sorted(p for p in BENCH.glob("*.py") if p.name != Path(__file__).name and not p.name.startswith("_"))
    for path in found:
        name = path.stem
        spec = SCRIPTS.get(name, Script(quick=[], parse=lambda text: [{
            "target": name, "measured": (text.strip().splitlines() or ["?"])[-1], "baseline": "-", "ratio": None,
            "goal": "-", "met": None}]))
        if opts.only and name not in opts.only:
            continue
        if spec.optional and not opts.with_testbed:
            continue  # the cold testbed build takes minutes: only with --with-testbed
        for variant in spec.variants:
            args = (spec.full if opts.full else spec.quick) + variant
            print(f"== {name} {' '.join(args)}", flush=True)
            rc, text, seconds, load = run_script(path, args, opts.timeout)
            logs.append((name, " ".join(args), rc, seconds, load, text))
            try:
                if rc != 0:
                    raise ValueError(f"exit status {rc}")
                got = rows_from(name, spec, text)
            except (ValueError, KeyError, json.JSONDecodeError) as err:
                tail = " / ".join(text.strip().splitlines()[-3:])[-300:]
                got = [{"target": f"{name} {' '.join(args)}", "measured": "FAILED", "baseline": "-", "ratio": None,
                        "goal": "-", "met": False, "note": f"{err}: {tail}"}]
            for r in got:
                r.setdefault("load", load)
                r.pop("table", None)
                print(f"   {r['target']}: {r['measured']} vs {r['baseline']} -> {fmt_ratio(r.get('ratio'))} "
                      f"(goal {r['goal']}: {fmt_met(r.get('met'))})", flush=True)
            rows += got

    text = render(rows, logs, info, "full" if opts.full else "quick")
    out = Path(opts.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"wrote {out}")
    return 0 if all(r.get("met") is not False for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
