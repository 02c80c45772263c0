"""A key in `base_url`, in `default_headers` and in `extra_body` is found in no log line, no answer
and no file of a whole ng_run + ng_collect_rollouts session: rollouts that succeed, that vLLM refuses with an
error quoting the request's headers (as some proxies do), and that fail outright.

vLLM is the scripted stand-in: it can be made to echo secrets on demand, which a real vLLM cannot."""

from __future__ import annotations

import base64
import urllib.request
from pathlib import Path

from ngym.testing.gym_process import SEED_CONFIG_PATHS, GymProcess
from ngym.testing.vllm_standin import HttpError, StandinScript, StandinServer

ROOT = Path(__file__).resolve().parents[2]
URL_KEY = "url-key-7f3a9c"
HEADER_KEY = "hdr-key-2c4f6a"
BODY_KEY = "body-key-9b7d3e"
SECRETS = (URL_KEY, HEADER_KEY, BODY_KEY)
MODEL_SECTION = "policy_model.responses_api_models.vllm_model"


def overrides(standin: StandinServer) -> list[str]:
    keyed_url = standin.base_url.replace("http://", f"http://ngym:{URL_KEY}@")
    return [
        f"++policy_base_url={keyed_url}",
        "++policy_api_key=",  # the URL's user:password is the Authorization header
        f"++policy_model_name={standin.script.model}",
        f"++{MODEL_SECTION}.default_headers={{X-Api-Key: {HEADER_KEY}}}",
        f"++{MODEL_SECTION}.extra_body={{vendor_token: {BODY_KEY}}}",
        f"++{MODEL_SECTION}.max_retries=0",
    ]


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return str(answer.read().decode())


def test_no_secret_in_any_log_answer_or_file(tmp_path: Path) -> None:
    output = tmp_path / "rollouts" / "out.jsonl"
    args = [
        "+agent_name=simple_weather_simple_agent",
        "+input_jsonl_fpath=resources_servers/simple_weather/data/example.jsonl",
        f"+output_jsonl_fpath={output}",
        "+max_attempts=1",
    ]
    shown: list[str] = []
    log = tmp_path / "ng_run.log"
    with StandinServer(StandinScript(tool_call_mode=True)) as standin:
        with GymProcess(ROOT, SEED_CONFIG_PATHS, overrides(standin), log_path=log) as gym:
            first = gym.collect(*args, "+limit=3")
            shown += [first.stdout, first.stderr]
            sent = standin.log.last()
            # A proxy in front of vLLM that quotes the request back in its refusal.
            echo = f"refused: X-Api-Key: {HEADER_KEY}; vendor_token={BODY_KEY}; from http://ngym:{URL_KEY}@proxy"
            standin.script.down = HttpError(400, {"error": {"message": echo, "type": "BadRequestError"}})
            refused = gym.collect(*args, "+limit=5", check=False)
            refusals = (output.parent / "out.failures.jsonl").read_text()
            standin.script.down = HttpError(500)
            failed = gym.collect(*args, "+limit=7", check=False)
            shown += [refused.stdout, refused.stderr, failed.stdout, failed.stderr]
            head = f"http://127.0.0.1:{gym.head_port}"
            config, servers = get(head + "/config"), get(head + "/servers")
            shown += [config, servers]
    # What reached vLLM carried every secret (so the run really used them) ...
    assert sent.headers.get("x-api-key") == HEADER_KEY
    assert sent.headers.get("authorization") == "Basic " + base64.b64encode(f"ngym:{URL_KEY}".encode()).decode()
    assert sent.json()["vendor_token"] == BODY_KEY
    assert (refused.returncode, failed.returncode) == (3, 3)
    assert "refused: X-Api-Key: ***; vendor_token=***; from http://proxy" in refusals, refusals
    shown.append(refusals)
    shown.append(log.read_text())
    shown += [path.read_text() for path in output.parent.iterdir()]
    # ... and none of them came back out.
    for text in shown:
        for secret in SECRETS:
            assert secret not in text, f"{secret} shown in:\n{text[:3000]}"
    assert '"return_token_id_information"' in config and "***" in config
