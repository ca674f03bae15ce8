"""Every command's contract, as a property (issue #26, section 6): whatever overrides, files and paths
it is given, `abcx ...` exits 0, or exits 2 with one `error:` line (warnings aside) and no traceback,
having created or changed nothing.

Hypothesis drives `train`, `sweep run --dry-run`, `eval`, `report` and `sweep stop/status/cancel` with
generated overrides, sweep files, run records (status, meta, summary, metrics and eval lines, config
replaced by generated values, garbage or a folder), label and metric-map files and paths (missing, a
file, /proc, /dev/full, a token-shaped name). Each example runs in a fresh copy of a small results
folder, through abcx.cli.main in this process (tests.helpers.cli: 5 to 40 times faster than a subprocess
per command; the 300 examples take about 40 s on a 2-core machine, against several minutes as subprocesses).

Bounded, so it runs in CI with every push: examples are derandomized (the same ones every run, no
example database; ABCX_PROPERTY_RANDOM=1 explores others), 300 in all (ABCX_PROPERTY_EXAMPLES=200 is the
default; 1000 gives five times as many), and nothing trains or
evaluates. A `train` whose config composes finds a finished record of that config made beforehand
(it then says "already finished" and exits 0, through the real code); eval targets are refused by
construction. Two tripwires fail the example if a command would train or sample after all."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from tests.helpers import cli, said, tree

SCALE = float(os.environ.get("ABCX_PROPERTY_EXAMPLES", "200")) / 200  # test_validation's knob: 200 = the default
# ABCX_PROPERTY_RANDOM=1 explores other examples (with `--hypothesis-seed N` to repeat a run); CI keeps the fixed ones.
DERANDOMIZE = os.environ.get("ABCX_PROPERTY_RANDOM") != "1"


def contract(examples: int):
    return settings(max_examples=max(1, int(examples * SCALE)), derandomize=DERANDOMIZE, database=None, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                           HealthCheck.data_too_large])


TOKEN = "hf_" + "Ab1" * 12  # shaped like a Hugging Face token (not one)
RUN_IDS = ("grpo-s0-0123456789", "abc_grpo-s1-0123456789")
TEXT = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=12)
ODD = ("", " ", "-", "x y", "../..", "/", "\udcff", "é", "*", "[", "${oc.env:HF_TOKEN}", "${nope}", TOKEN,
       "sk-" + "a" * 30, "'", "\\", "%s", "a=b", "a,b")


def _text():
    return st.one_of(st.sampled_from(ODD), TEXT)


def weighted(*choices):
    """One of the strategies, the first the most often: (weight, strategy) pairs. Hypothesis draws the
    index as an integer, which it shrinks and reuses towards 0, so the first is what its simplest
    examples hold."""
    table = [strategy for weight, strategy in choices for _ in range(weight)]
    return st.integers(0, len(table) - 1).flatmap(lambda i: table[i])


def mostly(usual, *rare):
    """`usual` (a value) three times in four, else one of the `rare` strategies: a refused option now and
    then, so that most examples get past the options to the code that reads files."""
    return weighted((3, st.just(usual)), (1, st.one_of(*rare)))


JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) |
                    st.floats(allow_nan=False, allow_infinity=False) | TEXT,
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3),
                    max_leaves=6)


# --- the folder every example starts from: two finished records, a sweep of them, a trainer folder ----

def _template() -> Path:
    from abcx.report.synth import write_record
    from abcx.sweep import manifest

    root = Path(tempfile.mkdtemp(prefix="abcx-contract-"))
    results = root / "results"
    evals = [{"step": 3, "benchmark": "chain", "n": 2, "sampling": {"n": 2}, "metrics": {"avg@2": 0.5, "pass@2": 0.75},
              "ci": {}, "per_problem": [[2, 1], [2, 2]]}]
    for seed, run_id in enumerate(RUN_IDS):
        write_record(str(results / "runs"), run_id, method=run_id.split("-")[0], seed=seed, steps=[1, 2, 3],
                     metrics={"reward": [0.1, 0.2, 0.3 + seed], "entropy": [0.5, 0.4, 0.3]}, evals=evals,
                     config={"method": {"eps3": 0.2 + seed}, "model": {"name": "tiny"}})
    manifest.update(results, "s", lambda m: m.update(name="s", backend="local", runs=[
        {"run_id": r, "overrides": [f"seed={i}"], "index": i} for i, r in enumerate(RUN_IDS)]))
    trainer = root / "trainer" / "checkpoint-3"
    trainer.mkdir(parents=True)
    (trainer / "trainer_state.json").write_text(json.dumps({"global_step": 3, "max_steps": 3, "log_history": [
        {"step": s, "loss": 0.1 * s, "completions/mean_length": 10.0 + s} for s in (1, 2, 3)]}))
    (root / "file.txt").write_text("not a folder\n")
    (root / "folder").mkdir()
    return root


@pytest.fixture(scope="module")
def template():
    root = _template()
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def sandbox(template, monkeypatch):
    """A fresh copy of the template per example (the working directory), offline, and the tripwires."""
    import abcx.evaluation.runner as runner
    from abcx.record import RunRecord

    def tripwire(what):
        def fail(*_a, **_k):
            raise AssertionError(f"the contract test must not {what}: a generated input was not refused")
        return fail

    # Where training starts, before the run's folder or lock is made; sampling for an evaluation.
    monkeypatch.setattr(RunRecord, "exclusive", tripwire("train"))
    monkeypatch.setattr(runner, "evaluate", tripwire("evaluate"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(template / "no-hub-cache"))
    home = Path.cwd()
    copies = []

    def fresh() -> Path:
        os.chdir(home)
        while copies:  # the previous example's
            shutil.rmtree(copies.pop(), ignore_errors=True)
        root = Path(tempfile.mkdtemp(prefix="abcx-example-"))
        shutil.copytree(template, root, dirs_exist_ok=True)
        copies.append(root)
        os.chdir(root)
        return root

    yield fresh
    os.chdir(home)
    for root in copies:
        shutil.rmtree(root, ignore_errors=True)


def holds(args: list[str], root: Path, *, writes: bool = True) -> int:
    """Run `abcx ARGS` in root and check the contract; `writes=False`: nothing changes even on exit 0."""
    before = tree(root)
    code, out, err = cli(*args)
    assert "Traceback" not in out + err, f"abcx {args}\n{err[-3000:]}"
    lines = err.strip().splitlines()
    if code == 2:
        errors = [line for line in lines if line.startswith("error: ")]
        others = [line for line in said(err) if not line.startswith(("error: ", "warning: ", "note: "))]
        assert len(errors) == 1 and not others, f"abcx {args}: exit 2 with\n{err[-3000:]}"
    else:
        assert code == 0, f"abcx {args}: exit {code}\n{out[-2000:]}\n{err[-3000:]}"
    if code == 2 or not writes:
        assert tree(root) == before, f"abcx {args} (exit {code}) changed files"
    if code == 2:  # what refused it, for --hypothesis-show-statistics
        event("exit 2: " + errors[0].replace(str(root), "ROOT").removeprefix("error: ")[:60])
    else:
        event("exit 0")
    return code


# --- overrides (train, sweep run) ---------------------------------------------------------------------

KEYS = ("seed", "train.max_steps", "train.learning_rate", "train.save_steps", "method", "method.eps3", "method.eta",
        "model.path", "results_dir", "train.use_vllm", "name", "group", "tags", "eval.n", "eval.benchmarks", "task",
        "logger", "+train.extra.foo", "launcher.max_parallel", "~seed", "method.schedule", "eval.max_problems", "")
VALUES = ("0", "1", "-1", "2", "1e9", "inf", "nan", "null", "true", "grpo", "abc_grpo", "abc_adaptive", "[chain]",
          "[nope]", "/etc", "/nonexistent", "/proc/abcx", "/sys/abcx", "someone/uncached", "file.txt", "folder",
          "file.txt/below", "{a: 1}", "''", "[a, b]", "linear", "none", "chain", "arith")


def _override():
    value = mostly(None, _text()).flatmap(lambda v: st.sampled_from(VALUES) if v is None else st.just(v))
    return st.tuples(st.sampled_from(KEYS), value).map(
        lambda kv: kv[0] if kv[0].startswith("~") else f"{kv[0]}={kv[1]}")


OVERRIDES = st.lists(_override(), max_size=3)
BASE = ["model=tiny", "task=chain", "train=testbed", "logger=none", "eval.at_end=false"]


def _finished_record_for(overrides: list[str], root: Path) -> None:
    """A finished record of the config `abcx train OVERRIDES` composes, where it composes and its
    results_dir lies in root: the command then ends at "already finished" instead of training. A
    results_dir elsewhere that abcx could write to (root may write /etc) is no example for this test."""
    from hypothesis import assume

    from abcx.config.compose import compose
    from abcx.config.identity import run_id
    from abcx.errors import UserError
    from abcx.paths import check_results_dir
    from abcx.report.synth import write_record

    try:
        cfg = compose(overrides)
    except UserError:
        return
    results = Path(str(cfg.results_dir)).absolute()
    if os.path.commonpath([results, root]) != str(root):
        try:
            check_results_dir(results)
        except UserError:
            return  # refused by abcx too
        assume(False)
    try:
        write_record(str(results / "runs"), run_id(cfg), method=str(cfg.method.name), seed=int(cfg.seed), steps=[1],
                     metrics={"reward": [0.5]})
    except (OSError, ValueError):
        return


@contract(60)
@given(overrides=OVERRIDES, cfg=mostly(None, st.sampled_from(["job", "hydra"])))
def test_train(sandbox, overrides, cfg):
    root = sandbox()
    args = [*BASE, *overrides]
    if cfg is None:
        _finished_record_for(args, root)
    holds(["train", *args, *(["--cfg", cfg] if cfg else [])], root)


# --- sweep files (sweep run --dry-run: nothing is written, whatever the exit code) -------------------------

STRATEGY = st.one_of(
    st.none(), JSON,
    st.fixed_dictionaries({"name": st.sampled_from(["grid", "halving", "seeds", "optuna", "nope"])},
                          optional={"rungs": st.one_of(st.lists(st.integers(-2, 10), max_size=3), JSON),
                                    "eta": st.one_of(st.integers(-1, 4), JSON), "metric": st.one_of(
                                        st.sampled_from(["reward", "eval/chain/avg@2", "bogus", TOKEN]), JSON),
                                    "window": st.integers(-1, 3), "health": JSON, "budget": JSON,
                                    "trials": st.integers(-1, 3), "space": JSON, "min": st.integers(-1, 3)}))
VALID_SWEEP = {"name": "ok", "fixed": ["train.max_steps=4"], "grid": {"seed": ["0", "1"]}}
EDITED_SWEEP = st.fixed_dictionaries({}, optional={
        "name": mostly("ok", st.sampled_from(["a.b-c_d", TOKEN, "../up", "", 2024, True]), JSON),
        "description": _text(), "fixed": mostly(VALID_SWEEP["fixed"], st.lists(_override(), max_size=3), JSON),
        "grid": mostly(VALID_SWEEP["grid"], st.dictionaries(
            st.sampled_from(["seed", "method", "method.eps3", "train.max_steps"]),
            st.lists(st.sampled_from(["0", "1", "grpo", "abc_grpo", "0.2", "-1", "x"]), max_size=2), max_size=2), JSON),
        "points": mostly([], st.lists(st.lists(_override(), max_size=2), max_size=2), JSON),
        "strategy": mostly(None, STRATEGY)}).map(lambda changes: {**VALID_SWEEP, **changes})
SWEEP_FILE = weighted((7, EDITED_SWEEP), (1, JSON), (1, st.just({**VALID_SWEEP, "nope": 1})),
                      (1, st.sampled_from(["a: &x [1]\nb: *x\n", "[" * 100 + "]" * 100, "\xff\xfe", ":", "- [\n"])))


@contract(60)
@given(sweep=SWEEP_FILE, overrides=OVERRIDES, name=mostly("FILE", st.sampled_from(["demo", "nope", TOKEN])))
def test_sweep_run_dry_run(sandbox, sweep, overrides, name):
    root = sandbox()
    path = root / "sweep.yaml"
    if isinstance(sweep, str):
        path.write_bytes(sweep.encode("utf-8", "surrogateescape"))
    else:
        with open(path, "w", encoding="utf-8", errors="surrogateescape") as fh:  # "\udcff": a byte 0xff
            yaml.safe_dump(sweep, fh, allow_unicode=True)
    target = str(path) if name == "FILE" else name
    holds(["sweep", "run", target, "--dry-run", *BASE[:3], *overrides], root, writes=False)


# --- eval: targets that are no loadable model, in every way ----------------------------------------------

def _damaged_run(root: Path, how: str) -> str:
    from abcx.record import RunRecord

    record = RunRecord(root / "results" / "runs" / RUN_IDS[0])
    final = record.final_path
    final.mkdir(exist_ok=True)
    if how == "garbage weights":
        (final / "config.json").write_text("{}")
        (final / "model.safetensors").write_bytes(b"\xff" * 64)
    elif how == "torn config":
        (final / "config.json").write_text('{"model_type": "qw')
    elif how == "no weights":
        (final / "config.json").write_text("{}")
    elif how == "torn checkpoint":
        shutil.rmtree(final)
        (record.checkpoints / "checkpoint-3").mkdir(parents=True)
    else:  # no final, no checkpoint
        shutil.rmtree(final)
    return str(record.path)


EVAL_TARGETS = st.one_of(st.sampled_from(["/nonexistent", "/etc", "/proc", "file.txt", "folder", "someone/uncached",
                                          TOKEN, "x/y/z", "results", RUN_IDS[1], "trainer/checkpoint-3", "-"]),
                         st.sampled_from(["garbage weights", "torn config", "no weights", "torn checkpoint", "bare"]))


@contract(40)
@given(target=EVAL_TARGETS, overrides=st.lists(_override(), max_size=2), every=st.booleans(),
       backend=mostly("auto", st.sampled_from(["hf", "nope"])))
def test_eval(sandbox, target, overrides, every, backend):
    root = sandbox()
    if target in ("garbage weights", "torn config", "no weights", "torn checkpoint", "bare"):
        target = _damaged_run(root, target)
    args = ["eval", target, *overrides, "--backend", backend, *(["--all-checkpoints"] if every else [])]
    assert holds(args, root) == 2  # none of these can be evaluated


# --- report: records with generated damage, foreign files, every option --------------------------------------

RECORD_FILES = ("status.json", "meta.json", "summary.json", "metrics.jsonl", "eval.jsonl", "config.yaml")
STATUS_FIELDS = ("state", "step", "max_steps", "error", "updated", "stop", "gpu_hours", "elapsed_s")
META_FIELDS = ("run_id", "method", "seed", "group", "sweep", "sweeps", "tags", "config_hash", "quadrants")
LINE = st.one_of(
    st.fixed_dictionaries({"step": st.integers(-1, 5)},
                          optional={"reward": st.floats(), "entropy": JSON}).map(json.dumps),
    st.fixed_dictionaries({"step": JSON}, optional={"reward": JSON}).map(json.dumps),
    JSON.map(json.dumps), st.sampled_from(["", "{", "\xff\xfe", "[1, 2]", '{"step": 1, "reward": NaN}']))
RECORD_DAMAGE = st.one_of(
    st.tuples(st.just("field"), st.sampled_from(RUN_IDS), st.sampled_from(["status.json", "meta.json"]),
              st.sampled_from(STATUS_FIELDS + META_FIELDS), JSON),
    st.tuples(st.just("lines"), st.sampled_from(RUN_IDS), st.sampled_from(["metrics.jsonl", "eval.jsonl"]),
              st.lists(LINE, max_size=4)),
    st.tuples(st.just("content"), st.sampled_from(RUN_IDS), st.sampled_from(RECORD_FILES),
              st.one_of(JSON.map(json.dumps), st.sampled_from(["", "\xff", "a: &x 1\nb: *x", "[" * 100000]))),
    st.tuples(st.just("folder"), st.sampled_from(RUN_IDS), st.sampled_from(RECORD_FILES)),
)
DAMAGE = st.one_of(RECORD_DAMAGE, st.tuples(st.just("trainer"), st.one_of(JSON.map(json.dumps), st.sampled_from([
    '{"log_history": 5}', '{"log_history": [{"step": "x", "loss": 1}, {"step": 2, "loss": "nan"}, 7]}']))))


def _damage(root: Path, damage: tuple) -> None:
    kind, *rest = damage
    if kind == "trainer":
        (root / "trainer" / "checkpoint-3" / "trainer_state.json").write_text(rest[0])
        return
    run, name, *value = rest
    path = root / "results" / "runs" / run / name
    original = path.read_text(errors="replace") if path.is_file() else "{}"
    shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    (root / "results" / "runs" / run / "metrics.arrow").unlink(missing_ok=True)  # else its copy is read instead
    if kind == "field":
        try:
            data = json.loads(original)
        except ValueError:  # an earlier damage left no JSON object to change a field of
            data = {}
        data = data if isinstance(data, dict) else {}
        data[value[0]] = value[1]
        path.write_text(json.dumps(data))
    elif kind == "lines":
        path.write_bytes("\n".join(value[0]).encode("utf-8", "surrogateescape"))
    elif kind == "content":
        path.write_bytes(value[0].encode("utf-8", "surrogateescape"))
    else:
        path.mkdir()


def _no_pids(value) -> bool:
    """Nothing that names a process: `sweep cancel` and `stop` signal the pids a manifest or record names."""
    text = json.dumps(value, default=str)
    return "job_id" not in text and "supervisor" not in text


REPORT_SOURCES = ("results", "results", f"results/runs/{RUN_IDS[0]}", "results/runs/*", "trainer",
                  "trainer/checkpoint-3", "nope", "file.txt", "/proc/self", "folder", TOKEN)
OUT = mostly(None, st.sampled_from(["report.out", "new/dir/report.out"]),
             st.sampled_from(["folder", "/proc/report.md", "/dev/full", "file.txt/below", TOKEN]))
YAML_FILE = mostly(None, st.sampled_from(["folder", "/dev/zero", "missing.yaml"]),
                      JSON.map(lambda v: yaml.safe_dump(v, allow_unicode=True)),
                      st.sampled_from(["rename: {reward: step}", "rename: {loss: reward}", "'*': {method: grpo}",
                                       "'*': {seed: x}", "use_layout: {'*': trl}", "layouts: {mine: {clip/q1: [a]}}",
                                       f"'*': {{model: {TOKEN}}}", "derive: {x: [loss, loss]}", "a: &x 1\nb: *x"]))


@contract(80)
@given(damage=st.lists(DAMAGE, max_size=2), sources=st.lists(st.sampled_from(REPORT_SOURCES), min_size=1, max_size=2),
       fmt=st.sampled_from(["rich", "markdown", "csv", "latex", "json", "rich", "csv", "json", "html"]), out=OUT,
       options=st.lists(st.one_of(
           st.tuples(st.sampled_from(["--last-n", "--smooth"]), st.integers(-1, 3).map(str)),
           st.tuples(st.sampled_from(["--group-by", "--baseline", "--sweep", "--group", "--tag"]),
                     st.one_of(st.sampled_from(["method", "seed", "cfg.method.eps3", "grpo", "s", "nope"]), _text())),
           st.tuples(st.just("--pivot"), st.sampled_from(["method,seed", "cfg.method.eps3,seed,reward_final", "a",
                                                          "method,nope", "a,b,c,d"])),
           st.tuples(st.just("--label"), st.one_of(st.sampled_from(["*=method:x", "*=seed:1", "=", "*=nope:1",
                                                                    f"*=model:{TOKEN}"]), _text()))), max_size=3),
       labels=YAML_FILE, metric_map=YAML_FILE)
def test_report(sandbox, damage, sources, fmt, out, options, labels, metric_map):
    root = sandbox()
    for d in damage:
        _damage(root, d)
    args = ["report", *sources, "--format", fmt, *(["--out", out] if out else [])]
    for option, value in options:
        args += [option, value]
    for option, text in (("--labels", labels), ("--metric-map", metric_map)):
        if text is None:
            continue
        if text in ("folder", "/dev/zero", "missing.yaml"):
            args += [option, text]
        else:
            (root / f"{option[2:]}.yaml").write_text(text)
            args += [option, f"{option[2:]}.yaml"]
    holds(args, root)


# --- sweep stop, status, cancel ----------------------------------------------------------------------------

MANIFEST = st.one_of(st.none(), JSON.map(json.dumps), st.sampled_from(["", "{", "\xff"]),
                     st.fixed_dictionaries({"name": st.just("s"), "backend": st.sampled_from(["local", "nope", 5])},
                                           optional={"runs": st.lists(st.fixed_dictionaries(
                                               {"run_id": st.one_of(st.sampled_from([*RUN_IDS, "../x", "", TOKEN]),
                                                                    JSON)},
                                               optional={"overrides": JSON, "index": JSON}), max_size=3),
                                               "stop": JSON, "results_dir": JSON}).map(json.dumps))


@contract(60)
@given(command=st.sampled_from(["stop", "status", "cancel"]),
       name=mostly("s", st.sampled_from(["nope", TOKEN, "../s", "", "s/x", "."]), _text()),
       results_dir=mostly(None, st.sampled_from(["results", "file.txt", "/proc/abcx", "nope", "folder"])),
       manifest=mostly(None, MANIFEST.filter(_no_pids)), damage=st.lists(RECORD_DAMAGE.filter(_no_pids), max_size=1),
       reason=st.one_of(st.none(), _text()), grace=mostly(None, st.sampled_from(["0", "1", "-1", "inf", "nan", "1e9"])),
       runs=st.lists(st.sampled_from([*RUN_IDS, "nope", TOKEN]), max_size=2))
def test_sweep_stop_status_cancel(sandbox, command, name, results_dir, manifest, damage, reason, grace, runs):
    root = sandbox()
    if manifest is not None:  # never a supervisor or job id: `cancel` signals the pids a manifest names
        (root / "results" / "sweeps" / "s" / "manifest.json").write_text(manifest)
    for d in damage:
        _damage(root, d)
    args = ["sweep", command, name, *(["--results-dir", results_dir] if results_dir else [])]
    if command == "stop":
        args += [*(["--reason", reason] if reason is not None else []), *(["--grace", grace] if grace else [])]
        args += [x for r in runs for x in ("--run", r)]
    holds(args, root)
