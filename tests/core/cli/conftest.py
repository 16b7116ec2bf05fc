"""Fixtures for the CLI's server tests: one `tokenmill serve` process shared by them."""

from __future__ import annotations

import pytest
from serve_process import ServeProcess, start_serve, stop_serve


@pytest.fixture(scope="session")
def served(tmp_path_factory) -> ServeProcess:
    """One server with the chat page and access log on (the defaults) and stats every half second."""
    server = start_serve(tmp_path_factory.mktemp("serve"), "--stats-interval", "0.5",
                         "--allowed-origins", "http://app.example")
    yield server
    stop_serve(server)
