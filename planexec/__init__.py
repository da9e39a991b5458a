"""planexec: the command line and the runtime shared by the planner and executor services."""
