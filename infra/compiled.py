"""The pure core (`ledger/`) compiled with mypyc, built by `make run`, `make test` and `make bench`.

`ledger/` is mypy-strict, so mypyc compiles it as it is (`errors.py` aside): the projector applies 9-19% more
transfers a second with it (`python -m bench.run --only ingest,pure` measures both in the same run).

The build sits in `.build/mypyc/` beside copies of the sources it was made from, with their digest. `use`,
which each service's package (`api`, `projections`, `dispatch`, `ops`, `bench`) and the tests call before any
module of `ledger` is imported, puts it first on the `ledger` package's path, only while that digest is the one
of the sources in `ledger/`: an edited module is never shadowed by a stale build, it runs pure until the next
`make`. `LEDGER_PURE=1` runs the pure modules whatever is built. `python -m tools.compiled` builds unless
the build is current. The choice lives here, not in `ledger/`, so that importing the pure core reads nothing.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import ledger
from infra import settings

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / ".build" / "mypyc"
# Left as Python: the package's own module, and the errors (mypyc's classes would not take a subclass's
# class-level `code`).
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


def _usable() -> bool:
    if settings.pure_asked():
        return False
    try:
        built_from = (BUILD / "ledger" / "DIGEST").read_text().split("\n", 1)[0]  # then the compiler's version
        return built_from == compiled_digest(Path(ledger.__file__).resolve().parent)
    except OSError:
        return False


def use() -> bool:
    """Run `ledger/` compiled from now on when a build of exactly its sources exists (and `LEDGER_PURE` is
    unset); whether it does. Once is enough; it changes nothing after a module of `ledger` was imported pure
    (a compiled module must never meet a pure copy of another's types)."""
    build_path = str(BUILD / "ledger")
    if build_path in ledger.__path__:
        return True
    if any(name.startswith("ledger.") for name in sys.modules) or not _usable():
        return False
    sys.path.append(str(BUILD))  # mypyc's runtime module, shared by the compiled modules
    ledger.__path__.insert(0, build_path)
    return True


def active() -> bool:
    """Whether `ledger/` runs compiled in this process."""
    return str(BUILD / "ledger") in ledger.__path__
