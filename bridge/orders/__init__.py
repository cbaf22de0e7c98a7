"""Order intake: what an accepted HL7 message does to the worklist.

    ingest.py     one MLLP frame -> a durable decision and its ACK
    intake.py     routing by message type (orders, ADT, ORU) and the mapping, before
                  anything is stored (pure)
    replay.py     exact resends: content hash and the recent-ACK cache
    lifecycle.py  order control -> what happens to each step (pure)
    checks.py     patient checks on a mapped message (pure)
    patients.py   patient-level attributes, read with a mapping's own rules
    apply.py      the write jobs (orders, ADT updates and merges, ORU results): read
                  state, decide, write, in one transaction
    errors.py     the rejections and their ACK codes
    settings.py   the ``orders`` configuration section

Status changes go through bridge.steps.change_status. Message retention runs in
bridge/maintenance/retention.py, the ``mwl-bridge messages`` commands are in
bridge/app/cli/messages.py.

Import from the modules; this package file stays empty so that bridge.app.settings
can import ``bridge.orders.settings`` without pulling in the pipeline.
"""
