"""Start-up hygiene of the command line: importing abcx.cli and running `abcx --help` pull in none of
the heavy libraries (each costs 0.3-5 s of import time). Checked in fresh subprocesses, since this
test process may already have imported them."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "trl", "transformers", "wandb", "pandas")


def modules_after(code: str) -> set[str]:
    probe = code + "\nimport sys\nprint('MODULES=' + ','.join(sorted(m.split('.')[0] for m in sys.modules)))\n"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    line = [x for x in out.stdout.splitlines() if x.startswith("MODULES=")][-1]
    return set(line[len("MODULES="):].split(","))


def test_importing_the_cli_imports_no_heavy_library():
    loaded = modules_after("import abcx.cli")
    assert "abcx" in loaded  # the probe really saw the import
    assert not loaded & set(HEAVY)


@pytest.mark.parametrize("argv", [["--help"], ["sweep", "--help"], ["train", "--help"]])
def test_help_runs_without_importing_heavy_libraries(argv):
    code = (
        "import sys\nfrom abcx.cli import main\n"
        f"sys.argv = ['abcx'] + {argv!r}\n"
        "try:\n    main()\nexcept SystemExit as e:\n    assert e.code in (0, None), e.code\n"
    )
    loaded = modules_after(code)
    assert "typer" in loaded  # help was really rendered by the CLI
    assert not loaded & set(HEAVY)


def test_the_probe_detects_a_heavy_import():
    # Guards the test itself: were sys.modules not inspected correctly, the checks above would pass vacuously.
    assert "pandas" in modules_after("import pandas")
