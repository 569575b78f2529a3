"""`python -m mesh.schema_probe MODULE...`: what `python -m MODULE --settings-schema`
prints, for every MODULE, from one interpreter: a JSON object mapping each module to
{"schema": <its JSON Schema>} or {"error": "<why not>"}.

meshctl asks this in a child process, so that no service code runs in meshctl's own
(design.md); one interpreter for all of them imports grpc, protobuf and the runtime
once instead of once per service, which is most of the cost of each answer.
"""

from __future__ import annotations

import contextlib
import io
import json
import runpy
import sys
from collections.abc import Sequence
from typing import Any

__all__ = ["main", "probe"]


def probe(module: str) -> dict[str, Any]:
    """Run `module` as `python -m module --settings-schema` would, here."""
    printed = io.StringIO()
    saved_argv = sys.argv
    sys.argv = [module, "--settings-schema"]
    code: object = 0
    try:
        with contextlib.redirect_stdout(printed):
            runpy.run_module(module, run_name="__main__", alter_sys=True)
    except SystemExit as exit:
        code = exit.code or 0
    except BaseException as error:  # a module that does not import: say why, go on
        return {"error": f"failed: {type(error).__name__}: {str(error)[:200]}"}
    finally:
        sys.argv = saved_argv
    if code != 0:
        return {"error": f"exited with code {code}"}
    with contextlib.suppress(ValueError):
        schema = json.loads(printed.getvalue())
        if isinstance(schema, dict):
            return {"schema": schema}
    return {"error": "printed no JSON object"}


def main(argv: Sequence[str] | None = None) -> int:
    modules = list(sys.argv[1:] if argv is None else argv)
    answers = {module: probe(module) for module in modules}
    sys.stdout.write(json.dumps(answers) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
