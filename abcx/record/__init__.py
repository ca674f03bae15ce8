"""The run record: `results/runs/<run_id>/`, owned by `RunRecord` (abcx.record.run). Nothing outside
this package names a file of a run folder (abcx.record.layout has the names); the report and the sweep
planner read many records at once through abcx.record.many.

Modules: `run` (RunRecord), `states` (the state and stop-kind vocabularies), `io` (atomic writes,
tolerant JSON readers, shared with the sweep's own files), `checkpoints` (which checkpoint is whole),
`faults` (fault injection for the recovery tests), `many` and `columns` (many records at once).
The names below are the package's public API.
"""
from abcx.record.checkpoints import (  # noqa: F401
    checkpoint_problem, checkpoint_step, checkpoints_of, model_folder_problem,
)
from abcx.record.faults import FAULT_ENV, fault_occurrence, fault_point, fault_spec  # noqa: F401
from abcx.record.io import (  # noqa: F401
    atomic_write_json, atomic_write_text, now_iso, parse_jsonl, read_json, read_jsonl, rewrite_jsonl, step_of,
    warn, warn_skipped,
)
from abcx.record.run import STATES, RunRecord, compact_metrics, device_hours, git_commit, package_versions, \
    runs_dir  # noqa: F401
from abcx.record.states import State, StopKind  # noqa: F401
from abcx.secrets import scrub  # noqa: F401 - credentials are refused in abcx.secrets
