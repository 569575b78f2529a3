"""A service for the supervision tests, run as `python -m tests.e2e.crashy` through a
service's `module:` key: the first start of an instance serves like any service (health
and reflection only); every later start crashes at once, saying so on stderr.

Each start appends its wall-clock time to <state_dir>/<instance id>.starts, so a test
can see when the supervisor started it again.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from mesh.config import load_config
from mesh.server import Runtime, run_service

SERVICE = "crashy"
CRASH_CODE = 3


def _flag(name: str) -> str:
    return sys.argv[sys.argv.index(name) + 1]


async def _setup(runtime: Runtime) -> None:
    """No servicer: health and reflection are enough to be SERVING."""


def main() -> int:
    config = load_config(Path(_flag("--config")))
    starts = config.state_dir / f"{_flag('--instance-id')}.starts"
    with starts.open("a") as log:
        log.write(f"{time.time()}\n")
    count = len(starts.read_text().splitlines())
    if count > 1:
        print(f"crashy: start {count}, crashing on purpose", file=sys.stderr, flush=True)
        return CRASH_CODE
    return run_service(SERVICE, _setup)


if __name__ == "__main__":
    raise SystemExit(main())
