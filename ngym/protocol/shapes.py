"""The shapes passed between the protocol modules."""

from typing import Any, TypedDict

# A JSON object as parsed from (or about to be written to) a request or answer body.
JSON = dict[str, Any]


class TokenFields(TypedDict):
    """The training token data of one model call, as it appears on a Response item or a Chat message."""

    prompt_token_ids: list[int]
    generation_token_ids: list[int]
    generation_log_probs: list[float]
