"""Thinking text: `<think>...</think>` blocks in content and vLLM's separate reasoning fields."""

from typing import Any

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"


def split_think(text: str) -> tuple[str, str]:
    """Cut every `<think>...</think>` block out of `text`; return (remaining text, block bodies in order).

    An opening tag without a closing one takes the rest of the text: generation stopped mid-thought.
    A closing tag without an opening one is ordinary text.
    """
    start = text.find(THINK_OPEN)
    if start < 0:
        return text, ""
    kept: list[str] = []
    thought: list[str] = []
    pos = 0
    while start >= 0:
        kept.append(text[pos:start])
        body = start + len(THINK_OPEN)
        end = text.find(THINK_CLOSE, body)
        if end < 0:
            thought.append(text[body:])
            pos = len(text)
            break
        thought.append(text[body:end])
        pos = end + len(THINK_CLOSE)
        start = text.find(THINK_OPEN, pos)
    kept.append(text[pos:])
    return "".join(kept), "".join(thought)


def with_think(reasoning: str, text: str) -> str:
    """`text` with `reasoning` as one `<think>` block ahead of it; no block when there is no reasoning."""
    return f"{THINK_OPEN}{reasoning}{THINK_CLOSE}{text}" if reasoning else text


def message_reasoning(message: dict[str, Any]) -> str:
    """vLLM's thinking beside the content: `reasoning` (newer vLLM) or `reasoning_content` (older)."""
    value = message.get("reasoning") or message.get("reasoning_content")
    return value if isinstance(value, str) else ""
