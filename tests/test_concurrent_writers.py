"""Many processes writing one results folder at once (array tasks of one sweep) never corrupt what
another reads: each run owns its folder, single-value files are replaced atomically, metric rows are
whole lines, and the sweep manifest is written atomically."""
import json
import multiprocessing as mp
from pathlib import Path

from abcx.record import RunRecord, atomic_write_json, read_json, read_jsonl


def writer(root: str, index: int, rows: int) -> None:
    record = RunRecord(Path(root) / "runs" / f"run-{index}")
    record.start({"method": {"name": "abc_grpo"}, "seed": index}, config_hash=f"h{index}", max_steps=rows)
    for step in range(1, rows + 1):
        record.append_metrics({"step": step, "reward": step / rows, "pad": "x" * 2000})
        record.set_status("running", step=step)
        # every writer also rewrites the shared index, as a sweep submission does
        atomic_write_json(Path(root) / "sweeps" / "s" / "manifest.json", {"writer": index, "step": step})
    record.finish({"steps": rows})


def reader(root: str, stop, errors) -> None:
    while not stop.is_set():
        for status in Path(root).glob("runs/*/status.json"):
            try:
                json.loads(status.read_text())
                read_json(Path(root) / "sweeps" / "s" / "manifest.json")
            except (json.JSONDecodeError, FileNotFoundError) as err:
                errors.put(repr(err))


def test_parallel_writers_leave_every_file_parseable_and_complete(tmp_path):
    ctx = mp.get_context("fork")
    stop, errors = ctx.Event(), ctx.Queue()
    watcher = ctx.Process(target=reader, args=(str(tmp_path), stop, errors))
    watcher.start()
    writers = [ctx.Process(target=writer, args=(str(tmp_path), i, 150)) for i in range(8)]
    for p in writers:
        p.start()
    for p in writers:
        p.join(timeout=120)
        assert p.exitcode == 0
    stop.set()
    watcher.join(timeout=30)
    assert errors.empty(), errors.get()
    for i in range(8):
        record = RunRecord(tmp_path / "runs" / f"run-{i}")
        assert record.state() == "finished" and record.status()["step"] == 150
        assert [r["step"] for r in read_jsonl(record.metrics_path)] == list(range(1, 151))
    assert read_json(tmp_path / "sweeps" / "s" / "manifest.json")["step"] == 150
    assert not list(tmp_path.rglob("*.tmp"))
