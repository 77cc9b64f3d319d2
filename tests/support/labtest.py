"""What the lab's tests share: where the lab script is (scripts/ on sys.path: it is not a package),
running it as a user would, and polling the lab until something holds."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[2]
LAB_PY = REPO / "scripts" / "lab.py"
if str(REPO / "scripts") not in sys.path:
    sys.path.insert(0, str(REPO / "scripts"))


def lab_cli(state: Path, *args: str, timeout_s: float = 300) -> subprocess.CompletedProcess:
    """`scripts/lab.py ARGS --state STATE`, its output captured."""
    return subprocess.run([sys.executable, str(LAB_PY), *args, "--state", str(state)], capture_output=True,
                          text=True, timeout=timeout_s)


def eventually(check: Callable[[], Any], what: str, timeout_s: float = 60.0, seen: Callable[[], str] = lambda: "",
               every_s: float = 0.3) -> Any:
    """Poll `check` until it returns something true (a daemon still starting may refuse or answer
    half: OSError, ValueError, KeyError are retried); on the deadline, fail saying what `seen` saw."""
    deadline, last = time.monotonic() + timeout_s, None
    while time.monotonic() < deadline:
        try:
            if result := check():
                return result
        except (OSError, ValueError, KeyError) as exc:
            last = exc
        time.sleep(every_s)
    raise AssertionError(f"not within {timeout_s} s: {what} (last error: {last!r}) {seen()}")
