"""Executor HTTP API: thin routers over the run store and queries."""
