"""Reports: read runs from every source into one runs x metrics table, summarise, render, plot.

Pipeline: `sources` (abcx records, W&B offline folders, W&B online projects, HF/TRL trainer_state.json)
→ `RunSet` (runs table + long history table) → `table` (per-run and per-group summaries, Table 3,
epsilon pivots) → `render` (rich, markdown, csv, latex, json) and `plots` (PNG panels).
`command.run_report` is the one entry point the CLI calls.
"""
