"""A key in `base_url`, in `default_headers` and in `extra_body` is found in no log line, no answer
and no file of a whole ng_run + ng_collect_rollouts session: rollouts that succeed, that vLLM refuses with an
error quoting the request's headers (as some proxies do), and that fail outright.

vLLM is the scripted stand-in: it can be made to echo secrets on demand, which a real vLLM cannot."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http.client
import io
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path

import aiohttp
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ngym.cli.gym import main as gym_main
from ngym.cli.run import main as ng_run_main
from ngym.config.load import quote_value, value_text
from ngym.http.app import serve_in_background
from ngym.viewer.server import viewer_app
from ngym.viewer.state import Viewer, ViewerConfig
from ngym.vllm.process import free_port
from testkit.gym_process import SEED_CONFIG_PATHS, GymProcess, console_script
from testkit.secret_strategies import appearances, secret_names, secret_values
from testkit.standin.script import HttpFault, StandinScript
from testkit.standin.server import StandinServer

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
            standin.script.down = HttpFault(400, {"error": {"message": echo, "type": "BadRequestError"}})
            refused = gym.collect(*args, "+limit=5", check=False)
            refusals = (output.parent / "out.failures.jsonl").read_text()
            standin.script.down = HttpFault(500)
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


@settings(max_examples=3, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(
    named=st.lists(
        st.tuples(secret_names(), secret_values()), min_size=2, max_size=4, unique_by=lambda p: p[0].lower()
    ),
    api_key=secret_values(header_safe=True),
)
def test_random_secret_names_and_values_never_come_back_out(
    named: list[tuple[str, str]], api_key: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Issue 23's property: random secret names (plurals, `_value` and `_pem` forms, any case) holding random values
    (`=`, braces, quotes, newlines, ...) go in on the command line, as `gym` flags and in the model server's request
    settings; none of the values comes out of config errors, /config, ng_run's output, server error answers, the
    rollout files or the viewer."""
    tmp = tmp_path_factory.mktemp("secrets")
    values = [value for _, value in named] + [api_key]
    output = tmp / "out.jsonl"
    args = ["+agent_name=simple_weather_simple_agent", f"+output_jsonl_fpath={output}", "+max_attempts=1",
            "+input_jsonl_fpath=resources_servers/simple_weather/data/example.jsonl"]  # fmt: skip
    shown: list[str] = []
    with StandinServer(StandinScript(tool_call_mode=True)) as standin:
        body_settings = ", ".join(f"{name}: {quote_value(value)}" for name, value in named)
        overrides = [
            f"++policy_base_url={standin.base_url}",
            f"++policy_api_key={value_text(api_key)}",
            f"++policy_model_name={standin.script.model}",
            f"++{MODEL_SECTION}.extra_body={{{body_settings}}}",
            f"++{MODEL_SECTION}.max_retries=0",
            *(f"++{name}={value_text(value)}" for name, value in named),
        ]
        # Config errors: a secret set twice, a flag's value beside an override that changes a missing key.
        first, second = named[0], named[1]
        shown += run_in_process(ng_run_main, [*overrides, f"+{first[0]}={value_text(second[1])}"])
        shown += run_in_process(gym_main, ["env", "start", f"--model-api-key={api_key}", f"{second[0]}={first[1]!r}"])
        shown += run_in_process(ng_run_main, [f"++{first[0]}={first[1]}", f"++x={{{second[0]}: {second[1]}"])
        log = tmp / "ng_run.log"
        with GymProcess(ROOT, SEED_CONFIG_PATHS, overrides, log_path=log) as gym:
            done = gym.collect(*args, "+limit=2")
            sent = standin.log.last()
            # vLLM (or a proxy before it) quoting every secret back in its refusal, then failing outright.
            echo = "refused: " + "; ".join(f"{name}={value}" for name, value in named) + f"; Bearer {api_key}"
            standin.script.down = HttpFault(400, {"error": {"message": echo, "type": "BadRequestError"}})
            refused = gym.collect(*args, "+limit=3", check=False)
            model_answer = post(gym.url_of("policy_model") + "/v1/chat/completions", CHAT)
            standin.script.down = HttpFault(500, {"error": {"message": echo, "type": "InternalServerError"}})
            failed = gym.collect(*args, "+limit=4", check=False)
            head = f"http://127.0.0.1:{gym.head_port}"
            shown += [done.stdout, done.stderr, refused.stdout, refused.stderr, failed.stdout, failed.stderr]
            shown += [model_answer, get(head + "/config"), get(head + "/servers")]
        shown.append(log.read_text())
    # What reached vLLM carried every secret (so the run really used them) ...
    assert sent.headers.get("authorization") == f"Bearer {api_key}"
    assert all(sent.json()[name] == value for name, value in named)
    assert (refused.returncode, failed.returncode) == (3, 3)
    shown += [path.read_text() for path in output.parent.iterdir() if path.is_file()]
    shown += asyncio.run(viewer_pages(output, rows=2, failures=2))
    # ... and none of them came back out.
    for text in shown:
        for value in values:
            assert not any(form in text for form in appearances(value)), f"{value!r} shown in:\n{text[:3000]}"


CHAT = {"model": "m", "messages": [{"role": "user", "content": "weather in Paris?"}]}


def post(url: str, body: Mapping[str, object]) -> str:
    request = urllib.request.Request(url, data=orjson.dumps(body), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return str(answer.read().decode())
    except urllib.error.HTTPError as refused:
        return str(refused.read().decode())


def run_in_process(main: Callable[[list[str]], int], argv: list[str]) -> list[str]:
    """A command that must stop on a configuration error; what it printed."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    assert code == 2, (code, out.getvalue(), err.getvalue())
    assert "error" in err.getvalue()
    return [out.getvalue(), err.getvalue()]


async def viewer_pages(output: Path, rows: int, failures: int) -> list[str]:
    """Every view of ng_viewer over the rollout files."""
    pages: list[str] = []
    async with serve_in_background(viewer_app(Viewer(ViewerConfig(output)))) as url:
        async with aiohttp.ClientSession() as http:

            async def text(path: str) -> str:
                async with http.get(url + path) as answer:
                    return await answer.text()

            async def indexed() -> None:
                while True:
                    status = orjson.loads(await text("/api/status"))
                    if (status["rows"], status["failures"]) == (rows, failures):
                        return
                    await asyncio.sleep(0.05)

            await asyncio.wait_for(indexed(), 60)  # a hang guard, not a timing assertion
            paths = ["/api/status", "/api/summary", "/api/fields", "/api/rows", "/api/groups", "/api/groups/0"]
            paths += [f"/api/rows/r{i}" for i in range(rows)] + [f"/api/rows/f{j}" for j in range(failures)]
            pages += [await text(path) for path in paths]
    return pages


BASE64_KEY = "sk-proj-QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
RAW_KEY = "hf_abcdef{x}"


def test_the_reproductions_gym_flags_raw_overrides_and_foreign_hosts(tmp_path: Path) -> None:
    """`gym env start --model-api-key 'sk-proj-...=='` and a raw `++...X-Api-Key=hf_abcdef{x}` start (both keys
    reach vLLM as typed, neither is printed), and no server of the running gym answers a foreign `Host`."""
    log = tmp_path / "gym.log"
    with StandinServer(StandinScript(tool_call_mode=True)) as standin:
        port = free_port()
        command = [console_script("gym"), "env", "start", "--resources-server", "simple_weather",
                   "--model-type", "vllm_model", "--model-url", standin.base_url, "--model", standin.script.model,
                   "--model-api-key", BASE64_KEY, f"++{MODEL_SECTION}.default_headers.X-Api-Key={RAW_KEY}",
                   f"+head_server.port={port}"]  # fmt: skip
        with log.open("wb") as out:
            gym = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        try:
            head = f"http://127.0.0.1:{port}"
            wait_ready(gym, head, log)
            servers = orjson.loads(get(head + "/servers"))
            model = next(server["url"] for server in servers if server["name"] == "policy_model")
            post(model + "/v1/chat/completions", CHAT)
            sent = standin.log.last()
            urls = [head, *(server["url"] for server in servers)]
            refused = [call(url, "evil.example:" + url.rsplit(":", 1)[1]) for url in urls]
            answered = [call(url, "localhost:" + url.rsplit(":", 1)[1]) for url in urls]
            agent = next(server["url"] for server in servers if server["server_type"] == "responses_api_agents")
            foreign_post = call(agent, None, path="/run", origin="http://evil.example", body=b"{}")
            config = get(head + "/config")
        finally:
            gym.send_signal(signal.SIGINT)
            gym.wait(timeout=60)
    assert sent.headers.get("authorization") == f"Bearer {BASE64_KEY}" and sent.headers.get("x-api-key") == RAW_KEY
    assert all(status == 403 and b"is not a name of this server" in body for status, body in refused), refused
    assert all(status == 200 for status, _ in answered), answered
    assert foreign_post[0] == 403 and b"may not use this server" in foreign_post[1]
    for text in (log.read_text(), config, *(body.decode() for _, body in refused)):
        assert BASE64_KEY not in text and RAW_KEY not in text, text[-3000:]


def wait_ready(process: subprocess.Popen[bytes], head: str, log: Path) -> None:
    """Until the gym's head server says it is ready (or the gym stopped)."""
    while process.poll() is None:
        try:
            if orjson.loads(get(head + "/health")).get("ready"):
                return
        except (urllib.error.URLError, ConnectionError):
            pass
        time.sleep(0.2)  # polling for state; nothing is asserted on time
    raise AssertionError(f"gym env start exited {process.returncode}:\n{log.read_text()[-3000:]}")


def call(
    url: str, host: str | None, *, path: str = "/health", origin: str | None = None, body: bytes | None = None
) -> tuple[int, bytes]:
    """A raw request, `Host` and `Origin` as a foreign page's browser would send them."""
    parts = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=30)
    headers = {"Host": host or parts.netloc, **({"Origin": origin} if origin else {})}
    try:
        connection.request("POST" if body is not None else "GET", path, body=body, headers=headers)
        answer = connection.getresponse()
        return answer.status, answer.read()
    finally:
        connection.close()
