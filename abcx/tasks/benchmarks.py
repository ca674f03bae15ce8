"""Which benchmarks `abcx eval` and `eval.benchmarks` accept, each resolved to a task's contract.

A benchmark is one of:
- a benchmark a generated task declares (`chain`, `chain_hard`, `arith`; see `abcx.tasks.task_benchmarks`),
  scored by that task's own `is_correct`, the same check that gives its training reward;
- a published math benchmark (`aime24`, `aime25`, `amc23`, `math500`, `hmmt25`), a hub id `owner/name`
  or a local file/folder, under the math task's contract (`abcx.tasks.dapo_math.benchmark_task`: the
  paper's system prompt, math-verify).

The data loading lives in `abcx.tasks.sources` (tasks own their data); it is re-exported here for
callers that only want rows.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any

from abcx.tasks.sources import BENCHMARKS, BenchmarkSpec, answer_text, hub_names, load_benchmark, load_local_dataset, to_rows

__all__ = ["BENCHMARKS", "BenchmarkSpec", "answer_text", "load_benchmark", "load_local_dataset", "to_rows",
           "resolve", "valid_names"]


def valid_names() -> list[str]:
    from abcx.tasks import benchmark_names

    return sorted([*hub_names(), *benchmark_names()])


@lru_cache(maxsize=32)
def resolve(benchmark: str) -> Any:
    """The `Task` whose `eval` split, checker and system prompt define `benchmark`."""
    from abcx.tasks import build_task, task_benchmarks

    declared = task_benchmarks()
    if benchmark in declared:
        task, options = declared[benchmark]
        return build_task(task, **options)
    from abcx.tasks.dapo_math import benchmark_task

    return benchmark_task(benchmark)
