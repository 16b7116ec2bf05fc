"""Habana-free stand-ins for the parts of habana_frameworks.torch the gaudi plugin uses (TOKENMILL_GAUDI_STUBS=1).

They let the plugin's own logic (bucketing, the HPU-graph step runner, the allocator, the
communicator, the once-per-step mark_step) run end to end on a machine without Gaudi:
`core` is a counting mark_step, `hpu` maps the device to the CPU, simulates memory statistics
and records graphs that replay eagerly, and `distributed` maps HCCL to gloo. They are never
imported unless the variable is set, and `tokenmill plugins` then says "stubs".
"""
