"""Never silent (issue 29, section 1, its done-when): `abcx train`, `abcx eval` and `abcx sweep run --wait`
on the testbed, each on a pseudo-terminal (a user's shell) and through a pipe (a CI log), with every
output line timestamped as it arrives (bench/silences.py; on a terminal a redraw counts when its
visible text changes, a turning spinner does not): the longest silence between the first line and
the last is at most 5 s, the first line comes before the heavy imports, and no library progress bar
reaches the user (it goes to the record's library.log)."""
from __future__ import annotations

import pytest

from bench.silences import abcx_argv, watch_pipe, watch_pty

SHORT = ["train.max_steps=4", "eval.benchmarks=[chain]", "eval.max_problems=8", "logger=none"]
COMMANDS = {
    "train": ["train", "method=grpo", *SHORT],
    "eval": ["eval", "tiny", "eval.benchmarks=[chain]", "eval.max_problems=8"],
    "sweep run --wait": ["sweep", "run", "demo", *SHORT, "--wait"],
}
LONGEST_S = 5.0
FIRST_LINE_S = 10.0  # python, typer and the composed config; before this fix: 19 s (train), 25 s (eval)


@pytest.mark.slow
@pytest.mark.parametrize("watch", [watch_pty, watch_pipe], ids=["terminal", "pipe"])
@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_command_is_never_silent_for_more_than_5_seconds(command, watch, tmp_path, tiny_model_path):
    watched = watch(abcx_argv(*COMMANDS[command]), tmp_path, timeout=600)
    assert watched.exit_code == 0, watched.text()[-3000:]
    gap, at, line = watched.longest()
    assert gap <= LONGEST_S, f"{gap:.1f} s of silence after {at:.1f} s, ended by {line!r}\n{watched.text()[-3000:]}"
    assert watched.first_line_s() <= FIRST_LINE_S, watched.lines[:3]
    assert "Loading weights" not in watched.text() and "it/s]" not in watched.text()
    if command == "sweep run --wait" and watch is watch_pty:  # the live rows of its runs
        assert any("running" in text and "/4" in text for _t, text in watched.lines), watched.text()[-3000:]
