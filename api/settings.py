"""Settings of the API alone, from the same ``CVOPS_`` environment (and env file) as
:class:`core.settings.Settings`.

| variable | default | meaning |
|---|---|---|
| ``CVOPS_API_TOKENS`` | empty | SHA-256 hashes (hex) of the valid API tokens, comma separated (see :mod:`api.tokens`) |
| ``CVOPS_API_READ_PUBLIC`` | true | GET routes answer without a token; false: they need one too |
| ``CVOPS_API_OFFLINE_AFTER_S`` | 60 | a camera with no frame for this long is ``offline`` |
| ``CVOPS_API_WARNING_AFTER_RESOLVED_S`` | 600 | a camera stays ``warning`` this long after an alert is resolved |
| ``CVOPS_API_SSE_HEARTBEAT_S`` | 15 | an SSE comment is sent after this much silence, so proxies keep the stream open |
| ``CVOPS_API_SSE_QUEUE`` | 256 | alerts held for one slow subscriber; beyond, the oldest are dropped and counted |
| ``CVOPS_API_SSE_MAX_SUBSCRIBERS`` | 100 | live alert streams open at once; one more answers 503 |
| ``CVOPS_API_SSE_MAX_PER_CLIENT`` | 4 | live alert streams one client address may hold; one more answers 429 |
"""

from __future__ import annotations

import os

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from api.tokens import is_token_hash


class ApiSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CVOPS_",
        env_file=os.environ.get("CVOPS_ENV_FILE", ".env"),
        extra="ignore",
    )

    api_tokens: str = Field("", description="SHA-256 hashes (hex) of valid API tokens, comma separated")
    api_read_public: bool = Field(True, description="GET routes need no token")
    api_offline_after_s: float = Field(60.0, gt=0, description="no frame for this long: offline, s")
    api_warning_after_resolved_s: float = Field(600.0, ge=0, description="warning after a resolved alert, s")
    api_sse_heartbeat_s: float = Field(15.0, gt=0, description="SSE comment after this much silence, s")
    api_sse_queue: int = Field(256, ge=1, description="alerts held per slow SSE subscriber")
    api_sse_max_subscribers: int = Field(100, ge=1, description="live alert streams open at once")
    api_sse_max_per_client: int = Field(4, ge=1, description="live alert streams per client address")

    @property
    def token_hashes(self) -> list[str]:
        """The configured hashes, lower case; ValueError (that does not repeat the value, which may be a plain
        token pasted by mistake) when one is not 64 hex digits."""
        hashes = [item.strip().lower() for item in self.api_tokens.split(",") if item.strip()]
        if not all(is_token_hash(h) for h in hashes):
            raise ValueError(
                "CVOPS_API_TOKENS holds SHA-256 hashes (64 hex digits, comma separated), not tokens; make one with "
                """python -c "import hashlib;print(hashlib.sha256(b'TOKEN').hexdigest())\""""
            )
        return hashes
