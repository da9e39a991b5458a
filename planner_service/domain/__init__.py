"""Pure planner logic: parsing, validation, policy wiring. No FastAPI, no SQL, no network."""
