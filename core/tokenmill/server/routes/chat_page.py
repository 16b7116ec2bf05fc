"""GET /: the built-in chat page, a static file that talks to /v1/chat/completions with streaming."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from tokenmill.server.error_handlers import ApiError

CHAT_PAGE_SWITCH = "chat_page_enabled"  # attribute of app.state; `tokenmill serve --no-chat-page` sets False
_PAGE = Path(__file__).resolve().parent.parent / "static" / "chat.html"

router = APIRouter()


@lru_cache(maxsize=1)
def _page() -> str:
    return _PAGE.read_text(encoding="utf-8")


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def chat_page(raw: Request) -> HTMLResponse:
    if not getattr(raw.app.state, CHAT_PAGE_SWITCH, True):
        raise ApiError(404, "the chat page is switched off on this server (started with --no-chat-page)")
    return HTMLResponse(_page())
