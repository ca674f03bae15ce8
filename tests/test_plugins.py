"""A method declared outside abcx is a first-class method (abcx.methods.plugins): found through
ABCX_PLUGINS or an installed package's `abcx.methods` entry point, listed, composed, validated and
trained like a built-in one; its source is part of its run id; a broken plugin is one line and every
other method keeps working; `abcx --help` loads no plugin.

Every check runs abcx in a fresh subprocess with its own ABCX_PLUGINS and Python path, as a user's
shell would: nothing is installed into this virtual environment and this process's registry is untouched.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "plugin"
FAST = ["train.max_steps=2", "train.per_device_train_batch_size=16", "train.steps_per_generation=2",
        "train.save_steps=100", "eval.at_end=false", "logger=none"]
UNIFORM = [f"clip/q{i}" for i in range(1, 5)] + [f"grad/share_q{i}" for i in range(1, 5)]


def abcx(*args: str, plugins: str = "", path: tuple[Path, ...] = (EXAMPLE,)) -> subprocess.CompletedProcess:
    """`abcx <args>` in a subprocess whose Python path is the repository plus `path`."""
    env = {**os.environ, "ABCX_PLUGINS": plugins,
           "PYTHONPATH": os.pathsep.join(str(p) for p in (REPO, *path))}
    return subprocess.run([sys.executable, "-m", "abcx.cli", *args], env=env, capture_output=True, text=True,
                          timeout=600, cwd=REPO)


def plugin_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("warning: plugin")]


def run_id(out: subprocess.CompletedProcess) -> str:
    assert out.returncode == 0, out.stderr[-2000:]
    return re.search(r"^# run id: (\S+)$", out.stdout, re.M).group(1)


def listing(out: subprocess.CompletedProcess) -> dict[str, str]:
    """`abcx methods` output: method name -> its block of lines."""
    assert out.returncode == 0, out.stderr[-2000:]
    blocks = re.split(r"^(?=\w+: )", out.stdout, flags=re.M)
    return {block.split(":")[0]: block for block in blocks if block.strip()}


# --- ABCX_PLUGINS --------------------------------------------------------------------------------

def test_abcx_plugins_lists_the_example_rule_with_where_it_came_from():
    out = abcx("methods", plugins="abcx_example_rule")
    methods = listing(out)
    assert {"grpo", "abc_grpo", "example_rule"} <= set(methods)
    block = methods["example_rule"]
    assert "tau = 0.1  (> 0)" in block and "eps_high = 0.2  (>= 0)" in block
    assert re.search(r"from: plugin abcx_example_rule \(no installed package; via ABCX_PLUGINS\), source sha256 "
                     r"[0-9a-f]{12}", block), block
    assert "example_rule" not in abcx("methods").stdout  # only where asked for
    assert plugin_lines(out.stderr) == []


def test_hydra_composes_the_plugin_method_and_its_parameters():
    out = abcx("config", "show", "method=example_rule", "method.tau=0.05", plugins="abcx_example_rule")
    assert run_id(out).startswith("example_rule-s0-")
    assert re.search(r"^method:\n  name: example_rule\n  eps_low: 0.2\n  eps_high: 0.2\n  tau: 0.05$", out.stdout, re.M)


@pytest.mark.parametrize("override, message", [
    ("method.tau=0", "error: method.tau=0.0 is not valid; valid: > 0"),
    ("method.eps_low=1.5", "error: method.eps_low=1.5 is not valid; valid: (0, 1)"),
    ("method.eps4=0.1", "method.eps4 does not apply to method 'example_rule'; its parameters: eps_low, eps_high, tau"),
])
def test_bad_plugin_parameters_are_refused_in_one_line_before_any_work(tmp_path, override, message):
    out = abcx("train", "method=example_rule", override, f"results_dir={tmp_path}", plugins="abcx_example_rule")
    assert out.returncode == 2 and message in out.stderr.strip().splitlines()[-1], out.stderr
    assert not any(tmp_path.iterdir())  # nothing was created


@pytest.mark.slow
def test_the_plugin_rule_trains_and_logs_the_uniform_metrics_and_its_origin(tmp_path, tiny_model_path):
    out = abcx("train", "method=example_rule", "method.tau=0.05", *FAST, f"results_dir={tmp_path}",
               plugins="abcx_example_rule")
    assert out.returncode == 0, out.stderr[-3000:]
    (run,) = (tmp_path / "runs").iterdir()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "loss" in r]
    assert [r["step"] for r in rows] == [1, 2]
    for row in rows:
        assert all(key in row for key in UNIFORM), sorted(row)
        assert sum(row[f"grad/share_q{i}"] for i in range(1, 5)) + row["grad/share_in"] == pytest.approx(1.0)
    meta = json.loads((run / "meta.json").read_text())
    assert meta["method"] == "example_rule"
    assert meta["plugin"]["module"] == "abcx_example_rule" and meta["plugin"]["package"] is None
    assert re.fullmatch(r"[0-9a-f]{64}", meta["plugin"]["source_sha256"])


# --- an installed package --------------------------------------------------------------------------

def pip_install_target(tmp_path: Path) -> Path:
    """The example installed with pip into a folder of its own (offline, nothing added to this venv);
    built from a copy, so that the build leaves nothing in the repository."""
    source, target = tmp_path / "src", tmp_path / "site"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
    out = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-index",
                          "--no-deps", "--no-build-isolation", "--target", str(target), str(source)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return target


def test_an_installed_package_is_found_through_its_entry_point(tmp_path):
    site = pip_install_target(tmp_path)
    out = abcx("methods", path=(site,))
    block = listing(out)["example_rule"]
    assert "from: plugin abcx_example_rule (abcx-example-rule 0.1.0; via entry point example_rule)" in block, block
    assert plugin_lines(out.stderr) == []
    assert run_id(abcx("config", "show", "method=example_rule", path=(site,))).startswith("example_rule-s0-")
    both = abcx("methods", plugins="abcx_example_rule", path=(site,))  # installed and named: loaded once
    assert "example_rule" in listing(both) and plugin_lines(both.stderr) == []
    assert "example_rule" not in listing(abcx("methods", path=()))  # this venv has no plugin installed


# --- broken plugins ------------------------------------------------------------------------------

GOOD_RULE = ("from abcx.methods.four_bound import grpo as _grpo\n"
             "def {name}(inputs, *, eps: float = 0.2):\n    return _grpo(inputs, eps_low=eps, eps_high=eps)\n")
BROKEN = {
    "import_error": ("import abcx_no_such_module\n", "cannot import it: ModuleNotFoundError: No module named "
                                                     "'abcx_no_such_module'"),
    "syntax_error": ("def (\n", "cannot import it: SyntaxError"),
    "builtin_name": (GOOD_RULE.format(name="grpo") + "METADATA = {'grpo': {'reference': 'r'}}\n",
                     "it declares method 'grpo', which abcx (abcx.methods.four_bound) declares already; rename it"),
    "plugin_name": (GOOD_RULE.format(name="example_rule") + "METADATA = {'example_rule': {'reference': 'r'}}\n",
                    "it declares method 'example_rule', which abcx_example_rule declares already; rename it"),
    "no_metadata": (GOOD_RULE.format(name="lone"), "it has no METADATA dict"),
    "no_function": ("METADATA = {'ghost': {'reference': 'r'}}\n",
                    "METADATA declares 'ghost' but the module defines no function ghost()"),
    "no_reference": (GOOD_RULE.format(name="anon") + "METADATA = {'anon': {'params': {}}}\n",
                     "METADATA['anon'] needs a 'reference'"),
    "typo_key": (GOOD_RULE.format(name="typo") + "METADATA = {'typo': {'reference': 'r', 'parms': {}}}\n",
                 "METADATA['typo'] has unknown key 'parms'"),
    "bad_default": (GOOD_RULE.format(name="wide") +
                    "METADATA = {'wide': {'reference': 'r', 'params': {'eps': {'domain': '(0.5, 1)'}}}}\n",
                    "parameter eps of wide: default 0.2 is outside its domain (0.5, 1)"),
    "unknown_param": (GOOD_RULE.format(name="extra") +
                      "METADATA = {'extra': {'reference': 'r', 'params': {'beta': {'domain': '> 0'}}}}\n",
                      "METADATA['extra']['params'] names 'beta', which extra() does not take"),
    "no_default": ("def bare(inputs, *, eps):\n    pass\nMETADATA = {'bare': {'reference': 'r'}}\n",
                   "no_default.bare: parameter eps needs a default"),
    "bad_name": (GOOD_RULE.format(name="Loud") + "METADATA = {'Loud': {'reference': 'r'}}\n",
                 "method name 'Loud' is not valid"),
}


@pytest.mark.parametrize("plugin", sorted(BROKEN))
def test_a_broken_plugin_is_one_line_and_every_other_method_keeps_working(tmp_path, plugin):
    source, problem = BROKEN[plugin]
    (tmp_path / f"{plugin}.py").write_text(source)
    out = abcx("methods", plugins=f"abcx_example_rule,{plugin}", path=(EXAMPLE, tmp_path))
    (line,) = plugin_lines(out.stderr)
    assert line.startswith(f"warning: plugin {plugin} (ABCX_PLUGINS) is not loaded: ") and problem in line, line
    assert {"grpo", "abc_grpo", "example_rule"} <= set(listing(out))


def test_methods_of_a_broken_plugin_stay_out_while_the_good_ones_compose(tmp_path):
    (tmp_path / "half.py").write_text(GOOD_RULE.format(name="fine") + GOOD_RULE.format(name="wide") +
                                      "METADATA = {'fine': {'reference': 'r'}, 'wide': {'reference': 'r', "
                                      "'params': {'eps': {'domain': '> 1'}}}}\n")
    path = (EXAMPLE, tmp_path)
    assert "fine" not in listing(abcx("methods", plugins="half,abcx_example_rule", path=path))  # all or nothing
    good = abcx("config", "show", "method=example_rule", plugins="half,abcx_example_rule", path=path)
    assert run_id(good).startswith("example_rule-s0-") and len(plugin_lines(good.stderr)) == 1
    refused = abcx("config", "show", "method=fine", plugins="half", path=path)
    assert refused.returncode == 2 and "method=fine is not a config" in refused.stderr


def test_abcx_s_own_method_modules_pass_the_plugin_check():
    """The plugin check is no stricter than the house rules: every built-in method module passes it."""
    import importlib
    import importlib.util

    from abcx import methods
    from abcx.methods.plugins import declared

    present = [name for name in methods.MODULES if importlib.util.find_spec(name) is not None]
    checked = [m.name for name in present for m in declared(importlib.import_module(name))]
    assert checked == [name for name, m in methods.registry().items() if m.origin is None]


# --- reproducibility -------------------------------------------------------------------------------

def test_editing_the_plugin_source_changes_the_run_id(tmp_path):
    copy = tmp_path / "plugin"
    shutil.copytree(EXAMPLE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    source = copy / "abcx_example_rule" / "__init__.py"

    def show() -> str:
        return run_id(abcx("config", "show", "method=example_rule", plugins="abcx_example_rule", path=(copy,)))

    before = show()
    original = source.read_text()
    source.write_text(original.replace("decay = torch.exp(-past / tau)", "decay = torch.exp(-(past / tau))"))
    assert source.read_text() != original  # the edit happened
    edited = show()
    source.write_text(original)
    assert edited != before and show() == before


def test_built_in_run_ids_do_not_depend_on_plugins():
    plain = abcx("config", "show", "method=grpo", "seed=3", path=())
    with_plugin = abcx("config", "show", "method=grpo", "seed=3", plugins="abcx_example_rule")
    assert run_id(plain) == run_id(with_plugin)


# --- start-up ----------------------------------------------------------------------------------------

def test_help_loads_no_plugin(tmp_path):
    (tmp_path / "loud.py").write_text("raise RuntimeError('imported')\n")
    help_ = abcx("--help", plugins="loud", path=(tmp_path,))
    assert help_.returncode == 0 and "Usage" in help_.stdout
    assert plugin_lines(help_.stderr) == []
    # the probe itself: a command that needs methods does import it
    assert "RuntimeError: imported" in plugin_lines(abcx("methods", plugins="loud", path=(tmp_path,)).stderr)[0]
