"""Who may call what: a bearer token (``Authorization: Bearer TOKEN``) for analysts' SQL and anything that
changes state; GET routes too when ``CVOPS_API_READ_PUBLIC=false``. Health probes never need one.

Tokens are checked against the hashes in ``CVOPS_API_TOKENS`` (:mod:`api.tokens`). With none configured,
routes that need a token answer 503 saying how to configure one: a server with no tokens is not
misused, it is not set up.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.dependencies.models import Dependant
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from api.dependencies import ApiSettingsDep, get_api_settings
from api.tokens import verify

NO_TOKENS = (
    "no API token is configured on this server: set CVOPS_API_TOKENS to the SHA-256 of a token, made with "
    """python -c "import hashlib;print(hashlib.sha256(b'TOKEN').hexdigest())", and send """
    "'Authorization: Bearer TOKEN'"
)
_CHALLENGE = {"WWW-Authenticate": "Bearer"}

bearer = HTTPBearer(auto_error=False, description="an API token whose SHA-256 is in CVOPS_API_TOKENS")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def require_token(settings: ApiSettingsDep, credentials: Credentials) -> None:
    """401 without a valid token, 503 when the server has no token configured."""
    hashes = settings.token_hashes
    if not hashes:
        raise HTTPException(status_code=503, detail=NO_TOKENS)
    if credentials is None:
        raise HTTPException(
            status_code=401, detail="missing API token: send 'Authorization: Bearer TOKEN'", headers=_CHALLENGE
        )
    if not verify(credentials.credentials, hashes):
        raise HTTPException(status_code=401, detail="invalid API token", headers=_CHALLENGE)


def read_access(settings: ApiSettingsDep, credentials: Credentials) -> None:
    """Open when ``CVOPS_API_READ_PUBLIC`` (the default), else the same check as :func:`require_token`."""
    if not settings.api_read_public:
        require_token(settings, credentials)


def access_check(dependant: Dependant) -> Callable[[Request], Awaitable[None]] | None:
    """The access check a route declares (:func:`require_token` before :func:`read_access`) as a function of the
    request's headers alone, for :mod:`api.guard` to run before the body is read; None when it declares none."""
    calls = {d.call for d in dependant.dependencies}
    check = require_token if require_token in calls else read_access if read_access in calls else None
    if check is None:
        return None

    async def run(request: Request) -> None:
        check(get_api_settings(request), await bearer(request))

    return run


TOKEN_RESPONSES = {
    401: {"description": "missing or invalid API token"},
    503: {"description": "no API token configured on the server"},
}
