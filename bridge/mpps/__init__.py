"""The MPPS SCP (N-CREATE/N-SET handlers on the worklist's AE): validation and linking.

Status rules live in bridge/steps/.
"""
