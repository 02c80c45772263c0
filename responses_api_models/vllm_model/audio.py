"""The audio side channel's files: `metadata.audio_path(s)` read and sent to vLLM inline, as data URLs, so that
the JSONL stays small and vLLM needs no --allowed-local-media-path. Relative paths are under `audio_root`;
absolute paths are used as they are (as in NeMo Gym). Files are read off the event loop."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

from ngym.protocol.audio import AUDIO_MIME, audio_key, audio_sources, with_audio
from ngym.protocol.errors import ConversionError
from ngym.protocol.shapes import JSON


class AudioChannel:
    def __init__(self, audio_root: str | None) -> None:
        self.audio_root = Path(audio_root) if audio_root is not None else None

    async def splice(self, payload: JSON) -> JSON:
        """The chat request with its row's audio in the last user message (unchanged when it has none)."""
        metadata = payload.get("metadata")
        key = audio_key(metadata)
        if key is None:
            return payload
        assert isinstance(metadata, dict)
        sources = audio_sources(metadata, key)
        if key == "audio_data":
            urls = sources
        else:
            field = f"metadata.{key}"
            paths = [
                self._resolve(path, field if key == "audio_path" else f"{field}[{i}]") for i, path in enumerate(sources)
            ]
            try:
                urls = await asyncio.to_thread(_data_urls, paths)
            except OSError as exc:
                raise ConversionError(f"cannot read {exc.filename!r}: {exc.strerror}", f"metadata.{key}") from None
        return with_audio(payload, key, urls)

    def _resolve(self, path: str, field: str) -> Path:
        file = Path(path)
        if not file.is_absolute():
            if self.audio_root is None:
                raise ConversionError(
                    f"{path!r} is relative but the model server has no audio_root; set audio_root in its config "
                    "or use absolute paths",
                    field,
                )
            file = self.audio_root / file
        if file.suffix.lower() not in AUDIO_MIME:
            raise ConversionError(
                f"{path!r}: unsupported audio extension {file.suffix!r} (supported: {', '.join(sorted(AUDIO_MIME))})",
                field,
            )
        if not file.is_file():
            raise ConversionError(f"{path!r} resolves to {str(file)!r}, which is not a file", field)
        return file


def _data_urls(paths: list[Path]) -> list[str]:
    return [
        f"data:audio/{AUDIO_MIME[path.suffix.lower()]};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"
        for path in paths
    ]
