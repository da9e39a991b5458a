"""Alembic migrations: one environment, two Postgres schemas (``planner``, ``executor``)."""
