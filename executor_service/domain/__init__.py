"""Pure execution logic: states, transitions, retries, references, output checks."""
