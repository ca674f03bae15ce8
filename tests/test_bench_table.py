"""The benchmark table (bench/run_all.py) never hides a target: missed and unmeasured ones are listed
again on their own, with the measured figure and the script's reason."""
import importlib.util
import sys
from pathlib import Path

spec = importlib.util.spec_from_file_location("run_all", Path(__file__).resolve().parents[1] / "bench" / "run_all.py")
run_all = importlib.util.module_from_spec(spec)
sys.modules["run_all"] = run_all  # its dataclasses look their module up there
spec.loader.exec_module(run_all)

INFO = {"date": "today", "nproc": "2"}


def row(target, met, note=""):
    return {"target": target, "measured": "1.5 s", "baseline": "b", "ratio": 1.5, "goal": "<= 1 s", "met": met,
            "note": note}


def section(text: str) -> list[str]:
    lines = text.splitlines()
    start = lines.index("Missed or not measured here:") + 2
    return lines[start:lines.index("Notes:") - 1]


def test_missed_and_unmeasured_targets_are_listed_with_figure_and_reason():
    rows = [row("4. CLI start", True), row("2a. Loss time", False, "load 3.0"), row("3b. Roofline", None, "no GPU")]
    listed = section(run_all.render(rows, [], INFO, "quick"))
    assert listed == ["- 2a. Loss time: missed (1.5 s; goal <= 1 s): load 3.0",
                      "- 3b. Roofline: not measured (1.5 s; goal <= 1 s): no GPU"]


def test_a_run_that_meets_every_target_says_none_is_open():
    assert section(run_all.render([row("4. CLI start", True)], [], INFO, "quick")) == ["- none"]
