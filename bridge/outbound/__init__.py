"""Outbound HL7 status messages: profiles, the durable outbox and its MLLP sender."""
