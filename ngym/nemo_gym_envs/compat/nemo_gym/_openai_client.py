"""NeMoGymAsyncOpenAI: the small aiohttp client NeMo Gym's environments use to call an OpenAI-compatible endpoint
(a judge, the policy model) and read the answer as a plain dict.

Every call goes out on the process's aiohttp session (`server_utils.request`) with `Authorization: Bearer
<api_key>` and the client's `default_headers`. An answer with a status worth retrying (429, 5xx, 404, 408) is
retried after half a second, at most `max_http_attempts` times in all (an `internal` NeMo Gym server's rate-limit
answers do not use up attempts); the last answer's error is raised by `raise_for_status`, with its body kept.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from pydantic import BaseModel, Field

from .server_utils import MAX_NUM_TRIES, get_response_json, raise_for_status, request

RATE_LIMIT_ERROR_CODES = [429, 502, 503, 504, 520]
RETRY_ERROR_CODES = [*RATE_LIMIT_ERROR_CODES, 404, 408, 500]
RETRY_DELAY_S = 0.5


class NeMoGymAsyncOpenAI(BaseModel):
    """`await client.create_chat_completion(model=..., messages=...)` and the like: the JSON answer as a dict."""

    base_url: str
    api_key: str
    internal: bool = False  # an internal NeMo Gym server: rate-limit answers are retried without limit
    max_connection_retries: int | None = None  # kept for NeMo Gym's signature; the process's client retries
    max_http_attempts: int = Field(default=MAX_NUM_TRIES, ge=1)
    default_headers: dict[str, str] = Field(default_factory=dict)

    async def _post_or_get(self, method: str, url: str, body: dict[str, Any] | None = None) -> Any:
        headers = {**self.default_headers, "Authorization": f"Bearer {self.api_key}"}
        extra: dict[str, Any] = {"json": body} if body is not None else {}
        attempts, tried = self.max_http_attempts, 0
        while True:
            tried += 1
            response: aiohttp.ClientResponse = await request(
                method, url, _internal=self.internal, headers=headers, **extra
            )
            if response.status not in RETRY_ERROR_CODES:
                await raise_for_status(response)
                return await get_response_json(response)
            content = await response.read()
            if self.internal and response.status in RATE_LIMIT_ERROR_CODES:
                attempts += 1
            if tried >= attempts:
                await raise_for_status(response, content)
            print(f"[model_retry url={url} status={response.status} try={tried} max_tries={attempts}]", flush=True)
            await asyncio.sleep(RETRY_DELAY_S)

    async def create_models(self) -> Any:
        return await self._post_or_get("GET", f"{self.base_url}/models")

    async def create_chat_completion(self, **kwargs: Any) -> Any:
        return await self._post_or_get("POST", f"{self.base_url}/chat/completions", kwargs)

    async def create_completion(self, **kwargs: Any) -> Any:
        return await self._post_or_get("POST", f"{self.base_url}/completions", kwargs)

    async def create_response(self, **kwargs: Any) -> Any:
        return await self._post_or_get("POST", f"{self.base_url}/responses", kwargs)

    async def create_tokenize(self, **kwargs: Any) -> Any:
        return await self._post_or_get("POST", f"{self.base_url.removesuffix('/v1')}/tokenize", kwargs)
