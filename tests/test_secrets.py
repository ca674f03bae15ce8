"""No credential reaches any file abcx or its libraries write.

Credentials planted on the command line, through `${oc.env:...}` interpolation and in ordinary fields
are refused before anything is written, with a line saying where they belong and without echoing
them. Credentials that live only in the environment (where they belong) are used by the tools but
appear in no file: a real training run (tiny model, checkpoints, W&B offline), a sweep on the local
backend (submitit pickles and logs) and an evaluation are run with them set, and every file written
(binary included) is searched for them."""
import os
import secrets as pysecrets
import string
import subprocess
import sys
from pathlib import Path

import pytest

from abcx import secrets
from abcx.errors import UserError
from abcx.record import scrub

REPO = Path(__file__).resolve().parent.parent


def _random(n: int, alphabet: str = string.ascii_letters + string.digits) -> str:
    return "".join(pysecrets.choice(alphabet) for _ in range(n))


# Fresh per session: a value that shows up in a file came from this test, not by chance.
PLANTED = {
    "WANDB_API_KEY": pysecrets.token_hex(20),  # 40 hex digits, W&B's key format
    "HF_TOKEN": "hf_" + _random(34),
    "GITHUB_TOKEN": "ghp_" + _random(36),
    "OPENAI_API_KEY": "sk-" + _random(40),
    "ABCX_TEST_DB_PASSWORD": _random(24),  # no known shape: found by being a secret-named variable's value
}


def test_the_scrub_drops_credential_fields_by_exact_name_and_keeps_the_rest():
    saved = scrub({"logger": {"api_key": "abc", "project": "p"}, "hub_token": "x", "train": {"x": 1},
                   "eval": {"max_new_tokens": 8, "tokenizer": "t"}, "token_budget": 3})
    assert saved == {"logger": {"project": "p"}, "train": {"x": 1}, "eval": {"max_new_tokens": 8, "tokenizer": "t"},
                     "token_budget": 3}


@pytest.mark.parametrize("value,shape", [
    (PLANTED["HF_TOKEN"], "Hugging Face"), (PLANTED["GITHUB_TOKEN"], "GitHub"), (PLANTED["OPENAI_API_KEY"], "sk-"),
    (PLANTED["WANDB_API_KEY"], "W&B"), ("github_pat_" + _random(40), "GitHub"), ("run-" + PLANTED["HF_TOKEN"], "Hugging"),
])
def test_token_shaped_values_are_recognised(value, shape):
    assert shape in secrets.shape_of(value)[0]


@pytest.mark.parametrize("value,field", [
    ("/root/.cache/huggingface/hub/models--Qwen--Qwen3-4B/snapshots/" + "a" * 40, "model.path"),
    ("a" * 40, "train.extra.hub_revision"),  # a git commit is not a key
    ("chain_hard", "eval.benchmarks[0]"), ("sk-short", "name"), ("hf_hub", "group"), ("abc_grpo-s0-0123456789", "name"),
])
def test_ordinary_values_are_not_mistaken_for_tokens(value, field):
    assert secrets.shape_of(value, field=field) is None


@pytest.mark.parametrize("name,secret", [
    ("WANDB_API_KEY", True), ("HF_TOKEN", True), ("GITHUB_TOKEN", True), ("OPENAI_API_KEY", True),
    ("MY_SECRET_THING", True), ("DB_PASSWORD", True), ("HOME", False), ("TOKENIZERS_PARALLELISM", False),
    ("WANDB_PROJECT", False), ("KEYBOARD", False),
])
def test_secret_named_environment_variables(name, secret):
    assert secrets.is_secret_env(name) is secret


def _plants() -> list[tuple[str, str]]:
    """(override, the secret it carries) for each way a credential could be handed to abcx."""
    p = PLANTED
    return [
        (f"+train.extra.hub_token={p['HF_TOKEN']}", p["HF_TOKEN"]),  # a credential field, under train.extra
        ("+train.extra.hub_token=${oc.env:HF_TOKEN}", p["HF_TOKEN"]),
        ("group=${oc.env:WANDB_API_KEY}", p["WANDB_API_KEY"]),  # interpolation of a secret-named variable
        ("name=${oc.env:ABCX_TEST_DB_PASSWORD}", p["ABCX_TEST_DB_PASSWORD"]),
        (f"name={p['GITHUB_TOKEN']}", p["GITHUB_TOKEN"]),  # token-shaped values in ordinary fields
        (f"tags=[ok,{p['OPENAI_API_KEY']}]", p["OPENAI_API_KEY"]),
        (f"group={p['WANDB_API_KEY']}", p["WANDB_API_KEY"]),
        (f"+train.extra.hub_model_id=me/{p['HF_TOKEN']}", p["HF_TOKEN"]),
        (f"+task.options.api_key={p['OPENAI_API_KEY']}", p["OPENAI_API_KEY"]),
        (f"name=db-{p['ABCX_TEST_DB_PASSWORD']}", p["ABCX_TEST_DB_PASSWORD"]),  # a secret variable's value, typed in
    ]


PLANTS = _plants()
COMMANDS = {
    "train": lambda o, r: ["train", o, f"results_dir={r}", "logger=none"],
    "sweep": lambda o, r: ["sweep", "run", "smoke", "--dry-run", o, f"results_dir={r}"],
    "eval": lambda o, r: ["eval", "some-model", o, f"results_dir={r}"],
}


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("override,secret", PLANTS, ids=[o.split("=")[0] + f"-{i}" for i, (o, _) in enumerate(PLANTS)])
def test_a_planted_credential_is_refused_unechoed_before_anything_is_written(command, override, secret, tmp_path,
                                                                            capsys, monkeypatch):
    from abcx.cli import main

    for name, value in PLANTED.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["abcx", *COMMANDS[command](override, tmp_path / "results")])
    with pytest.raises(SystemExit) as exit_:
        main()
    out, err = capsys.readouterr()
    assert exit_.value.code == 2, err
    assert err.startswith("error: ") and err.strip().count("\n") == 0, err
    assert secret not in err + out
    assert "environment" in err or "login" in err, err
    assert list(tmp_path.iterdir()) == [], "nothing is written for a refused config"


def test_a_credential_in_a_sweep_file_is_refused(tmp_path, capsys, monkeypatch):
    from abcx.sweep import command

    monkeypatch.chdir(tmp_path)
    sweep = tmp_path / "leaky.yaml"
    sweep.write_text(f"name: leaky\nfixed: [logger=none, 'name={PLANTED['GITHUB_TOKEN']}']\ngrid:\n  seed: [0, 1]\n")
    with pytest.raises(UserError) as err:
        command.sweep_run(str(sweep), [f"results_dir={tmp_path / 'results'}"], dry_run=True)
    assert "GitHub token" in str(err.value) and PLANTED["GITHUB_TOKEN"] not in str(err.value)
    assert not (tmp_path / "results").exists()


def _abcx(args: list[str], cwd: Path, env: dict, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "abcx.cli", *args], cwd=cwd, env=env, capture_output=True,
                          timeout=timeout)


def _files_holding(root: Path, needle: bytes) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.is_file() and not p.is_symlink() and needle in p.read_bytes())


def test_no_file_written_by_a_training_a_sweep_and_an_eval_holds_an_environment_secret(tmp_path, tiny_model_path):
    """The secrets live only in the environment, where the tools read them. HOME and TMPDIR point into
    tmp_path, so that what the libraries write there (caches, settings, temporary files) is searched too."""
    home, tmp, results, work = (tmp_path / d for d in ("home", "tmp", "results", "work"))
    for d in (home, tmp, work):
        d.mkdir()
    env = {**os.environ, **PLANTED, "HOME": str(home), "TMPDIR": str(tmp), "PYTHONPATH": str(REPO),
           "WANDB_MODE": "offline"}
    marker = f"visible-{_random(12)}"  # a value that is meant to be saved: shows the search sees into each file
    fast = ["train.max_steps=2", "train.save_steps=1", "train.per_device_train_batch_size=16",
            "train.steps_per_generation=2", "train.max_completion_length=16", "eval.max_problems=4", "eval.n=2",
            "eval.max_new_tokens=16", f"results_dir={results}"]
    outputs = []
    trained = _abcx(["train", *fast, f"group={marker}", "logger=wandb_offline"], work, env)
    outputs.append(trained)
    assert trained.returncode == 0, trained.stderr[-3000:]
    (run,) = (results / "runs").iterdir()
    swept = _abcx(["sweep", "run", "smoke", "--wait", f"results_dir={results}", f"group={marker}-sweep",
                   "logger=wandb_offline"], work, env)
    outputs.append(swept)
    assert swept.returncode == 0, (swept.stdout + swept.stderr)[-3000:]
    evaluated = _abcx(["eval", str(run), "eval.max_problems=4", "eval.n=2", "eval.max_new_tokens=16",
                       f"results_dir={results}"], work, env)
    outputs.append(evaluated)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]

    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    kinds = {p.suffix for p in written}
    assert {".bin", ".wandb", ".pkl", ".jsonl", ".yaml", ".json"} <= kinds, kinds  # the files the claim is about
    # The search reaches into binary files: the run id is in the pickled GRPOConfig, the group in the W&B run.
    assert any(p.name == "training_args.bin" for p in (run / "checkpoints").rglob("*"))
    assert _files_holding(run / "checkpoints", run.name.encode()), "run id not found in training_args.bin"
    assert any(f.endswith(".wandb") for f in _files_holding(run, marker.encode()))
    for name, value in PLANTED.items():
        assert _files_holding(tmp_path, value.encode()) == [], f"{name} was written to a file"
        for proc in outputs:
            assert value.encode() not in proc.stdout + proc.stderr, f"{name} reached the console"
    # W&B keeps no command line: the overrides typed above are in no W&B file.
    assert _files_holding(run / "wandb", b"train.save_steps=1") == []
    # The credential-name scrub no longer drops fields that merely contain "token".
    assert "max_new_tokens: 16" in (run / "config.yaml").read_text()


# --- free text: every text abcx writes besides the config, checked the same way before anything is written

TOKEN = "hf_" + _random(34)  # token-shaped values, fresh per session
KEY = "sk-" + _random(40)
SWEEP = "fixed: [logger=none, train.max_steps=2]\ngrid: {seed: [0]}\n"


def _free_text_cases(root: Path) -> dict[str, tuple[list[str], str]]:
    """name -> (abcx arguments, what the one error line names)."""
    labels, mmap = root / "labels.yaml", root / "map.yaml"
    labels.write_text(f"'*': {{model: {TOKEN}}}\n")
    mmap.write_text(f"rename: {{my_reward_{TOKEN}: reward}}\n")
    (root / "named.yaml").write_text(f"name: {TOKEN}\n{SWEEP}")
    (root / "described.yaml").write_text(f"name: described\ndescription: 'compares with {KEY}'\n{SWEEP}")
    (root / "strategy.yaml").write_text(
        f"name: strat\n{SWEEP}strategy: {{name: halving, rungs: [1], metric: {TOKEN}}}\n")
    (root / f"{TOKEN}.yaml").write_text(SWEEP)  # no name: the file's name is the sweep's
    (root / "clean.yaml").write_text(f"name: clean\n{SWEEP}")
    (root / "site.yaml").write_text(f"partition: cpu\nsetup: ['export HF_TOKEN={TOKEN}']\n")  # a SLURM profile
    report = ["report", str(root / "results"), "--out", str(root / "report.md")]
    return {
        "sweep name": (["sweep", "run", str(root / "named.yaml")], "name looks like a Hugging Face token"),
        "sweep name (file name)": (["sweep", "run", str(root / f"{TOKEN}.yaml")], "the sweep's file name looks like"),
        "sweep description": (["sweep", "run", str(root / "described.yaml")], "description looks like an API key"),
        "sweep strategy": (["sweep", "run", str(root / "strategy.yaml")], "strategy.metric looks like"),
        "SLURM profile": (["sweep", "run", str(root / "clean.yaml"), "--dry-run", "launcher=slurm",
                           f"launcher.profile={root / 'site.yaml'}"], "site.yaml: setup[0] looks like"),
        "sweep stop --reason": (["sweep", "stop", "s", "--reason", f"see {TOKEN}"], "--reason looks like"),
        "sweep status NAME": (["sweep", "status", TOKEN], "sweep name looks like"),
        "sweep cancel NAME": (["sweep", "cancel", TOKEN], "sweep name looks like"),
        "sweep stop NAME": (["sweep", "stop", TOKEN], "sweep name looks like"),
        "sweep status --results-dir": (["sweep", "status", "s", "--results-dir", str(root / TOKEN)],
                                       "results_dir looks like"),
        "report --label": ([*report, "--label", f"*=model:{TOKEN}"], "--label: [0] looks like"),
        "report --labels": ([*report, "--labels", str(labels)], "--labels"),
        "report --metric-map": ([*report, "--metric-map", str(mmap)], "--metric-map"),
        "report --tag": ([*report, "--tag", TOKEN], "--tag: [0] looks like"),
        "report --sweep": ([*report, "--sweep", TOKEN], "--sweep looks like"),
        "report --group": ([*report, "--group", KEY], "--group looks like an API key"),
        "report --baseline": ([*report, "--baseline", KEY], "--baseline looks like"),
        "report --group-by": ([*report, "--group-by", f"cfg.{TOKEN}"], "--group-by: [0] looks like"),
        "report --pivot": ([*report, "--pivot", f"method,{TOKEN}"], "--pivot: [0][1] looks like"),
        "eval TARGET": (["eval", f"models/{TOKEN}"], "TARGET looks like"),
    }


FREE_TEXT = ("sweep name", "sweep name (file name)", "sweep description", "sweep strategy", "SLURM profile",
             "sweep stop --reason", "sweep status NAME", "sweep cancel NAME", "sweep stop NAME",
             "sweep status --results-dir", "report --label",
             "report --labels", "report --metric-map", "report --tag", "report --sweep", "report --group",
             "report --baseline", "report --group-by", "report --pivot", "eval TARGET")


@pytest.mark.parametrize("case", FREE_TEXT)
def test_a_credential_in_free_text_is_refused_unechoed_before_anything_is_written(case, tmp_path, capsys, monkeypatch):
    from abcx.cli import main
    from abcx.report.synth import write_record
    from abcx.sweep import manifest
    from tests.helpers import tree

    monkeypatch.chdir(tmp_path)
    results = tmp_path / "results"
    write_record(str(results / "runs"), "grpo-s0-0123456789", method="grpo", seed=0, steps=[1, 2],
                 metrics={"reward": [0.1, 0.2]})
    manifest.update(results, "s", lambda m: m.update(name="s", backend="local", runs=[
        {"run_id": "grpo-s0-0123456789", "overrides": ["seed=0"], "index": 0}]))
    (tmp_path / "models" / TOKEN).mkdir(parents=True)
    cases = _free_text_cases(tmp_path)
    assert set(cases) == set(FREE_TEXT)
    args, names = cases[case]
    before = tree(tmp_path)
    monkeypatch.setattr(sys, "argv", ["abcx", *args])
    with pytest.raises(SystemExit) as exit_:
        main()
    out, err = capsys.readouterr()
    assert exit_.value.code == 2, err
    assert err.startswith("error: ") and err.strip().count("\n") == 0, err
    assert names in err and (TOKEN not in err + out and KEY not in err + out), err
    assert tree(tmp_path) == before, "nothing is written for refused free text"
