"""The operator console: an HTTP API and a web UI inside the daemon (docs/console.md).

    settings.py  the ``admin`` section (off by default; loopback)
    auth.py      passwords (argon2), API tokens, sessions, the failed-login limit, roles
    web.py       identification, CSRF and origin checks, errors, headers, access log
    api.py       the JSON API's endpoint table; openapi.py makes its document from it
    ui.py        the server-rendered pages (templates/, static/: no CDN, no build step)
    views.py     the store reads behind both; actions.py the operator's write jobs
    server.py    ``ConsoleServer``: uvicorn on the daemon's event loop

A domain package: it imports steps, store, mapping and hl7, never another
domain package; what it needs of the daemon comes in a ``ConsoleContext``
that bridge/app/services.py fills in.

Nothing is imported here: ``bridge.app.settings`` imports ``console.settings``
on every CLI command, and the web stack (Starlette, uvicorn, Jinja2) loads only
when the daemon starts the console.
"""
