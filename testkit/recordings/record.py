"""Record real vLLM's answers (CPU build, the tiny model) to every case, for the stand-in's checks:
`python -m testkit.recordings.record [--only GLOB ...]`. Also the readers the checks use (`load_recording`,
`shape_mismatches`).

Record real vLLM request/response pairs into ``tests/data/vllm_recordings/`` (one JSON file per case).

    .venv/bin/python -m testkit.record_vllm [--out DIR] [--model-dir DIR] [--python PATH] [--only GLOB ...]

Starts real vLLM (CPU build) on the tiny model twice: once with the tool-call and reasoning parsers,
``--enable-scale-out`` and ``--trust-request-chat-template`` (most cases, the token routes render -> generate ->
derender among them), once with ``--api-key``, no reasoning parser, no ``--enable-scale-out`` and no trusted
request templates (401, open routes, plain content, the token routes switched off, a request template refused).
The text-completions, Responses and (de)tokenize cases are in ``record_cases_completions``. ``--only`` records
just the cases whose names match (and the cases they are built from); a server none of them needs is not started.
Only volatile values (ids, timestamps) are normalised, in requests built from earlier answers too; every key,
type and nesting level is kept as vLLM sent it.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ngym.vllm.process import HttpResult, VllmServer, find_vllm_python, http_request
from testkit.forcing import STRUCTURED_OUTPUTS_IN_REASONING
from testkit.recordings.case import (
    API_KEY,
    DEFAULT_MODEL_DIR,
    FIXED_CREATED,
    RECORDED_HEADERS,
    RECORDINGS_DIR,
    REPO_ROOT,
    SCALE_OUT_ARGS,
    TRUST_TEMPLATE_ARGS,
    Answers,
    Case,
)
from testkit.recordings.chat_cases import api_key_server_cases, main_server_cases
from testkit.recordings.completions_cases import completions_cases, untrusted_template_cases
from testkit.recordings.token_cases import no_scale_out_cases, token_cases
from testkit.tiny_model import SERVED_MODEL_NAME, ensure_tiny_model


def select(cases: list[Case], patterns: list[str] | None) -> list[Case]:
    """The cases matching any glob in ``patterns`` (all when None) and those they need, in recording order."""
    if patterns is None:
        return cases
    by_name = {case.name: case for case in cases}
    wanted: set[str] = set()
    todo = [c.name for c in cases if any(fnmatch.fnmatchcase(c.name, p) for p in patterns)]
    while todo:
        name = todo.pop()
        if name not in wanted:
            wanted.add(name)
            todo.extend(by_name[name].needs)
    return [case for case in cases if case.name in wanted]


# -- reading recordings --------------------------------------------------------------------------------------
def load_recording(name: str, directory: Path = RECORDINGS_DIR) -> dict[str, Any]:
    record: dict[str, Any] = json.loads((directory / f"{name}.json").read_text())
    return record


def shape_mismatches(recorded: Any, actual: Any, path: str = "$") -> list[str]:
    """Where ``actual`` differs from ``recorded`` in keys (and their order), JSON types, nulls or nesting.

    Arrays may differ in length (but not in being empty); every actual element must have the shape of the
    first recorded element.
    """
    if isinstance(recorded, dict):
        if not isinstance(actual, dict):
            return [f"{path}: expected object, got {type(actual).__name__}"]
        if list(recorded) != list(actual):
            return [f"{path}: keys {list(actual)} != recorded {list(recorded)}"]
        return [m for key in recorded for m in shape_mismatches(recorded[key], actual[key], f"{path}.{key}")]
    if isinstance(recorded, list):
        if not isinstance(actual, list):
            return [f"{path}: expected array, got {type(actual).__name__}"]
        if not recorded or not actual:
            return [] if not recorded and not actual else [f"{path}: emptiness differs from the recording"]
        return [m for i, item in enumerate(actual) for m in shape_mismatches(recorded[0], item, f"{path}[{i}]")]
    if type(recorded) is not type(actual):
        return [f"{path}: {type(actual).__name__} ({actual!r}) != recorded {type(recorded).__name__} ({recorded!r})"]
    return []


# -- normalisation -------------------------------------------------------------------------------------------
_VOLATILE_ID = re.compile(
    r"^((?:generate-tokens-)?(?:chatcmpl-tool-|chatcmpl-|modelperm-|cmpl-|resp_|rs_|msg_|fc_|call_))([0-9a-f]+)$"
    r"|^(generate-tokens-|)([0-9a-f]{16})$"  # vLLM's random_uuid(): derender's tool-call ids, request ids
)
_ID_KEYS = ("id", "request_id", "call_id")
_FINGERPRINT = re.compile(r"^(vllm-[0-9.]+-)([0-9a-f]+)$")


def _normalise(value: Any, model_dir: str, key: str | None = None) -> Any:
    if isinstance(value, dict):
        return {k: _normalise(v, model_dir, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_normalise(v, model_dir) for v in value]
    if key in ("created", "created_at") and isinstance(value, int):
        return FIXED_CREATED
    if isinstance(value, str):
        if key in _ID_KEYS and (m := _VOLATILE_ID.match(value)):
            prefix, digits = (m.group(1), m.group(2)) if m.group(2) else (m.group(3), m.group(4))
            return prefix + "0" * len(digits)
        if key == "system_fingerprint" and (m := _FINGERPRINT.match(value)):
            return m.group(1) + "0" * len(m.group(2))
        return value.replace(model_dir, "<model_dir>")
    return value


def _body_record(result: HttpResult, model_dir: Path) -> dict[str, Any]:
    if "json" in result.headers.get("content-type", ""):
        return {"body": _normalise(json.loads(result.body), str(model_dir))}
    return {"body_text": result.body.decode(errors="replace")}


def record_case(
    server: VllmServer, case: Case, server_label: str, model_dir: Path, answers: Answers | None = None
) -> tuple[dict[str, Any], HttpResult]:
    body = case.request_body(answers or {})
    result = http_request(
        f"{server.root_url}{case.path}", method=case.method, body=body, headers=case.headers, timeout=300
    )
    argv = [a.replace(str(model_dir), "<model_dir>") for a in server.command()[3:]]
    argv = ["<port>" if a == str(server.port) else a for a in argv]
    record = {
        "name": case.name,
        "description": case.description,
        "vllm_version": server.request("GET", "/version").json()["version"],
        "server": {"label": server_label, "args": argv},
        "request": {
            "method": case.method,
            "path": case.path,
            "headers": case.headers,
            "body": _normalise(body, str(model_dir)),
        },
        "response": {
            "status": result.status,
            "headers": {h: result.headers[h] for h in RECORDED_HEADERS if h in result.headers},
            **_body_record(result, model_dir),
        },
    }
    return record, result


def record_all(
    server: VllmServer,
    cases: Iterable[Case],
    label: str,
    model_dir: Path,
    out: Path,
    log: Callable[[str], None] = print,
) -> list[str]:
    answers: dict[str, Any] = {}
    for case in cases:
        record, result = record_case(server, case, label, model_dir, answers)
        if "json" in result.headers.get("content-type", ""):
            answers[case.name] = result.json()
        path = out / f"{case.name}.json"
        path.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n")
        log(f"  {case.name}: {record['response']['status']}")
    return list(answers)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=RECORDINGS_DIR)
    parser.add_argument("--model-dir", type=Path, default=DEFAULT_MODEL_DIR)
    parser.add_argument("--python", type=Path, default=find_vllm_python(REPO_ROOT))
    parser.add_argument("--only", nargs="+", metavar="GLOB", help="record only the cases whose names match")
    args = parser.parse_args(argv)
    if args.python is None:
        print("no vLLM venv found (.venv-vllm/bin/python); pass --python", file=sys.stderr)
        return 2
    model_dir = ensure_tiny_model(args.model_dir, args.python)
    args.out.mkdir(parents=True, exist_ok=True)

    main_cases = select([*main_server_cases(), *token_cases(), *completions_cases()], args.only)
    key_cases = select([*api_key_server_cases(), *no_scale_out_cases(), *untrusted_template_cases()], args.only)
    if not main_cases and not key_cases:
        print(f"no case matches {args.only}", file=sys.stderr)
        return 2

    if main_cases:
        main_server = VllmServer(
            model_dir,
            python=args.python,
            served_model_name=SERVED_MODEL_NAME,
            reasoning_parser="deepseek_r1",
            extra_args=STRUCTURED_OUTPUTS_IN_REASONING + SCALE_OUT_ARGS + TRUST_TEMPLATE_ARGS,
        )
        with main_server.start():
            print(f"vLLM (parsers, scale-out) ready in {main_server.ready_seconds:.1f}s")
            record_all(main_server, main_cases, "parsers", model_dir, args.out)

    if key_cases:
        key_server = VllmServer(model_dir, python=args.python, served_model_name=SERVED_MODEL_NAME, api_key=API_KEY)
        with key_server.start():
            print(f"vLLM (--api-key) ready in {key_server.ready_seconds:.1f}s")
            record_all(key_server, key_cases, "api_key", model_dir, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
