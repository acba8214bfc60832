"""The pure core of the wallet ledger: request types, validation, the codec and the decision.

Nothing in this package performs I/O; `api/` and `projections/` depend on it, never the reverse.

Its modules run compiled by mypyc when `make` has built them (`infra/compiled.py`) from exactly the sources
here; otherwise, or with `LEDGER_PURE=1`, as Python.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path

BUILD = Path(__file__).resolve().parent.parent / ".build" / "mypyc"


# This module chooses; the errors stay Python classes (mypyc's would not take a subclass's class-level `code`).
PURE_MODULES = frozenset({"__init__.py", "errors.py"})


def modules(package: Path) -> list[str]:
    """The package's modules that are compiled."""
    return sorted(p.name for p in package.glob("*.py") if p.name not in PURE_MODULES)


def compiled_digest(package: Path) -> str:
    """What a build is made from: the interpreter and every module's source (the pure ones' types too)."""
    digest = hashlib.sha256(sys.version.encode())
    for name in sorted(p.name for p in package.glob("*.py")):
        digest.update(b"\0" + name.encode() + b"\0" + (package / name).read_bytes())
    return digest.hexdigest()


def _built() -> bool:
    if os.environ.get("LEDGER_PURE", "") not in ("", "0"):
        return False
    try:
        built_from = (BUILD / "ledger" / "DIGEST").read_text().split("\n", 1)[0]  # then the compiler's version
        return built_from == compiled_digest(Path(__file__).resolve().parent)
    except OSError:
        return False


COMPILED = _built()
if COMPILED:
    sys.path.append(str(BUILD))  # mypyc's runtime module, shared by the compiled modules
    __path__.insert(0, str(BUILD / "ledger"))
