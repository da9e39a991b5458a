"""Planner HTTP API: thin routers over the planner's services."""
