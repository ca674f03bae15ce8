"""Problem data as plain rows: `[{"problem": str, "answer": str, "id": str}, ...]`.

A source is a short name of a published math benchmark (loaded from the Hugging Face hub, or from
its local cache when offline), a local file (`.jsonl`, `.json`, `.parquet`) or a local folder
(`save_to_disk` output, or a snapshot of a hub dataset repository with `data/<split>-*.parquet`
files). Local data is read with pyarrow, so nothing is written to the datasets cache. Column names
are found by a preference list, so local copies of any of the hub datasets below load the same way.

This module belongs to the tasks (a task's training data and a math benchmark are read the same
way); evaluation imports it, never the other way round. The procedurally generated testbed tasks
(arith, chain) declare their own benchmarks in their modules (`abcx.tasks.benchmarks` joins both).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from abcx.errors import UserError


@dataclass(frozen=True)
class BenchmarkSpec:
    hub_id: str
    split: str | None  # None: the dataset's only split
    problem: str
    answer: str
    id: str | None
    config: str | None = None


# Hub datasets and their columns, as published (checked November 2026 on their dataset cards).
BENCHMARKS: dict[str, BenchmarkSpec] = {
    # 30 problems, AIME 2024 I+II; columns id, problem, solution, answer, url, year.
    "aime24": BenchmarkSpec("HuggingFaceH4/aime_2024", "train", "problem", "answer", "id"),
    # 30 problems, AIME 2025 I+II; columns problem_idx, problem, answer (int64), problem_type.
    # Chosen over yentinglin/aime_2025 and opencompass/AIME2025: same schema as hmmt25 below.
    "aime25": BenchmarkSpec("MathArena/aime_2025", "train", "problem", "answer", "problem_idx"),
    # 40 problems, AMC 2023; columns id, question, answer (a number), url.
    "amc23": BenchmarkSpec("math-ai/amc23", "test", "question", "answer", "id"),
    # 500 problems; columns problem, solution, answer, subject, level, unique_id.
    "math500": BenchmarkSpec("HuggingFaceH4/MATH-500", "test", "problem", "answer", "unique_id"),
    # 30 problems, HMMT February 2025; columns problem_idx, problem, answer (string), problem_type.
    "hmmt25": BenchmarkSpec("MathArena/hmmt_feb_2025", "train", "problem", "answer", "problem_idx"),
}

# For local data and unknown hub ids: first column present wins. "solution" is last for answers:
# in MATH-style data it is a worked solution, and only DAPO-style data uses it for the answer.
PROBLEM_COLUMNS = ("problem", "question", "prompt", "Problem", "input")
ANSWER_COLUMNS = ("answer", "final_answer", "ground_truth", "label", "target", "expected_answer", "Answer", "solution")
ID_COLUMNS = ("id", "unique_id", "problem_idx", "idx", "ID", "index")

LOCAL_SUFFIXES = (".jsonl", ".json", ".parquet")
_SPLIT_NAMES = {"train", "test", "validation", "valid", "dev", "eval"}


def hub_names() -> list[str]:
    return sorted(BENCHMARKS)


def answer_text(value: Any) -> str:
    """Gold answer as a string: 27.0 → "27", [x, …] → x (some datasets list equivalent forms)."""
    if isinstance(value, (list, tuple)):
        if not value:
            return ""
        value = value[0]
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


# ---------------------------------------------------------------- local tables


def _read_file(path: Path) -> Any:
    import datasets
    import pyarrow as pa

    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        return datasets.Dataset(pq.read_table(path))
    if suffix == ".jsonl":
        import pyarrow.json as pj

        return datasets.Dataset(pj.read_json(path))
    if suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(data, dict):  # {"data": [...]} or {"train": [...], ...}: the one list inside
            lists = [v for v in data.values() if isinstance(v, list)]
            if len(lists) != 1:
                raise UserError(f"benchmark file {path}: a JSON object must hold exactly one list of rows")
            data = lists[0]
        if not isinstance(data, list):
            raise UserError(f"benchmark file {path}: expected a JSON list of rows")
        return datasets.Dataset(pa.Table.from_pylist(data))
    raise UserError(f"benchmark file {path}: unsupported suffix {suffix!r}; valid: {', '.join(LOCAL_SUFFIXES)}")


def _split_files(folder: Path, split: str | None) -> tuple[list[Path], list[str]]:
    """Data files of one split in a hub-style folder (`<split>-00000-of-00001.parquet`, `<split>.jsonl`)."""
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in LOCAL_SUFFIXES)
    files = [p for p in files if not any(part.startswith(".") for part in p.relative_to(folder).parts)]
    by_split: dict[str, list[Path]] = {}
    for p in files:
        by_split.setdefault(p.name.split("-")[0].split(".")[0], []).append(p)
    if split is not None and split in by_split:
        return by_split[split], sorted(by_split)
    # One group of files whose names name no split (e.g. a lone "aime.jsonl") serves any split.
    if len(by_split) == 1 and (split is None or next(iter(by_split)) not in _SPLIT_NAMES):
        return next(iter(by_split.values())), sorted(by_split)
    return [], sorted(by_split)


def load_local_dataset(path: str | Path, split: str | None = None, subset: str | None = None) -> Any:
    """A `datasets.Dataset` from a local file or folder (see module docstring).

    `subset` picks a sub-folder of a hub snapshot holding several configs (DAPO's `en/`, `all/`).
    `split` picks a split of a `DatasetDict` folder or of a hub snapshot; single files have one.
    """
    import datasets

    path = Path(path).expanduser()
    if not path.exists():
        raise UserError(f"dataset path {str(path)!r} does not exist")
    if path.is_file():
        return _read_file(path)
    if subset and (path / subset).is_dir():
        path = path / subset
    if (path / "dataset_dict.json").exists():
        dd = datasets.load_from_disk(str(path))
        if split is None and len(dd) == 1:
            return next(iter(dd.values()))
        if split not in dd:
            raise UserError(f"dataset {str(path)!r}: split={split!r} not found; valid: {', '.join(dd)}")
        return dd[split]
    if (path / "dataset_info.json").exists() or (path / "state.json").exists():
        return datasets.load_from_disk(str(path))
    files, splits = _split_files(path, split)
    if not files:
        if not splits:
            raise UserError(f"dataset folder {str(path)!r} holds no {'/'.join(LOCAL_SUFFIXES)} files")
        raise UserError(f"dataset folder {str(path)!r}: split={split!r} not found; valid: {', '.join(splits)}")
    parts = [_read_file(p) for p in files]
    return parts[0] if len(parts) == 1 else datasets.concatenate_datasets(parts)


# ---------------------------------------------------------------- rows


def _pick(columns: list[str], preferred: str | None, candidates: tuple[str, ...]) -> str | None:
    if preferred and preferred in columns:
        return preferred
    return next((c for c in candidates if c in columns), None)


def to_rows(dataset: Any, spec: BenchmarkSpec | None = None, source: str = "dataset") -> list[dict[str, str]]:
    """Rows {problem, answer, id} of a dataset, using spec's columns when present, else the usual names.

    A chat-message prompt gives its user turns as the problem.
    """
    columns = list(dataset.column_names)
    problem = _pick(columns, spec.problem if spec else None, PROBLEM_COLUMNS)
    answer = _pick(columns, spec.answer if spec else None, ANSWER_COLUMNS)
    ident = _pick(columns, spec.id if spec else None, ID_COLUMNS)
    # veRL-style files (data_source, prompt, reward_model{ground_truth}) keep the answer nested.
    nested = answer is None and "reward_model" in columns
    if problem is None or (answer is None and not nested):
        raise UserError(
            f"benchmark {source}: needs a problem column ({', '.join(PROBLEM_COLUMNS)}) and an answer column "
            f"({', '.join(ANSWER_COLUMNS)}); found {', '.join(columns)}"
        )
    rows = []
    for i, row in enumerate(dataset):
        text = row[problem]
        if not isinstance(text, str):  # a chat prompt: the user's turn is the problem
            text = "\n\n".join(m["content"] for m in text if m.get("role") == "user")
        rows.append(
            {
                "problem": text,
                "answer": answer_text(row["reward_model"]["ground_truth"] if nested else row[answer]),
                "id": str(row[ident]) if ident is not None and row[ident] is not None else str(i),
            }
        )
    return rows


def _from_hub(name: str, spec: BenchmarkSpec, split: str | None) -> Any:
    import datasets

    split = split or spec.split
    try:
        data = datasets.load_dataset(spec.hub_id, spec.config, split=split)
    except Exception as e:  # offline, renamed, gated: the user needs the id and the way out
        raise UserError(
            f"benchmark {name!r}: could not load {spec.hub_id} (split {split}) from the hub: "
            f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}; on an offline machine pass a local "
            f".jsonl/.parquet path or a folder saved with datasets.save_to_disk"
        ) from e
    if isinstance(data, datasets.DatasetDict):
        if len(data) != 1:
            raise UserError(f"benchmark {name!r} has splits {', '.join(data)}; pass split=")
        data = next(iter(data.values()))
    return data


def _looks_like_hub_id(name: str) -> bool:
    return name.count("/") == 1 and not name.startswith((".", "/", "~")) and Path(name).suffix == ""


def load_benchmark(name_or_path: str, split: str | None = None) -> list[dict[str, str]]:
    """Problems of a benchmark: a name (`valid_names()`), a hub id `owner/name`, or a local path."""
    name = str(name_or_path)
    if name in BENCHMARKS:
        spec = BENCHMARKS[name]
        return to_rows(_from_hub(name, spec, split), spec, source=name)
    path = Path(name).expanduser()
    if path.exists():
        return to_rows(load_local_dataset(path, split=split), source=str(path))
    if _looks_like_hub_id(name):
        spec = BenchmarkSpec(name, None, "problem", "answer", None)
        return to_rows(_from_hub(name, spec, split), source=name)
    from abcx.tasks import benchmark_names

    valid = sorted([*BENCHMARKS, *benchmark_names()])
    raise UserError(f"benchmark {name!r} is neither a known name nor an existing path; valid names: {', '.join(valid)}")
