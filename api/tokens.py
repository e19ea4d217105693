"""API tokens, hashed at rest: the service holds only the SHA-256 of each token (64 hex digits), never
the token itself, so a leaked environment or settings file grants nothing.

Make a token, give it to the client, and put its hash in ``CVOPS_API_TOKENS`` (comma separated)::

    python -c "import secrets;print(secrets.token_urlsafe(32))"
    python -c "import hashlib;print(hashlib.sha256(b'TOKEN').hexdigest())"

>>> hash_token("TOKEN")
'f98103e9217f099208569d295c1b276f1821348636c268c854bb2a086e0037cd'
>>> verify("TOKEN", [hash_token("TOKEN")])
True
>>> verify("guess", [hash_token("TOKEN")])
False
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

HASH_HEX_DIGITS = 64


def hash_token(token: str) -> str:
    """SHA-256 of the token's UTF-8 bytes, lower-case hex."""
    return hashlib.sha256(token.encode()).hexdigest()


def verify(token: str, hashes: Iterable[str]) -> bool:
    """Whether ``token`` hashes to one of ``hashes``. Every hash is compared, in constant time each, so the
    answer's timing says nothing about which hash (or how much of one) matched."""
    digest = hash_token(token)
    found = False
    for expected in hashes:
        found |= hmac.compare_digest(digest, expected.lower())
    return found


def is_token_hash(value: str) -> bool:
    """Whether ``value`` looks like :func:`hash_token`'s output (64 hex digits)."""
    return len(value) == HASH_HEX_DIGITS and all(c in "0123456789abcdefABCDEF" for c in value)
