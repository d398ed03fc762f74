"""JSON schemas the project validates against (its own, written from the published facts)."""
