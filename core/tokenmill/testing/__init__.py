"""The conformance kit: pytest tests that check an installed plugin against the core's references.

Install it and run it against your plugin, from any directory:

    pip install 'tokenmill[kit]'
    TOKENMILL_DEVICE=<name> python -m pytest --pyargs tokenmill.testing

With TOKENMILL_DEVICE unset, the best available platform is tested. (`--tokenmill-device <name>`
works too when the kit is given as a directory, `python -m pytest path/to/tokenmill/testing`;
pytest reads a package's options too late for it to work with --pyargs.)

It checks the platform's description and contract version; paged attention against a dense
float64 reference (ragged, prefix hits, long context, padded steps, functional caches, a separate
KV-cache dtype); the allocator (and swap where it has it); the communicator across 2 processes;
every op override against ops.reference; every linear method against the dense layer; the
optional hooks; and a real engine run on a tiny random Llama, whose greedy tokens must equal the
CPU plugin's, whose wrapped steps must equal the unwrapped ones, and whose batches must obey the
padding rules. Tolerances are in tolerances.py; docs/backends.md explains every check. A plugin is
done when the kit passes.
"""
