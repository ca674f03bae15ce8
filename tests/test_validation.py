"""Every invalid input is refused before any work: `abcx train`, every point of `abcx sweep run`
(including --dry-run) and `abcx eval` exit 2 with one line naming the field, no traceback, and no run
folder. Each case below was once accepted, or failed only after a run folder existed, or with a
traceback. The bulk goes through the CLI's entry point in this process (it is what `abcx` runs);
a few go through a real `abcx` process, to pin the process-level contract."""
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from abcx.config.compose import compose
from abcx.config import domains
from abcx.errors import UserError
from tests.helpers import said

REPO = Path(__file__).resolve().parent.parent

# (overrides, the field the message must name)
CASES = [
    (["seed=-1"], "seed"),
    (["seed=4294967296"], "seed"),
    (["train.temperature=0"], "train.temperature"),
    (["+train.extra.nonsense=1"], "train.extra.nonsense"),
    (["eval.benchmarks=[nope]"], "eval.benchmarks"),
    (["model.dtype=bogus"], "model.dtype"),
    (["train.top_k=-5"], "train.top_k"),
    (["+task.options.nonsense=1"], "task.options.nonsense"),
    (["train.max_steps=100000000000000000000000"], "train.max_steps"),
    (["train.top_p=2"], "train.top_p"),
    (["train.top_p=0"], "train.top_p"),
    (["train.max_grad_norm=nan"], "train.max_grad_norm"),
    (["train.max_grad_norm=inf"], "train.max_grad_norm"),
    (["eval.max_problems=-1"], "eval.max_problems"),
    (["eval.max_problems=0"], "eval.max_problems"),
    (["~seed"], "seed"),
    (["x" * 20_000 + "=1"], "key"),
    (["method.eps1=1e308"], "method.eps1"),
    (["train.lr_scheduler_type=bogus"], "train.lr_scheduler_type"),
    (["train.warmup_steps=-1"], "train.warmup_steps"),
    (["train.warmup_steps=1.5"], "train.warmup_steps"),
    (["train.scale_rewards=bogus"], "train.scale_rewards"),
    (["train.learning_rate=-1"], "train.learning_rate"),
    (["train.num_train_epochs=0"], "train.num_train_epochs"),
    (["train.vllm_mode=bogus"], "train.vllm_mode"),
    (["eval.top_p=1.5"], "eval.top_p"),
    (["eval.temperature=-1"], "eval.temperature"),
    (["eval.seed=-3"], "eval.seed"),
    (["eval.benchmarks=[../no/such/file.jsonl]"], "eval.benchmarks"),
    (["logger.name=bogus"], "logger.name"),
    (["launcher.timeout_min=0"], "launcher.timeout_min"),
    (["+train.extra.epsilon=0.3"], "method.eps_low"),  # TRL's epsilon is abcx's method bounds
    (["+train.extra.seed=3"], "train.extra.seed"),
    (["+train.extra.learning_rate=0.1"], "train.learning_rate"),
    (["+train.extra.optim=bogus"], "train.extra.optim"),  # transformers' own enum check, named
    (["+train.extra.torch_empty_cache_steps=-3"], "train.extra.torch_empty_cache_steps"),  # transformers' own check
    (["+train.extra.mask_truncated_completions=3"], "train.extra.mask_truncated_completions"),  # wrong type
    (["+task.options.n_eval=abc"], "task.options.n_eval"),
    (["group=${oc.env:ABCX_TEST_SURELY_UNSET}"], "group"),  # interpolation errors name the field
    (["name=${nope}"], "name"),
]
IDS = [" ".join(o)[:50] for o, _ in CASES]


def cli(argv: list[str], capsys) -> tuple[int, str]:
    """`abcx ARGV` through the CLI's entry point: (exit code, stderr)."""
    from abcx.cli import main

    old = sys.argv
    sys.argv = ["abcx", *argv]
    try:
        main()
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    finally:
        sys.argv = old
    return code, capsys.readouterr().err


def assert_refused(code: int, err: str, field: str, results: Path) -> None:
    lines = [line for line in said(err) if not line.startswith("warning:")]
    assert code == 2, err[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), err[-2000:]
    assert field in lines[0], lines[0]
    assert "Traceback" not in err
    assert not results.exists(), f"{results} was created for an invalid config"


@pytest.mark.parametrize("overrides,field", CASES, ids=IDS)
def test_abcx_train_refuses_before_creating_anything(overrides, field, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    results = tmp_path / "results"
    code, err = cli(["train", *overrides, f"results_dir={results}", "logger=none"], capsys)
    assert_refused(code, err, field, results)


@pytest.mark.parametrize("overrides,field", CASES, ids=IDS)
def test_every_sweep_point_is_refused_on_a_dry_run(overrides, field, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    results = tmp_path / "results"
    code, err = cli(["sweep", "run", "smoke", "--dry-run", *overrides, f"results_dir={results}"], capsys)
    assert_refused(code, err, field, results)


@pytest.mark.parametrize("overrides,field", CASES, ids=IDS)
def test_abcx_eval_refuses_before_loading_anything(overrides, field, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    results = tmp_path / "results"
    code, err = cli(["eval", str(tmp_path / "model"), *overrides, f"results_dir={results}"], capsys)
    assert_refused(code, err, field, results)


def test_a_sweep_file_with_one_bad_point_submits_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sweep = tmp_path / "bad.yaml"
    sweep.write_text("name: bad\nfixed: [logger=none, train.max_steps=2]\ngrid:\n  seed: [0, 1, -1]\n")
    results = tmp_path / "results"
    code, err = cli(["sweep", "run", str(sweep), f"results_dir={results}"], capsys)
    assert_refused(code, err, "seed", results)
    assert "point 3 [" in err and "seed=-1" in err


def test_grpo_config_is_built_once_per_distinct_set_of_trainer_arguments(monkeypatch):
    """The sweep planner validates every point; TRL's GRPOConfig is built per distinct arguments."""
    from abcx.config import trl_args
    from abcx.sweep import plan

    compose([])  # warm: the default's arguments are built (the planner's base config)
    built = []
    real = trl_args._build
    monkeypatch.setattr(trl_args, "_build", lambda kwargs, extra: built.append(1) or real(kwargs, extra))
    monkeypatch.setattr(trl_args, "_DISK", set())  # as on a machine that never validated these
    points = [(f"seed={s}", f"train.learning_rate={lr}", f"method.eps3={e}")
              for s in (9101, 9102) for lr in (1e-4, 2e-4) for e in (0.2, 0.3, 0.4)]
    planned = plan.build(points)
    assert len(planned) == 12
    assert len(built) == 4  # seed x learning rate; the clip bound eps3 is not a trainer argument


@pytest.mark.parametrize("argv,field", [
    (["train", "seed=-1"], "seed"),
    (["sweep", "run", "smoke", "--dry-run", "train.top_p=2"], "train.top_p"),
    (["eval", "no-such-model", "eval.benchmarks=[nope]"], "eval.benchmarks"),
])
def test_a_real_abcx_process_exits_2_with_one_line(argv, field, tmp_path):
    results = tmp_path / "results"
    proc = subprocess.run([sys.executable, "-m", "abcx.cli", *argv, f"results_dir={results}"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert_refused(proc.returncode, proc.stderr, field, results)


def test_valid_values_at_the_edges_of_each_domain_are_accepted():
    cfg = compose(["seed=0", "train.top_p=1", "train.top_k=0", "train.max_grad_norm=0", "eval.max_problems=null",
                     "eval.temperature=0", "train.warmup_steps=0.1", "train.max_steps=-1", "method.eps3=inf",
                     "model.dtype=bfloat16", "train.lr_scheduler_type=cosine", "train.scale_rewards=none",
                     "+train.extra.mask_truncated_completions=true"])
    assert cfg.train.top_p == 1 and cfg.eval.max_problems is None


def test_the_dtype_names_are_torch_floating_dtypes():
    import torch

    for name in domains.DTYPES:
        assert name == "auto" or (isinstance(getattr(torch, name), torch.dtype) and getattr(torch, name).is_floating_point)


def test_task_options_come_from_each_tasks_build_signature():
    import importlib
    import inspect

    from abcx.tasks import REGISTRY

    for name in REGISTRY:
        params = inspect.signature(importlib.import_module(REGISTRY[name]).build).parameters
        named = [p for p, v in params.items() if v.kind not in (v.VAR_KEYWORD, v.VAR_POSITIONAL)]
        assert list(domains.task_parameters(name)) == named
        with pytest.raises(UserError, match=f"task.options.surely_not_an_option is not an option of task '{name}'"):
            domains.task_options(name, {"surely_not_an_option": 1})


# --- property: any override is a valid config (every field in its domain, GRPOConfig builds) or one line

SCHEDULERS = [s.value for s in __import__("transformers.trainer_utils", fromlist=["SchedulerType"]).SchedulerType]
FIELDS = {  # field -> its domain, as an oracle independent of abcx.config.domains
    "seed": lambda v: isinstance(v, int) and 0 <= v < 2**32,
    "train.temperature": lambda v: math.isfinite(v) and v > 0,
    "train.top_p": lambda v: 0 < v <= 1,
    "train.top_k": lambda v: isinstance(v, int) and v >= 0,
    "train.max_steps": lambda v: v == -1 or 1 <= v <= domains.MAX_COUNT,
    "train.max_grad_norm": lambda v: math.isfinite(v) and v >= 0,
    "train.warmup_steps": lambda v: math.isfinite(v) and v >= 0,
    "train.learning_rate": lambda v: math.isfinite(v) and v >= 0,
    "train.num_generations": lambda v: 2 <= v <= domains.MAX_COUNT,
    "train.save_steps": lambda v: 1 <= v <= domains.MAX_COUNT,
    "train.scale_rewards": lambda v: v in ("group", "batch", "none"),
    "train.lr_scheduler_type": lambda v: v in SCHEDULERS,
    "eval.max_problems": lambda v: v is None or 1 <= v <= domains.MAX_COUNT,
    "eval.top_p": lambda v: 0 < v <= 1,
    "eval.n": lambda v: 1 <= v <= domains.MAX_COUNT,
    "model.dtype": lambda v: v in domains.DTYPES,
    "method.eps1": lambda v: v is None or v == math.inf or 0 <= v <= domains.MAX_EPS,
    "method.eps3": lambda v: v is None or v == math.inf or 0 <= v <= domains.MAX_EPS,
    "method.eps4": lambda v: v is None or v == math.inf or 0 <= v < 1,
}
KEYS = st.sampled_from([*FIELDS, "~seed", "~train.top_p", "+train.extra.nonsense", "+train.extra.epsilon",
                        "+train.extra.optim", "+train.extra.torch_empty_cache_steps", "+task.options.nonsense",
                        "+task.options.n_eval", "eval.benchmarks", "method", "train.extra", "+foo.bar"])
VALUES = st.one_of(
    st.sampled_from(["-1", "0", "1", "2", "-5", "0.5", "1e308", "-1e308", "nan", "inf", "-inf", "10000000000000000000000",
                     "4294967296", "null", "true", "bogus", "''", "[nope]", "[chain]", "cosine", "none", "batch",
                     "bfloat16", "grpo", "abc_grpo", "{a: 1}", "${seed}", "${nope}", "adamw_torch", "1.5"]),
    st.floats(allow_nan=True, allow_infinity=True).map(repr), st.integers(-10, 10**25).map(str),
)


@settings(max_examples=int(os.environ.get("ABCX_PROPERTY_EXAMPLES", "200")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(KEYS, VALUES), min_size=1, max_size=3))
def test_any_override_composes_to_a_config_in_every_domain_or_one_clean_line(pairs):
    overrides = [k if k.startswith("~") else f"{k}={v}" for k, v in pairs]
    try:
        cfg = compose(overrides)
    except UserError as err:
        assert "\n" not in str(err) and str(err)
        return
    for field, in_domain in FIELDS.items():
        value = cfg
        for part in field.split("."):
            value = value[part]
        assert in_domain(value), f"{overrides} composed {field}={value!r}"
    from abcx.config import trl_args

    trl_args.check(cfg)  # the trainer arguments build
