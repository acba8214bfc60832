"""Building `ledger/` with mypyc into `.build/mypyc` (`make compiled`, run by `make run`, `make test` and `make bench`);
the services only `use` a build (`infra.compiled`), never make one."""

from __future__ import annotations

import fcntl
import importlib.metadata
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from infra.compiled import BUILD, PURE_MODULES, ROOT, compiled_digest, modules
from tools.local import say


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
