"""CORS for browser apps on other origins: Starlette's CORSMiddleware with the --allowed-* flags."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware


def allow_origins(app: FastAPI, origins: list[str], *, methods: list[str] | None = None,
                  headers: list[str] | None = None, credentials: bool = False) -> None:
    """Answer preflights and add CORS headers for `origins` ("*": any); no origins: same origin only."""
    if not origins:
        return
    app.add_middleware(CORSMiddleware, allow_origins=origins, allow_methods=methods or ["*"],
                       allow_headers=headers or ["*"], allow_credentials=credentials)
