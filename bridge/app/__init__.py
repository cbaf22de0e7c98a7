"""The application layer: the only code that knows every package.

    settings.py  every package's settings section, composed; loading and env overrides
    services.py  the daemon's service set (the one place that constructs services)
    daemon.py    start the services in order, stop them in reverse
    cli/         the ``mwl-bridge`` command line

No other package imports this one (tests/test_layers.py checks it).
"""
