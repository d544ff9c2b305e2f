"""IMS: the OAuth Server-to-Server token endpoint (aep-api.md §2)."""

from __future__ import annotations

import secrets
import time
from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from .config import FakeConfig
    from .stats import FakeStats


class ImsApi:
    """`POST /ims/token/v3` (a mixin of FakePlatform: uses its cfg, stats and token table)."""

    cfg: FakeConfig
    stats: FakeStats
    _tokens: dict[str, float]  # token -> monotonic expiry

    async def h_token(self, request: web.Request) -> web.Response:
        form = dict(request.query)
        if request.can_read_body:
            form.update({k: str(v) for k, v in (await request.post()).items()})
        if form.get("grant_type") != "client_credentials":
            return self._ims_error(400, "unsupported_grant_type", "grant_type must be client_credentials")
        if form.get("client_id") != self.cfg.client_id:
            return self._ims_error(400, "invalid_client", "invalid client_id parameter")
        if form.get("client_secret") != self.cfg.client_secret:
            return self._ims_error(401, "invalid_client", "invalid client_secret parameter")
        if not form.get("scope"):
            return self._ims_error(400, "invalid_scope", "scope parameter is required")
        lifetime = float(self.cfg.faults.token_lifetime_s)
        token = "fake." + secrets.token_urlsafe(32)
        self._tokens[token] = time.monotonic() + lifetime
        self.stats.tokens_issued += 1
        return web.json_response({"access_token": token, "token_type": "bearer",
                                  "expires_in": max(1, int(lifetime))})

    @staticmethod
    def _ims_error(status: int, error: str, desc: str) -> web.Response:
        return web.json_response({"error": error, "error_description": desc}, status=status)
