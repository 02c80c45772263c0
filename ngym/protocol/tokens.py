"""Token IDs and log-probabilities for training, read from vLLM's Chat Completions answers."""

from dataclasses import dataclass
from typing import Any

JSON = dict[str, Any]

TOKEN_FIELDS = ("prompt_token_ids", "generation_token_ids", "generation_log_probs")
TOKEN_ID_PREFIX = "token_id:"


class TokenDataError(ValueError):
    """Missing or inconsistent token data coming back from vLLM (never silently wrong numbers)."""


@dataclass(frozen=True, slots=True)
class TokenData:
    prompt_token_ids: list[int]
    generation_token_ids: list[int]
    generation_log_probs: list[float]

    def as_fields(self) -> JSON:
        return {
            "prompt_token_ids": self.prompt_token_ids,
            "generation_token_ids": self.generation_token_ids,
            "generation_log_probs": self.generation_log_probs,
        }


def add_token_request_flags(body: JSON) -> None:
    """Ask vLLM for inline token IDs and the sampled tokens' log-probabilities (`body` is our own copy)."""
    body["logprobs"] = True
    if body.get("top_logprobs") is None:
        body["top_logprobs"] = 0
    body["return_token_ids"] = True
    body["return_tokens_as_token_ids"] = True


def read_token_data(chat: JSON, choice: JSON, prompt_token_ids: list[int] | None) -> TokenData:
    """The prompt and generation token data of `choice`; prompt IDs from vLLM, else from `/tokenize`."""
    prompt = chat.get("prompt_token_ids")
    if prompt is None:
        prompt = prompt_token_ids
    if prompt is None:
        raise TokenDataError(
            "vLLM's answer has no prompt_token_ids (does this vLLM support return_token_ids?) "
            "and none were fetched from /tokenize"
        )
    if not isinstance(prompt, list):
        raise TokenDataError(f"prompt_token_ids must be a list of ints, got {type(prompt).__name__}")
    token_ids, log_probs = read_generation(choice)
    return TokenData(prompt, token_ids, log_probs)


def read_generation(choice: JSON) -> tuple[list[int], list[float]]:
    """(generation token IDs, their log-probabilities), checked against each other."""
    entries = _logprob_entries(choice)
    token_ids = choice.get("token_ids")
    if entries is None:
        if token_ids == []:
            return [], []
        raise TokenDataError("vLLM's answer has no logprobs.content; the request must set logprobs: true")
    log_probs = _log_probs(entries)
    if token_ids is None:
        return _ids_from_tokens(entries), log_probs
    if not isinstance(token_ids, list):
        raise TokenDataError(f"token_ids must be a list of ints, got {type(token_ids).__name__}")
    if len(token_ids) != len(entries):
        raise TokenDataError(
            f"vLLM returned {len(token_ids)} token_ids but {len(entries)} logprobs for the same generation"
        )
    _check_agreement(token_ids, entries)
    return token_ids, log_probs


def _logprob_entries(choice: JSON) -> list[JSON] | None:
    logprobs = choice.get("logprobs")
    if logprobs is None:
        return None
    if not isinstance(logprobs, dict):
        raise TokenDataError(f"logprobs must be an object, got {type(logprobs).__name__}")
    content = logprobs.get("content")
    if content is None:
        return None
    if not isinstance(content, list):
        raise TokenDataError(f"logprobs.content must be a list, got {type(content).__name__}")
    return content


def _log_probs(entries: list[JSON]) -> list[float]:
    try:
        values = [entry["logprob"] for entry in entries]
    except (KeyError, TypeError) as exc:
        raise TokenDataError("an entry of logprobs.content has no logprob") from exc
    if None in values:
        raise TokenDataError(f"logprobs.content[{values.index(None)}].logprob is null")
    return values


def _ids_from_tokens(entries: list[JSON]) -> list[int]:
    ids: list[int] = []
    for position, entry in enumerate(entries):
        token = entry.get("token")
        if isinstance(token, str) and token.startswith(TOKEN_ID_PREFIX):
            digits = token[len(TOKEN_ID_PREFIX) :]
            if digits.isdigit():
                ids.append(int(digits))
                continue
        raise TokenDataError(
            f"vLLM's answer has no token_ids, and logprobs.content[{position}].token ({token!r}) "
            "does not read 'token_id:<int>'; the request must set return_tokens_as_token_ids: true"
        )
    return ids


def _check_agreement(token_ids: list[int], entries: list[JSON]) -> None:
    first = entries[0].get("token") if entries else None
    if not (isinstance(first, str) and first.startswith(TOKEN_ID_PREFIX)):
        return  # tokens came back as text: there is nothing to compare the IDs with
    expected = [f"{TOKEN_ID_PREFIX}{token_id}" for token_id in token_ids]
    actual = [entry.get("token") for entry in entries]
    if expected == actual:
        return
    position = next(i for i, (want, got) in enumerate(zip(expected, actual, strict=True)) if want != got)
    raise TokenDataError(
        f"token_ids[{position}] is {token_ids[position]} but logprobs.content[{position}].token is {actual[position]!r}"
    )
