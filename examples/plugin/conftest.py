"""Lets the tests import abcx_example_rule from a checkout, installed or not (pytest loads this file
before the tests; abcx's own `make test` collects them through its testpaths)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
