"""Token IDs and log-probabilities for training: the request flags that ask vLLM for them, reading them from
vLLM's Chat Completions answers, and the two token-data modes one of which the model server chooses at
start-up from `return_token_id_information`."""

from dataclasses import dataclass
from typing import Any, Protocol

from ngym.protocol.errors import ConversionError
from ngym.protocol.shapes import JSON, TokenFields

TOKEN_FIELDS = ("prompt_token_ids", "generation_token_ids", "generation_log_probs")
TOKEN_ID_PREFIX = "token_id:"


class TokenDataError(ValueError):
    """Missing or inconsistent token data coming back from vLLM (never silently wrong numbers)."""


@dataclass(frozen=True, slots=True)
class TokenData:
    prompt_token_ids: list[int]
    generation_token_ids: list[int]
    generation_log_probs: list[float]

    def as_fields(self) -> TokenFields:
        return {
            "prompt_token_ids": self.prompt_token_ids,
            "generation_token_ids": self.generation_token_ids,
            "generation_log_probs": self.generation_log_probs,
        }


def add_token_request_flags(body: JSON, inline_ids: bool = True) -> None:
    """Ask vLLM for the sampled tokens' IDs and log-probabilities (`body` is our own copy); with `inline_ids`
    (`request_prompt_and_generation_token_ids`) the prompt's and generation's IDs inline too, else the prompt's
    come from `/tokenize`.

    The conversion functions do not call this: the model server does, after its configured
    `sampling_overrides` are applied, so that these flags always win.
    """
    body["logprobs"] = True
    if body.get("top_logprobs") is None:
        body["top_logprobs"] = 0
    if inline_ids:
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


# ---------------------------------------------------------------------------------------------------
# Token-data modes


class TokenDataMode(Protocol):
    """What the conversion does with token data. Stateless: one instance serves every request."""

    enabled: bool

    def history_fields(self, item: JSON, container: str, index: int) -> TokenFields | None:
        """The token data a history item (or Chat message) carries back from an earlier turn, checked;
        `container[index]` names it in errors."""
        ...

    def check_chat_request(self, body: JSON) -> None:
        """Refuse a Chat request whose answer could not carry token data."""
        ...

    def needs_prompt_token_ids(self, chat: JSON) -> bool:
        """Whether the caller must fetch the prompt's token IDs from `/tokenize` for vLLM's answer `chat`."""
        ...

    def add_to_item(self, item: JSON, chat: JSON, choice: JSON, prompt_token_ids: list[int] | None) -> None:
        """Put the token data of vLLM's `choice` on `item`, our own new output item."""
        ...

    def require_choices(self) -> None:
        """Called for a Chat answer without choices."""
        ...

    def add_to_caller_answer(self, answer: JSON, prompt_token_ids: list[int] | None) -> None:
        """Move the token data onto each choice's message; `answer`, its choices and their messages are our
        own copies, changed in place."""
        ...


class TokenDataOn:
    """`return_token_id_information: true`: token data is read from history and put on every answer."""

    __slots__ = ()
    enabled = True

    def history_fields(self, item: JSON, container: str, index: int) -> TokenFields | None:
        if all(item.get(field) is None for field in TOKEN_FIELDS):
            return None
        prompt, generation, log_probs = (_token_list(item, field, container, index) for field in TOKEN_FIELDS)
        if len(generation) != len(log_probs):
            raise ConversionError(
                f"generation_token_ids has {len(generation)} entries, "
                f"generation_log_probs {len(log_probs)}; they must be equally long",
                f"{container}[{index}].generation_log_probs",
            )
        return {"prompt_token_ids": prompt, "generation_token_ids": generation, "generation_log_probs": log_probs}

    def check_chat_request(self, body: JSON) -> None:
        n = body.get("n")
        if n is not None and n != 1:
            raise ConversionError("token data is returned for exactly one choice; n must be 1", "n")

    def needs_prompt_token_ids(self, chat: JSON) -> bool:
        return chat.get("prompt_token_ids") is None

    def add_to_item(self, item: JSON, chat: JSON, choice: JSON, prompt_token_ids: list[int] | None) -> None:
        item.update(read_token_data(chat, choice, prompt_token_ids).as_fields())

    def require_choices(self) -> None:
        raise TokenDataError("vLLM's answer has no choices, so there is no token data")

    def add_to_caller_answer(self, answer: JSON, prompt_token_ids: list[int] | None) -> None:
        # vLLM's top-level prompt_token_ids and per-choice token_ids are moved onto the message, not duplicated.
        for choice in answer["choices"]:
            choice["message"].update(read_token_data(answer, choice, prompt_token_ids).as_fields())
            choice.pop("token_ids", None)
        answer.pop("prompt_token_ids", None)


class TokenDataOff:
    """`return_token_id_information: false`: token fields in history are ignored, answers get none."""

    __slots__ = ()
    enabled = False

    def history_fields(self, item: JSON, container: str, index: int) -> TokenFields | None:
        return None

    def check_chat_request(self, body: JSON) -> None:
        return None

    def needs_prompt_token_ids(self, chat: JSON) -> bool:
        return False

    def add_to_item(self, item: JSON, chat: JSON, choice: JSON, prompt_token_ids: list[int] | None) -> None:
        return None

    def require_choices(self) -> None:
        return None

    def add_to_caller_answer(self, answer: JSON, prompt_token_ids: list[int] | None) -> None:
        return None


TOKEN_DATA_ON = TokenDataOn()
TOKEN_DATA_OFF = TokenDataOff()


def token_data_mode(return_token_id_information: bool) -> TokenDataMode:
    """The mode for the `return_token_id_information` setting: chosen once, at start-up."""
    return TOKEN_DATA_ON if return_token_id_information else TOKEN_DATA_OFF


def _token_list(item: JSON, field: str, container: str, index: int) -> list[Any]:
    value = item.get(field)
    if not isinstance(value, list):
        state = "missing" if value is None else f"a {type(value).__name__}"
        raise ConversionError(
            f"token data needs all of {', '.join(TOKEN_FIELDS)} as lists; {field} is {state}",
            f"{container}[{index}].{field}",
        )
    return value
