"""Maintenance loops: idle rules, purges and message retention, each a service.

    settings.py      the ``housekeeping`` section
    idle.py          idle rules: steps nobody touched change status (bridge.steps)
    purge.py         old outbox rows, MPPS instances and terminal steps
    housekeeping.py  the loop running idle rules, then the purge
    retention.py     the message log's purge loop (``orders.messages``)
"""
