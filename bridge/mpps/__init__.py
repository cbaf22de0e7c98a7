"""The MPPS SCP (N-CREATE/N-SET handlers on the worklist's AE) and its state rules.

Kept light on import: bridge.config imports bridge.mpps.settings.
"""
