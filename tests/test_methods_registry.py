"""The method registry is the one place a method is declared: schema, validation, the `method=` group,
the README table and `abcx methods` all follow from it, and recorded run ids survive it."""
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from abcx import methods as M
from abcx.config.compose import compose
from abcx.config.identity import config_hash, run_id
from abcx.errors import UserError

ROOT = Path(__file__).resolve().parent.parent
RECORDED = json.loads((ROOT / "tests/data/recorded_configs/main_4ac554d.json").read_text())


def _on_the_recorded_task(entry: dict) -> list[str]:
    """The entry's overrides plus the task options it was recorded with, where today's defaults moved
    since (the chain pool: 20,000 fresh problems then, a small pool of a few hundred now), so that what is compared
    is the method's part of the hash."""
    today = dict(compose([]).task.options)
    moved = {k: v for k, v in entry["config"]["task"]["options"].items() if today.get(k) != v}
    return entry["overrides"] + [f"task.options.{k}={v}" for k, v in sorted(moved.items())]


@pytest.mark.parametrize("case", sorted(RECORDED))
def test_a_config_recorded_before_the_registry_keeps_its_hash_and_run_id(case):
    """Configs and hashes recorded on main at 4ac554d (flat MethodConf, conf/method/*.yaml)."""
    entry = RECORDED[case]
    assert config_hash(entry["config"]) == entry["config_hash"]  # the recorded config file itself
    cfg = compose(_on_the_recorded_task(entry))  # and the same overrides composed through the registry today
    assert M.hash_view(dict(cfg.method)) == entry["config"]["method"]
    assert config_hash(cfg) == entry["config_hash"]
    assert run_id(cfg) == f"{entry['config']['method']['name']}-s0-{entry['config_hash'][:10]}"


def test_abc_adaptive_s_bounds_may_sit_on_eps_min_and_eps_max():
    cfg = compose(["method=abc_adaptive", "method.eps_min=0.2", "method.eps_max=0.2"])
    assert cfg.method.eps_min == cfg.method.eps_max == 0.2


def test_a_new_parameter_off_its_default_changes_a_recorded_method_s_hash():
    base = compose(_on_the_recorded_task(RECORDED["abc_grpo"]))
    scheduled = compose(_on_the_recorded_task(RECORDED["abc_grpo"]) + ["method.schedule=linear", "method.eps3_end=0.4"])
    assert config_hash(base) == RECORDED["abc_grpo"]["config_hash"] != config_hash(scheduled)


def test_every_registered_method_is_a_config_group_with_its_own_typed_parameters():
    for name, method in M.registry().items():
        cfg = compose([f"method={name}"])
        assert cfg.method.name == name
        assert set(cfg.method) == {"name"} | {p.name for p in method.params}
        assert {k: cfg.method[k] for k in method.defaults()} == method.defaults()


def test_the_registry_covers_trl_and_the_four_bound_family():
    expected = {"grpo", "dapo", "dual_clip", "two_sided", "abc_grpo", "gspo", "luspo", "cispo", "sapo", "vespo",
                "abc_adaptive"}
    assert expected <= set(M.names())
    for method in M.registry().values():
        assert method.reference and method.doc, method.name
        assert all(p.domain and p.doc for p in method.params), method.name


@pytest.mark.parametrize("overrides,field", [
    (["method=grpo", "method.eps1=0.3"], "method.eps1 does not apply to method 'grpo'"),
    (["method=abc_grpo", "method.eps4=1.5"], "method.eps4=1.5"),
    (["method=cispo", "method.eps_max=0"], "method.eps_max=0"),
    (["method=sapo", "method.tau_neg=-1"], "method.tau_neg=-1"),
    (["method=dual_clip", "method.clip_ratio_c=0.5"], "method.clip_ratio_c"),
    (["method=two_sided", "method.delta=1.1"], "method.delta"),
    (["method=grpo", "method.importance_sampling_level=tok"], "method.importance_sampling_level"),
    (["method=grpo", "method.schedule=linear"], "method.eps_low_end"),
    (["method=grpo", "method.eps_high_end=0.3"], "method.schedule=constant"),
    (["method=abc_grpo", "method.schedule=cosine", "method.eps3_end=inf"], "finite"),
    (["method=abc_grpo", "method.schedule=linear", "method.eps2_end=1.2"], "method.eps2_end=1.2"),
    (["method=abc_adaptive", "method.eps_min=0.5", "method.eps_max=0.1"], "method.eps_min"),
    (["method=ppo"], "method=ppo"),
    (["method=abc_adaptive", "method.eps3=0.01"], "method.eps3=0.01 must lie in [eps_min, eps_max] = [0.02, 1.0]"),
    (["method=abc_adaptive", "method.eps4=0.9", "method.eps_max=0.8"], "method.eps4=0.9 must lie in"),
    (["method=abc_adaptive", "method.eps1=1.5", "method.eps_max=1.2"], "method.eps1=1.5 must lie in"),
    (["method=abc_adaptive", "method.eps2=0.05", "method.eps_min=0.1"], "method.eps2=0.05 must lie in"),
    (["method=sapo", "+train.extra.sapo_temperature_pos=2"], "method.tau_pos"),  # TRL's knob is the method's
])
def test_bad_method_parameters_get_one_line_naming_the_field(overrides, field):
    with pytest.raises(UserError) as err:
        compose(overrides)
    assert field in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("domain,good,bad", [
    (">= 0", [0.0, 3.0, math.inf], [-0.1, math.nan]),
    ("(0, 1)", [0.5], [0.0, 1.0]),
    ("[0, 1) or inf", [0.0, 0.99, math.inf], [1.0, 2.0]),
    ("> 1", [1.5], [1.0]),
    ("token|sequence", ["token", "sequence"], ["tok"]),
])
def test_a_domain_string_is_the_check(domain, good, bad):
    kind = str if "|" in domain else float
    assert all(M.in_domain(domain, v, kind) for v in good)
    assert not any(M.in_domain(domain, v, kind) for v in bad)


def test_the_readme_method_table_is_the_registry_s():
    from abcx.methods.listing import markdown_table

    readme = (ROOT / "README.md").read_text()
    table = readme.split("<!-- methods-table -->\n")[1].split("\n<!-- /methods-table -->")[0]
    assert table == markdown_table()


def test_abcx_methods_lists_every_method_with_parameters_and_reference_without_torch():
    code = ("import sys; from typer.testing import CliRunner; from abcx.cli import app; "
            "r = CliRunner().invoke(app, ['methods']); print(r.output); "
            "assert 'torch' not in sys.modules, 'abcx methods imported torch'; sys.exit(r.exit_code)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for method in M.registry().values():
        assert f"{method.name}: " in proc.stdout and method.reference in proc.stdout
        assert all(f"    {p.name} = " in proc.stdout for p in method.params if not p.name.endswith("_end"))
    assert "eps_max = 5  (> 0)" in proc.stdout  # cispo's parameter, default and domain


def test_the_atlas_sweep_runs_every_registered_method_at_seed_0():
    """Phase 1 of the atlas (bench/atlas.py adds seeds 1 and 2 where seed 0 differs from GRPO)."""
    from abcx.sweep.spec import expand, load_sweep

    points = expand(load_sweep(ROOT / "sweeps/atlas.yaml"))
    pairs = {(o, s) for p in points for o in p if o.startswith("method=") for s in p if s.startswith("seed=")}
    assert pairs == {(f"method={m}", f"seed={s}") for m in M.names() for s in (0,)} and len(points) == len(pairs)
