"""lanspan.config stays pure: no sockets, event loop, clock or processes.

Checked on the source (pydantic itself imports asyncio and socket, so the
loaded modules cannot tell). The validation modules touch no files either:
only `load.py` and `keys.py` do I/O.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import lanspan.config

PACKAGE = Path(lanspan.config.__file__).parent
FORBIDDEN = {"socket", "asyncio", "time", "subprocess", "threading", "selectors"}
PURE = {"model.py", "_raw.py", "parse.py", "_addressing.py", "pools.py"}


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("path", sorted(PACKAGE.glob("*.py")), ids=lambda p: p.name)
def test_no_forbidden_imports(path: Path) -> None:
    assert imports(path) & FORBIDDEN == set()
    if path.name in PURE:
        assert imports(path) & {"os", "pathlib", "io", "shutil"} == set()
