"""The names of a run folder's files (docs/architecture.md, "The run record"). Only abcx.record uses them:
everything else asks RunRecord (or abcx.record.many) for what a file holds, never for the file."""
from __future__ import annotations

CONFIG = "config.yaml"        # the resolved config, written once at the start
META = "meta.json"            # who/what/where: run id, hash, versions, sweep membership, TRL args
STATUS = "status.json"        # the state (abcx.record.states), step, time and device accounting
CONTROL = "control.json"      # what a sweep asks of the run's training (stop_at, health, stop)
HEARTBEAT = "heartbeat.json"  # the stall watcher's view of the training: last step, its time, step times, timeout
METRICS = "metrics.jsonl"     # one JSON line per logged step
METRICS_ARROW = "metrics.arrow"  # columnar copy of METRICS made at the end (ignored once METRICS changes)
SUMMARY = "summary.json"      # final values and windows of the main metrics
EVAL = "eval.jsonl"           # one JSON line per evaluation
ERROR = "error.txt"           # the traceback of a failure
LIBRARY_LOG = "library.log"   # libraries' warnings and progress bars, kept off the terminal
CHECKPOINTS = "checkpoints"   # trainer checkpoints, checkpoint-<step>/
FINAL = "final"               # the trained model, whole or absent
FINAL_STAGING = ".final.tmp"  # final/ while it is written
LOCK = ".lock"                # held (flock) by the one process that trains the run
RESERVE = ".reserve"          # disk held back to record a failure on a full disk
SUPERSEDED = ".superseded"    # runs/.superseded/<run id>-<UTC time>/: records moved aside, never read by reports
WANDB = "wandb"               # W&B's own offline run folder
CORRUPT_PREFIX = "corrupt-"   # a checkpoint found broken on resume, kept for inspection
CORRUPT_NOTE = "abcx-note.txt"  # inside a corrupt-checkpoint-<step>/: when and why it was moved aside

# Folders inside a record that hold no other run (a scan for runs need not descend into them; wandb/ does hold
# a run, the W&B copy of this one, which a scan of W&B folders reads).
INNER_FOLDERS = (CHECKPOINTS,)
