"""A Responses API model that answers from rollouts NeMo Gym recorded: for golden replay through an agent.

Each recorded row gives its `responses_create_params.input` and its `response.output`; the output is cut into
the model's turns (each run of items up to a user message or a tool's output, which the agent or environment
adds). A call whose input starts with a row's recorded input is answered with that row's next turn: the turn
after as many user messages and tool outputs as the call's input holds past the recorded input. A call no row
matches is answered 404 and kept in `unmatched`. It listens on 127.0.0.1, on a port of its own.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

import orjson


def item_key(item: Any) -> tuple[Any, ...]:
    """What identifies an input item across its dumps: role and text for a message, else type and call id."""
    if not isinstance(item, dict):
        return ("user", str(item))
    if "role" in item:
        content = item.get("content")
        if isinstance(content, list):
            content = "".join(str(part.get("text", "")) for part in content if isinstance(part, dict))
        return (item["role"], content)
    return (item.get("type"), item.get("call_id"), item.get("name"))


def adds_to_the_conversation(item: Any) -> bool:
    """An item the agent or environment adds between model turns."""
    return isinstance(item, dict) and (item.get("role") == "user" or item.get("type") == "function_call_output")


def model_turns(output: list[Any]) -> list[list[Any]]:
    turns: list[list[Any]] = [[]]
    for item in output:
        if adds_to_the_conversation(item):
            if turns[-1]:
                turns.append([])
        else:
            turns[-1].append(item)
    return [turn for turn in turns if turn]


class Recording:
    def __init__(self, row: dict[str, Any]) -> None:
        given = row["responses_create_params"]["input"]
        self.input = [item_key(item) for item in ([given] if isinstance(given, str) else given)]
        self.response = row["response"]
        self.turns = model_turns(self.response["output"])

    def answer(self, given: list[Any]) -> dict[str, Any] | None:
        keys = [item_key(item) for item in given]
        if keys[: len(self.input)] != self.input:
            return None
        turn = sum(1 for item in given[len(self.input) :] if adds_to_the_conversation(item))
        if turn >= len(self.turns):
            return None
        return {**self.response, "output": self.turns[turn]}


class RecordedModel:
    """`with RecordedModel(rows) as model: model.base_url` (an OpenAI base URL, ending in /v1)."""

    def __init__(self, rows: Sequence[dict[str, Any]]) -> None:
        self.recordings = sorted((Recording(row) for row in rows), key=lambda r: -len(r.input))
        self.unmatched: list[Any] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.thread = threading.Thread(target=self.server.serve_forever, name="recorded-model", daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def answer(self, body: dict[str, Any]) -> dict[str, Any] | None:
        given = body.get("input")
        given = [given] if isinstance(given, str) else given or []
        for recording in self.recordings:  # the longest recorded input first: the most specific row
            found = recording.answer(given)
            if found is not None:
                return found
        self.unmatched.append(given)
        return None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        model = self

        class Handler(BaseHTTPRequestHandler):
            def _send(self, status: int, body: Any) -> None:
                data = orjson.dumps(body)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # http.server's name
                self._send(200, {"object": "list", "data": [{"id": "recorded", "object": "model"}]})

            def do_POST(self) -> None:
                body = orjson.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                found = model.answer(body) if self.path.endswith("/responses") else None
                if found is None:
                    self._send(404, {"error": {"message": f"no recorded answer for this call to {self.path}"}})
                else:
                    self._send(200, found)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler

    def __enter__(self) -> RecordedModel:
        self.thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()
