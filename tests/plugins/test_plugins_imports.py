"""htsec.plugins runs inside job sandboxes: it imports nothing of htsec but its own package,
htsec.errors, htsec._fs and htsec._log, also for the parts that the import-linter contract in
pyproject.toml cannot name yet (it refuses modules that do not exist)."""

from __future__ import annotations

import ast
from pathlib import Path

import htsec

PLUGINS = Path(htsec.__file__).parent / "plugins"
ALLOWED = ("htsec.plugins", "htsec.errors", "htsec._fs", "htsec._log")


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
            names += [f"{node.module}.{a.name}" for a in node.names if node.module == "htsec"]
    return names


def test_plugins_import_only_the_allowed_htsec_modules() -> None:
    bad = {
        f"{p.name}: {name}"
        for p in PLUGINS.rglob("*.py")
        for name in _imports(p)
        if (name == "htsec" or name.startswith("htsec."))
        and not any(name == a or name.startswith(a + ".") for a in ALLOWED)
    }
    assert sorted(bad) == []


def test_nothing_of_htsec_imports_the_plugins() -> None:
    root = PLUGINS.parent
    bad = {
        str(p.relative_to(root))
        for p in root.rglob("*.py")
        if PLUGINS not in p.parents and any(n.startswith("htsec.plugins") for n in _imports(p))
    }
    assert sorted(bad) == []
