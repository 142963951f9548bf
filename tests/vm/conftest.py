"""The VM's own checks use the whole-stack tests' helpers and fixtures (molecule/default/tests),
loaded by path under the name `stack`, so this directory never shadows that `conftest`."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_spec = importlib.util.spec_from_file_location(
    "stack", Path(__file__).parents[2] / "molecule" / "default" / "tests" / "conftest.py"
)
stack = importlib.util.module_from_spec(_spec)
sys.modules["stack"] = stack
_spec.loader.exec_module(stack)

# Fixtures, re-exported so pytest finds them here too (pebble_root is autouse).
pebble_root = stack.pebble_root
hostname = stack.hostname
