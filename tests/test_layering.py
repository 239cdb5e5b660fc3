"""The core's layering, checkable by anyone: the trainer does not reach into the benchmark harness, the
data layer does not import the trainer, and built-in agents are reached only through the registry."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

OFFRL = Path(__file__).parent.parent / "offrl"


def _imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at top level or inside functions."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_importing_the_trainer_imports_nothing_from_the_bench():
    code = ("import sys, offrl.trainer; bad = sorted(m for m in sys.modules if m.startswith('offrl.bench')); "
            "print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_data_layer_does_not_import_the_trainer_or_the_bench():
    for path in (OFFRL / "data").rglob("*.py"):
        bad = {m for m in _imported_modules(path) if m.startswith(("offrl.trainer", "offrl.bench", "offrl.zoo"))}
        assert not bad, f"{path} imports {bad}"


def test_offrl_reaches_the_built_in_agents_only_through_the_registry():
    for path in OFFRL.rglob("*.py"):
        imports = {m for m in _imported_modules(path) if m.startswith("offrl.algorithms")}
        if path.name == "agent.py":             # load_builtins: the registry's one import of the package
            assert imports == {"offrl.algorithms"}, imports
        else:
            assert not imports, f"{path} imports {imports}; use offrl.agent.get_agent"
