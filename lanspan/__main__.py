"""`python -m lanspan` and the `lanspan` script.

`lanspan agent` with plain, valid options starts the agent without importing
click (`lanspan.agent.start.parse`); everything else goes to the click group.
"""

from __future__ import annotations

import sys


def main() -> None:
    if sys.argv[1:2] == ["agent"]:
        from lanspan.agent.start import parse, run

        kwargs = parse(sys.argv[2:])
        if kwargs is not None:
            run(**kwargs)  # type: ignore[arg-type]
            return
    from lanspan.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
