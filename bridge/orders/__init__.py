"""Order intake: what an accepted HL7 message does to the worklist.

    ingest.py     one MLLP frame -> a durable decision and its ACK
    replay.py     exact resends: content hash and the recent-ACK cache
    groups.py     what the routed mapping's groups say (ORC-1/ORC-5, field locations)
    lifecycle.py  order control -> what happens to each step (pure)
    checks.py     patient checks on a mapped message (pure)
    patients.py   patient-level attributes, read with a mapping's own rules
    adt.py        ADT updates, merges and identifier changes
    results.py    ORU^R01 final results -> COMPLETED
    apply.py      the write jobs: read state, decide, write, in one transaction
    retention.py  purging old messages
    commands.py   ``mwl-bridge messages list/show/replay/purge``

Import from the modules; this package file stays empty so that bridge.config
can import ``bridge.orders.settings`` without pulling in the pipeline.
"""
