"""`tokenmill serve` refuses bad server flags in one line, before it loads a model."""

from __future__ import annotations

import pytest

from tokenmill.cli.main import USER_ERROR_EXIT, main


@pytest.mark.parametrize("argv,needle", [
    (["serve", "--api-key", ""], "--api-key"),
    (["serve", "--metrics-api-key", " "], "--metrics-api-key"),
    (["serve", "--max-n", "0"], "max_n"),
    (["serve", "--chat-template-timeout", "0"], "chat_template_timeout_s"),
    (["serve", "--rate-limit", "0"], "rate"),
])
def test_bad_server_flag_is_refused_before_loading(argv, needle, capsys, monkeypatch):
    monkeypatch.delenv("TOKENMILL_API_KEY", raising=False)
    monkeypatch.delenv("TOKENMILL_METRICS_API_KEY", raising=False)
    assert main(argv) == USER_ERROR_EXIT
    err = capsys.readouterr().err
    assert err.startswith("error: ") and needle in err and err.count("\n") == 1


def test_empty_key_from_the_environment_is_refused(capsys, monkeypatch):
    monkeypatch.setenv("TOKENMILL_API_KEY", "")
    assert main(["serve"]) == USER_ERROR_EXIT
    assert "TOKENMILL_API_KEY" in capsys.readouterr().err
