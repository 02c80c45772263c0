"""NeMo Gym's audio side channel: a row carries its audio in `metadata` (the Responses API has no audio input
part), under one of `audio_data` (a `data:audio/...;base64,` URL), `audio_path` (a file) or `audio_paths` (files,
in order). The model server reads the files (`responses_api_models/vllm_model/audio.py`); these pure functions
find the key and put the audio, as `audio_url` parts ahead of the text, into the last user message.
"""

from __future__ import annotations

from typing import Any

from ngym.protocol.errors import ConversionError
from ngym.protocol.shapes import JSON

AUDIO_KEYS = ("audio_data", "audio_path", "audio_paths")
# File extension -> the MIME subtype vLLM's audio decoders read; an unknown extension is refused, not guessed.
AUDIO_MIME = {".wav": "wav", ".flac": "flac", ".mp3": "mpeg", ".m4a": "mp4", ".ogg": "ogg", ".opus": "opus"}


def audio_key(metadata: Any) -> str | None:
    """The one audio key set (non-empty) in a request's metadata; None when there is none."""
    if not isinstance(metadata, dict):
        return None
    present = [key for key in AUDIO_KEYS if metadata.get(key)]
    if len(present) > 1:
        raise ConversionError(
            f"the audio keys are exclusive, got {', '.join(present)}; set one of audio_data, audio_path, "
            "audio_paths per row",
            f"metadata.{present[1]}",
        )
    return present[0] if present else None


def audio_sources(metadata: JSON, key: str) -> list[str]:
    """The data URL or file paths under `key`, checked for shape."""
    value = metadata[key]
    if key == "audio_paths":
        if not isinstance(value, list) or not all(isinstance(path, str) and path for path in value):
            raise ConversionError("must be a list of file paths", "metadata.audio_paths")
        return list(value)
    if not isinstance(value, str):
        what = "a data:audio/...;base64, URL" if key == "audio_data" else "a file path"
        raise ConversionError(f"must be {what}, got {type(value).__name__}", f"metadata.{key}")
    return [value]


def with_audio(payload: JSON, key: str, urls: list[str]) -> JSON:
    """`payload` (a chat request) with the audio as `audio_url` parts at the head of the last user message (a new
    user message when there is none), and `key` taken out of its metadata (the metadata left out when empty)."""
    out = dict(payload)
    metadata = {k: v for k, v in payload["metadata"].items() if k != key}
    if metadata:
        out["metadata"] = metadata
    else:
        out.pop("metadata", None)
    parts: list[JSON] = [{"type": "audio_url", "audio_url": {"url": url}} for url in urls]
    messages = list(payload.get("messages") or [])
    for index in range(len(messages) - 1, -1, -1):
        message = messages[index]
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                new_content = [*parts, {"type": "text", "text": content}]
            elif isinstance(content, list):
                new_content = [*parts, *content]
            else:
                new_content = parts
            messages[index] = {**message, "content": new_content}
            break
    else:
        messages.append({"role": "user", "content": parts})
    out["messages"] = messages
    return out
