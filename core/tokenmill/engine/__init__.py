"""The engine: the step loop (EngineCore), its per-request state, and the async wrapper."""
