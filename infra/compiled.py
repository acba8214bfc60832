"""The pure core (`ledger/`) compiled with mypyc, built by `make run`, `make test` and `make bench`.

`ledger/` is mypy-strict, so mypyc compiles it as it is (`errors.py` aside): the projector applies 9-19% more
transfers a second with it (`python -m bench.run --only ingest,pure` measures both in the same run).

The build sits in `.build/mypyc/` beside copies of the sources it was made from, with their digest. The
`ledger` package takes its modules from there only while that digest is the one of the sources in `ledger/`
(see `ledger/__init__.py`): an edited module is never shadowed by a stale build, it runs pure until the next
`make`. `LEDGER_PURE=1` runs the pure modules whatever is built. `python -m infra.compiled` builds unless
the build is current.
"""

from __future__ import annotations

import fcntl
import importlib.metadata
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from infra.local import say
from ledger import BUILD, PURE_MODULES, compiled_digest, modules

ROOT = Path(__file__).resolve().parent.parent


def _stamp(digest: str) -> str:
    """What DIGEST holds: the sources' digest (all `ledger/` checks), then the compiler's version (a new mypy
    rebuilds)."""
    return f"{digest}\nmypy {importlib.metadata.version('mypy')}\n"


def current() -> bool:
    marker = BUILD / "ledger" / "DIGEST"
    return marker.exists() and marker.read_text() == _stamp(compiled_digest(ROOT / "ledger"))


def build() -> None:
    """Compile the modules of `ledger/` into `.build/mypyc`, beside copies of the sources they were compiled
    from. One build at a time (a lock); a failed one leaves the modules pure, with a warning."""
    BUILD.parent.mkdir(exist_ok=True)
    with open(BUILD.parent / "mypyc.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if current():
            return
        started = time.monotonic()
        work = Path(tempfile.mkdtemp(prefix="mypyc.", dir=BUILD.parent))
        try:
            (work / "ledger").mkdir()
            names = modules(ROOT / "ledger")
            for name in [*names, *PURE_MODULES]:
                shutil.copy2(ROOT / "ledger" / name, work / "ledger" / name)
            digest = compiled_digest(work / "ledger")  # of what is compiled, whatever changes meanwhile
            shutil.copy2(ROOT / "pyproject.toml", work / "pyproject.toml")  # mypy's settings: ledger.* is strict
            mypyc = Path(sys.executable).with_name("mypyc")
            result = subprocess.run([str(mypyc), *[f"ledger/{n}" for n in names]], cwd=work, capture_output=True,
                                    text=True)
            if result.returncode != 0:
                sys.stderr.write(result.stdout[-4000:] + result.stderr[-4000:])
                say("WARNING: mypyc could not compile ledger/; its modules run as Python")
                return
            shutil.rmtree(work / "build", ignore_errors=True)
            for name in PURE_MODULES:  # imported from `ledger/` itself, never from a copy
                (work / "ledger" / name).unlink()
            (work / "ledger" / "DIGEST").write_text(_stamp(digest))
            shutil.rmtree(BUILD, ignore_errors=True)
            work.rename(BUILD)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        say(f"compiled ledger/ with mypyc in {time.monotonic() - started:.1f} s")


if __name__ == "__main__":
    build()
