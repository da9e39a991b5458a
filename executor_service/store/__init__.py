"""Executor persistence: runs, steps, attempts, run events, approvals (schema ``executor``)."""
