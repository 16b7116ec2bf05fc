"""The conformance kit: pytest tests that check an installed plugin against plain-torch references.

Run it against your plugin with one command:

    TOKENMILL_DEVICE=<name> python -m pytest --pyargs tokenmill.testing

With TOKENMILL_DEVICE unset, the best available platform is tested. (`--tokenmill-device <name>`
works too when the kit is given as a directory, `python -m pytest path/to/tokenmill/testing`;
pytest reads a package's options too late for it to work with --pyargs.)

It checks the attention backend against a dense causal reference computed from unpaged K/V (GQA
and MHA, head sizes 64 and 128, block sizes 16 and 32, ragged batches mixing decodes and prefill
chunks on cached KV, prefix hits, decode at 2k context, every dtype the platform supports, with
the tolerances in attention_harness.TOLERANCES), the KV allocator's round trips (allocate, write,
copy blocks, swap out and back in, free), and the communicator's collectives across 2 processes.
A plugin is done when the kit passes.
"""
