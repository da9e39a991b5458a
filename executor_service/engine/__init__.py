"""The execution engine: workers lease runs and drive their steps."""
