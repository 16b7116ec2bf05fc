"""Hook implementations of the CPU reference plugin (placeholder until its pieces land)."""
