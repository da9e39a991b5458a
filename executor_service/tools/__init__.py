"""Tool adapters and the catalog the executor serves (DESIGN §3)."""
