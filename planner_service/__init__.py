"""planexec planner service: intents become validated, policy-checked, versioned plans."""
