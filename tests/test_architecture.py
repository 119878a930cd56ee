"""docs/architecture.md lists every file of src/htsec/, one line each, and no file that is gone."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_tree_in_docs_names_every_source_file() -> None:
    doc = (ROOT / "docs" / "architecture.md").read_text()
    tree = doc.split("## The tree, one line per file", 1)[1]
    listed = set(re.findall(r"^\s+([\w/]+\.py)\s", tree, re.M))
    package = ROOT / "src" / "htsec"
    actual = {p.relative_to(package).as_posix() for p in package.rglob("*.py")}
    assert sorted(actual - listed) == [], "add these to docs/architecture.md's tree"
    assert sorted(listed - actual) == [], "these are gone: drop them from docs/architecture.md"
