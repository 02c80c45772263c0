"""LLM-as-judge calls: a failed judge call is its own outcome, never a wrong answer.

`call_judge` POSTs to a judge model server by name and raises JudgeError when the call fails; `judge_failsafe`
wraps /verify so a JudgeError answers a row with reward 0.0, `mask_sample` and `_ng_failure_class:
"judge_failed"`, which ngym's collector records as a failure of class `verify`, not as a reward.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from pydantic import BaseModel

from .server_utils import ServerClient, get_response_json, raise_for_status

ResponseT = TypeVar("ResponseT", bound=BaseModel)
JUDGE_FAILED = "judge_failed"


class JudgeError(Exception):
    """A judge call failed."""


async def reraise_judge_errors(coro: Awaitable[Any]) -> Any:
    try:
        return await coro
    except JudgeError:
        raise
    except Exception as error:
        raise JudgeError(f"{type(error).__name__}: {error}") from error


async def call_judge(
    server_client: ServerClient, *, server_name: str, url_path: str, json: Any, response_model: type[ResponseT]
) -> ResponseT:
    async def call() -> ResponseT:
        answer = await server_client.post(server_name=server_name, url_path=url_path, json=json)
        await raise_for_status(answer)
        return response_model.model_validate(await get_response_json(answer))

    result: ResponseT = await reraise_judge_errors(call())
    return result


def judge_failsafe(verify_fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """verify(), with a JudgeError turned into the failure row (FastAPI still sees verify's own signature)."""

    @functools.wraps(verify_fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        from fastapi.encoders import jsonable_encoder
        from fastapi.responses import JSONResponse

        try:
            return await verify_fn(*args, **kwargs)
        except JudgeError as error:
            body = kwargs.get("body") or next(
                (a for a in (*kwargs.values(), *args) if hasattr(a, "model_dump") and hasattr(a, "response")), None
            )
            if body is None:
                raise RuntimeError("judge_failsafe: no verify request body to answer with") from error
            reason = str(error)[:2000]
            data = body.model_dump()
            config = data.get("instance_config")
            data |= {
                "reward": 0.0,
                "mask_sample": True,
                "failure_kind": JUDGE_FAILED,
                "failure_reason": reason,
                "instance_config": {**(config if isinstance(config, dict) else {}), "mask_sample": True},
                "_ng_failure_class": JUDGE_FAILED,
                "_ng_failure_judge_error": reason,
            }
            return JSONResponse(content=jsonable_encoder(data))

    return wrapper
