"""The embedded tiny model: deterministic, cached, loadable with the Auto classes, and partly competent."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from abcx.testbed import DEFAULT_RECIPE, Recipe, build_testbed, ensure_testbed, ensure_tiny_model, read_testbed_info
from abcx.testbed.model import ModelShape
from abcx.testbed.warmstart import WarmStart

REPO = Path(__file__).resolve().parents[1]
# Same architecture as the default, a few SFT steps: enough to test building, not competence.
QUICK = Recipe(warm=WarmStart(n_sft=400, steps=15))


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """The default model, built once per session (reused from $ABCX_CACHE when that is set)."""
    cache = os.environ.get("ABCX_CACHE") or tmp_path_factory.mktemp("abcx-cache")
    return ensure_tiny_model(cache_dir=cache)


@pytest.fixture(scope="session")
def tokenizer(tiny_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


def _weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def test_importing_the_testbed_and_task_does_not_import_torch():
    code = "import sys, abcx.testbed, abcx.tasks.arith, abcx.tasks.chain; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    assert out.stdout.split() == ["False", "False"]


def test_two_builds_give_identical_tokenizer_and_weights(tmp_path):
    import torch

    first = build_testbed(tmp_path / "a", QUICK)
    second = build_testbed(tmp_path / "b", QUICK)
    assert (tmp_path / "a" / "tokenizer.json").read_bytes() == (tmp_path / "b" / "tokenizer.json").read_bytes()
    wa, wb = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert first["sft"]["loss"] == second["sft"]["loss"]


def test_warm_start_demonstrations_cover_what_rl_trains_on_and_the_hard_benchmark():
    import inspect

    import yaml

    from abcx.tasks import chain, task_benchmarks

    defaults = {k: v.default for k, v in inspect.signature(chain.build).parameters.items()}
    warm = DEFAULT_RECIPE.warm
    assert (warm.digits, warm.ops, warm.task_seed, warm.write_steps) == (
        defaults["digits"], defaults["ops"], defaults["seed"], defaults["steps"])
    # RL's operand counts (conf/task/chain.yaml) and chain_hard's both lie inside the demonstrations' range.
    conf = yaml.safe_load((REPO / "conf" / "task" / "chain.yaml").read_text())["options"]
    hard = task_benchmarks()["chain_hard"][1]
    for low, high in ((conf["min_operands"], conf["max_operands"]), (hard["min_operands"], hard["max_operands"])):
        assert warm.min_operands <= low <= high <= warm.max_operands


def test_recipe_change_gives_a_new_cache_folder():
    assert Recipe().folder_name() == DEFAULT_RECIPE.folder_name()
    changed = [Recipe(warm=WarmStart(steps=999)), Recipe(shape=ModelShape(num_hidden_layers=2)), Recipe(init_seed=1)]
    names = {r.folder_name() for r in changed} | {DEFAULT_RECIPE.folder_name()}
    assert len(names) == 4


def test_cache_location_follows_abcx_cache(tmp_path, monkeypatch):
    from abcx.testbed import cache_root

    monkeypatch.setenv("ABCX_CACHE", str(tmp_path / "c"))
    assert cache_root() == tmp_path / "c"
    assert cache_root(tmp_path / "explicit") == tmp_path / "explicit"
    monkeypatch.delenv("ABCX_CACHE")
    assert cache_root() == Path.home() / ".cache" / "abcx"


_RACER = textwrap.dedent(
    """
    import logging, sys, time
    from pathlib import Path
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    import torch, transformers  # imported before the barrier so both processes reach it warm
    from abcx.testbed import Recipe, ensure_testbed
    from abcx.testbed.warmstart import WarmStart
    cache, me, other = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    (cache.parent / me).touch()
    while not (cache.parent / other).exists():
        time.sleep(0.01)
    print(ensure_testbed(Recipe(warm=WarmStart(n_sft=400, steps=15)), cache_dir=cache))
    """
)


def test_concurrent_calls_from_two_processes_build_once(tmp_path):
    cache = tmp_path / "cache"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen([sys.executable, "-c", _RACER, str(cache), me, other], cwd=REPO, env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for me, other in (("ready-a", "ready-b"), ("ready-b", "ready-a"))
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outs]
    paths = {out.strip() for out, _ in outs}
    assert paths == {str(cache / "testbed" / QUICK.folder_name())}
    assert sum(err.count("building tiny model") for _, err in outs) == 1
    # Nothing half-built is left beside the result.
    assert sorted(p.name for p in (cache / "testbed").iterdir()) == sorted(
        [QUICK.folder_name(), QUICK.folder_name() + ".lock"])


def test_force_rebuilds_and_a_later_call_reuses(tmp_path, caplog):
    import logging

    caplog.set_level(logging.INFO, logger="abcx.testbed")
    folder = ensure_testbed(QUICK, cache_dir=tmp_path)
    built = read_testbed_info(folder)["built"]["time"]
    caplog.clear()
    assert ensure_testbed(QUICK, cache_dir=tmp_path) == folder
    assert "building" not in caplog.text
    assert ensure_testbed(QUICK, cache_dir=tmp_path, force=True) == folder
    assert "building" in caplog.text
    assert (folder / "testbed.json").is_file() and read_testbed_info(folder)["built"]["time"] >= built


@pytest.mark.slow
def test_cached_folder_loads_with_the_auto_classes(tiny_model, tokenizer):
    from transformers import AutoModelForCausalLM, Qwen3ForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    assert isinstance(model, Qwen3ForCausalLM)
    assert model.config.vocab_size == len(tokenizer)
    assert model.config.tie_word_embeddings
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id
    info = read_testbed_info(tiny_model)
    assert info["recipe_hash"] == DEFAULT_RECIPE.digest() and tiny_model.name == DEFAULT_RECIPE.folder_name()
    assert info["parameters"] == sum(p.numel() for p in model.parameters())


@pytest.mark.slow
def test_second_call_returns_the_cached_folder_at_once(tiny_model):
    start = time.perf_counter()
    again = ensure_tiny_model(cache_dir=tiny_model.parent.parent)
    assert again == tiny_model and time.perf_counter() - start < 0.5


@pytest.mark.slow
def test_tokenizer_maps_each_character_to_one_token_and_round_trips(tokenizer):
    from abcx.tasks.arith import problems
    from abcx.tasks.chain import demonstrations

    train, evals = problems(n_train=300, n_eval=100, digits=3, ops="+-*", negatives=True)
    chains = demonstrations(100, min_operands=4, max_operands=8, digits=2, ops="+-")
    for prompt, answer in train + evals + chains:
        text = prompt + answer
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert len(ids) == len(text) and tokenizer.unk_token_id not in ids
        assert tokenizer.decode(ids) == text
    ids = tokenizer("12+3=15\n 7", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    assert tokenizer.decode(ids, skip_special_tokens=True) == "12+3=15\n 7"
    assert tokenizer.decode(tokenizer("Ω")["input_ids"]) == tokenizer.unk_token


@pytest.mark.slow
def test_tokenizer_pads_on_the_left_with_its_pad_token(tokenizer):
    batch = tokenizer(["1+1=", "100+200="], padding=True, add_special_tokens=False)
    assert tokenizer.padding_side == "left"
    assert batch["input_ids"][0][:4] == [tokenizer.pad_token_id] * 4
    assert batch["attention_mask"][0] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert len({tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id}) == 3


@pytest.mark.slow
def test_chat_template_renders_a_user_turn_as_the_plain_prompt(tokenizer):
    chat = [{"role": "user", "content": "47+385="}]
    assert tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True) == "47+385="
    ids = tokenizer.apply_chat_template(chat, tokenize=True, add_generation_prompt=True, return_dict=True)["input_ids"]
    assert ids == tokenizer("47+385=", add_special_tokens=False)["input_ids"]
    full = [{"role": "system", "content": "add."}, *chat, {"role": "assistant", "content": "432"}]
    assert tokenizer.apply_chat_template(full, tokenize=False) == "add.\n47+385=432<eos>"
    assert tokenizer.apply_chat_template(full, tokenize=False, continue_final_message=True) == "add.\n47+385=432"


@pytest.mark.slow
def test_warm_start_beats_the_random_init_on_eval_accuracy(tiny_model, tokenizer):
    from transformers import AutoModelForCausalLM

    from abcx.tasks import build_task
    from abcx.testbed.model import init_model
    from abcx.testbed.warmstart import accuracy

    task = build_task("chain", n_train=0, n_eval=100)
    rows = list(zip(task.eval["prompt"], task.eval["answer"]))
    gen = dict(max_new_tokens=DEFAULT_RECIPE.warm.max_new_tokens)
    warm = accuracy(AutoModelForCausalLM.from_pretrained(tiny_model), tokenizer, rows, task.is_correct, **gen)
    cold = accuracy(init_model(tokenizer, DEFAULT_RECIPE.shape, DEFAULT_RECIPE.init_seed), tokenizer, rows,
                    task.is_correct, **gen)
    assert cold <= 0.02
    assert 0.1 <= warm <= 0.9 and warm >= cold + 0.1


@pytest.mark.slow
def test_the_warm_start_leaves_headroom_for_rl(tiny_model, tokenizer):
    from transformers import AutoModelForCausalLM

    from abcx.tasks import build_task
    from abcx.testbed.warmstart import sampled_accuracy

    # Competent but far from saturated, at T = 1 as RL samples it (results/testbed/validity.md measures
    # the same on 200 problems with CIs; 100 here keep the test short).
    task = build_task("chain", n_train=0, n_eval=100)
    rows = list(zip(task.eval["prompt"], task.eval["answer"]))
    avg, solved = sampled_accuracy(AutoModelForCausalLM.from_pretrained(tiny_model), tokenizer, rows, 16,
                                   task.is_correct, max_new_tokens=DEFAULT_RECIPE.warm.max_new_tokens)
    assert 0.15 <= avg <= 0.65
    assert solved <= 0.95
