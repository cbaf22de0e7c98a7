"""Outbound HL7 status messages: profiles, the durable outbox and its MLLP sender.

Kept light on import: bridge.config imports bridge.outbound.settings.
"""
