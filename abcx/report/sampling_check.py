"""Runs are comparable on Avg@k / Pass@k only if they were sampled the same way (n, temperature,
top_p, top_k, max length): find the benchmarks where runs in one report disagree."""
from __future__ import annotations

import json
import os
from typing import Iterable

from abcx.record import read_jsonl


def sampling_conflicts(run_paths: Iterable[str]) -> list[str]:
    seen: dict[str, dict[str, str]] = {}  # benchmark -> sampling json -> first run with it
    for path in run_paths:
        file = os.path.join(str(path), "eval.jsonl")
        if not os.path.exists(file):
            continue
        for row in read_jsonl(file):  # the record's tolerant reader: unreadable lines skipped, with a warning
            sampling = row.get("sampling")
            if isinstance(sampling, dict):
                key = json.dumps({k: v for k, v in sampling.items() if k != "seed"}, sort_keys=True)
                seen.setdefault(row.get("benchmark", "?"), {}).setdefault(key, os.path.basename(str(path)))
    return [
        f"WARNING: runs were evaluated on {bench} with different sampling settings, so their Avg@k/Pass@k are "
        f"not comparable: " + " vs ".join(f"{run}: {settings}" for settings, run in variants.items())
        for bench, variants in seen.items() if len(variants) > 1
    ]
