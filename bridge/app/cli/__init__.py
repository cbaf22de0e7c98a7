"""The ``mwl-bridge`` command line: the daemon and the operator's and mapping author's tools.

    main.py      the parser, ``serve``, ``check-config``, ``send``, ``worklist``
    messages.py  ``messages list/show/replay/purge``
    outbox.py    ``outbox list/show/retry``
    mapping.py   ``mapping check/explain/test``
    common.py    settings and store for every subcommand
"""

from bridge.app.cli.main import main

__all__ = ["main"]
