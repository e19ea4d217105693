"""Who may call, checked before a request's body is read; the body's size, bounded while it arrives.

FastAPI reads a route's whole body before it solves the route's dependencies, token check included: left
alone, anyone could make the API hold a body of any size before being told 401. Every router whose routes
take a body declares the most it reads (:func:`guarded`), and its routes then

1. run their access check (:func:`api.auth.require_token` or :func:`api.auth.read_access`, whichever the
   route declares) on the headers alone: 401, or 503 with no token configured, before a byte of the body
   is read;
2. read the body up to the limit: 413 as soon as the declared length or the bytes received go beyond it,
   so an oversized body is never held whole.

Both answers are JSON like every other error (FastAPI's own ``max_body_size`` answers 413 in plain text and
checks nothing before). The server reads ahead at most its own small buffer of a body nobody asked for.

>>> from fastapi import APIRouter
>>> router = APIRouter(route_class=guarded(64 * 1024))
>>> router.route_class.max_body_bytes
65536
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from functools import cache
from typing import Any, ClassVar

from fastapi import HTTPException, Request, Response
from fastapi.routing import APIRoute

from api.auth import access_check


class BoundedBodyRequest(Request):
    """A request whose body is read up to ``max_body_bytes``, 413 beyond."""

    def __init__(self, scope, receive, max_body_bytes: int):
        super().__init__(scope, receive)
        self.max_body_bytes = max_body_bytes

    def _too_large(self) -> HTTPException:
        return HTTPException(status_code=413, detail=f"the body is over {self.max_body_bytes} bytes")

    async def body(self) -> bytes:
        if not hasattr(self, "_body"):
            declared = self.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > self.max_body_bytes:
                raise self._too_large()
            chunks, size = [], 0
            async for chunk in self.stream():
                size += len(chunk)
                if size > self.max_body_bytes:
                    raise self._too_large()
                chunks.append(chunk)
            self._body = b"".join(chunks)
        return self._body


class GuardedRoute(APIRoute):
    """A route that checks access before reading its body, and reads at most ``max_body_bytes`` of it."""

    max_body_bytes: ClassVar[int] = 64 * 1024

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        check = access_check(self.dependant)
        limit = self.max_body_bytes

        async def guarded_handler(request: Request) -> Response:
            if check is not None:
                await check(request)
            return await handler(BoundedBodyRequest(request.scope, request.receive, limit))

        return guarded_handler


@cache
def guarded(max_body_bytes: int) -> type[GuardedRoute]:
    """The route class for a router whose routes read at most ``max_body_bytes`` of a body."""
    return type(f"GuardedRoute{max_body_bytes}", (GuardedRoute,), {"max_body_bytes": max_body_bytes})
