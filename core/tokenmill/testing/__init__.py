"""The conformance kit: pytest tests that check an installed plugin against plain-torch references.

Run it against your plugin with one command:

    TOKENMILL_DEVICE=<name> python -m pytest --pyargs tokenmill.testing

(or `--tokenmill-device <name>`; with neither, the best available platform is tested). It checks
the attention backend against a dense causal reference computed from unpaged K/V (GQA and MHA,
head sizes 64 and 128, block sizes 16 and 32, ragged batches, chunked prefill on cached KV,
prefix hits, decode at long context, every dtype the platform supports), the KV allocator's
round trips, and the communicator's collectives across 2 processes. A plugin is done when it passes.
"""
