"""Code fingerprints: a hash of the ffnlab sources a result depends on.

A stored training run or experiment result is reused only when the code that would produce
it again is the code that produced it. The fingerprint of a module is the hash of its source
and of every ffnlab module it imports, transitively (imports found by reading the source, so
lazy imports inside functions count too). An edit to the report does not invalidate a trained
model; an edit to the model, the trainer or the data code does.

    code_fingerprint("ffnlab.train.trainer", "ffnlab.data.tokens")   # 16 hex digits
"""

from __future__ import annotations

import ast
import functools
import hashlib
from pathlib import Path

PACKAGE = "ffnlab"
ROOT = Path(__file__).resolve().parent


def _path(module: str) -> Path | None:
    """The source file of an ffnlab module (a package's `__init__.py`), or None if there is none."""
    parts = module.split(".")[1:]
    base = ROOT.joinpath(*parts)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


@functools.lru_cache(maxsize=None)
def _imports(module: str) -> tuple[str, ...]:
    """The ffnlab modules `module` imports anywhere in its source (parents of submodules included)."""
    path = _path(module)
    if path is None:
        return ()
    tree = ast.parse(path.read_text(), str(path))
    is_package = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                anchor = module.split(".") if is_package else module.split(".")[:-1]
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        for name in names:
            if name == PACKAGE or name.startswith(PACKAGE + "."):
                parts = name.split(".")
                found.update(".".join(parts[:i]) for i in range(2, len(parts) + 1))
    return tuple(sorted(m for m in found if _path(m) is not None))


def closure(*modules: str) -> list[str]:
    """`modules` and every ffnlab module they import, transitively, sorted."""
    seen: set[str] = set()
    todo = [m for m in modules if _path(m) is not None]
    while todo:
        m = todo.pop()
        if m not in seen:
            seen.add(m)
            todo.extend(_imports(m))
    return sorted(seen)


def code_fingerprint(*modules: str) -> str:
    """The hash of the sources of `modules` and of everything of ffnlab they import."""
    h = hashlib.sha256()
    for m in closure(*modules):
        h.update(m.encode() + b"\0")
        h.update(_path(m).read_bytes())
        h.update(b"\0")
    return h.hexdigest()[:16]
