"""Readers that turn one kind of run storage into a `RunSet`, and `discover` that picks the reader.

| module | reads |
|---|---|
| `abcx_records` | abcx run records `results/runs/<run_id>/` (docs/architecture.md) |
| `wandb_offline` | W&B offline run folders `wandb/offline-run-*/run-*.wandb` (via `wandb_log`) |
| `wandb_online` | W&B projects through the public API, behind a Protocol seam |
| `trainer_state` | HF Trainer / TRL `trainer_state.json` `log_history` |
"""
