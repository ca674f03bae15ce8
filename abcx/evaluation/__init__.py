"""Evaluation: metrics (`metrics`: Avg@n, unbiased Pass@k, bootstrap CIs), sampling and scoring of
checkpoints (`sampling`, `runner`), `abcx eval` (`command`) and the end-of-run evaluation during
training (`callback`). Which benchmarks exist is the tasks' registry (`abcx.tasks.benchmarks`).

Submodules are imported explicitly (`from abcx.evaluation.metrics import summarise`) so that importing
the package stays free of numpy/datasets.
"""
