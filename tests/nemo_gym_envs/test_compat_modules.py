"""ngym's `nemo_gym` modules added for the environments that did not start: every name NeMo Gym's environments
import from them exists under the name `nemo_gym` (checked in a process with the compatibility folder on
`sys.path`, as serve.py sets it up), and they behave as the environments rely on: NeMoGymAsyncOpenAI's requests and
retries, prompt files, observation records, the sandbox API with its `local` provider (container providers refuse
at use, naming what they need), Ray kept on loopback, and the packages `implied` adds only where the code needs
them."""

from __future__ import annotations

import ast
import asyncio
import ipaddress
import json
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from omegaconf import OmegaConf
from pydantic import ValidationError

from ngym.nemo_gym_envs.compat.nemo_gym import _ray_local
from ngym.nemo_gym_envs.compat.nemo_gym._openai_client import NeMoGymAsyncOpenAI
from ngym.nemo_gym_envs.compat.nemo_gym.prompt import (
    PromptConfig,
    apply_prompt_to_row,
    fill_prompt,
    load_prompt_config,
    validate_prompt_compatibility,
)
from ngym.nemo_gym_envs.compat.nemo_gym.rollout_observability import AgentObservationBundle, SandboxObservation
from ngym.nemo_gym_envs.compat.nemo_gym.sandbox import (
    AsyncSandbox,
    AsyncSandboxCompose,
    Sandbox,
    SandboxCreateError,
    SandboxSpec,
    SandboxStatus,
    create_provider,
    resolve_provider_config,
    resolve_provider_metadata,
    rewrite_image,
)
from ngym.nemo_gym_envs.compat.nemo_gym.sandbox.utils import cpu_cap_env
from ngym.nemo_gym_envs.implied import implied_requirements
from ngym.nemo_gym_envs.requirements import parse_requirements
from ngym.nemo_gym_envs.serve import COMPAT_DIR
from testkit.waiting import pid_alive, wait_until

NEW_MODULES = ("nemo_gym.openai_utils", "nemo_gym.rollout_observability", "nemo_gym.prompt", "nemo_gym.sandbox")


def run_under_compat(code: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """`code` in a fresh interpreter whose `nemo_gym` is ngym's, found as an environment's process finds it."""
    prelude = f"import sys\nsys.path.insert(0, {str(COMPAT_DIR)!r})\n"
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True, text=True,
                          cwd=cwd, timeout=120)  # fmt: skip


def names_environments_import(tree: Path) -> dict[str, set[str]]:
    """module -> names, for every `from nemo_gym.<new module>... import names` in the servers' code (tests aside)."""
    wanted: dict[str, set[str]] = {}
    for source in (tree / "resources_servers").rglob("*.py"):
        if "tests" in source.parts:
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # invalid escapes in some servers' strings
                parsed = ast.parse(source.read_text(encoding="utf-8", errors="replace"))
        except SyntaxError:
            continue
        for node in ast.walk(parsed):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(NEW_MODULES):
                wanted.setdefault(node.module, set()).update(alias.name for alias in node.names)
    return wanted


# ---- import level: what the environments import, under the name `nemo_gym` ----


def test_every_name_the_environments_import_from_the_new_modules_exists(tree: Path) -> None:
    wanted = names_environments_import(tree)
    assert {"nemo_gym.sandbox", "nemo_gym.sandbox.config", "nemo_gym.prompt"} <= set(wanted)
    assert "NeMoGymAsyncOpenAI" in wanted["nemo_gym.openai_utils"]
    done = run_under_compat(f"""
        import importlib, json
        missing = []
        for module, names in json.loads({json.dumps(json.dumps({k: sorted(v) for k, v in wanted.items()}))}).items():
            loaded = importlib.import_module(module)
            missing += [f"{{module}}.{{name}}" for name in names if not hasattr(loaded, name)
                        and importlib.util.find_spec(f"{{module}}.{{name}}") is None]
        print(json.dumps({{"missing": missing, "file": importlib.import_module("nemo_gym").__file__}}))
    """)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["missing"] == []
    assert answer["file"].startswith(str(COMPAT_DIR))


def test_the_local_sandbox_runs_under_the_name_nemo_gym(tmp_path: Path) -> None:
    done = run_under_compat("""
        import asyncio
        from nemo_gym.sandbox import AsyncSandbox, SandboxSpec
        from nemo_gym.sandbox.config import resolve_provider_config

        async def main():
            config = resolve_provider_config("sandbox", {"sandbox": {"local": {"workspace_root": "boxes"}}})
            async with AsyncSandbox(config, SandboxSpec(files={"a.txt": "hello"})) as box:
                await box.start()
                print((await box.exec("cat a.txt")).stdout)
        asyncio.run(main())
    """, cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "hello"
    assert list((tmp_path / "boxes").iterdir()) == []  # the workspace the provider made is gone


# ---- NeMoGymAsyncOpenAI ----


def serve_openai(answers: list[tuple[int, dict[str, Any]]], seen: list[dict[str, Any]]) -> web.Application:
    app = web.Application()

    async def answer(request: web.Request) -> web.Response:
        body = await request.json() if request.can_read_body else None
        seen.append({"path": request.path, "auth": request.headers.get("Authorization"), "body": body,
                     "extra": request.headers.get("X-Extra")})  # fmt: skip
        status, payload = answers.pop(0) if len(answers) > 1 else answers[0]
        return web.json_response(payload, status=status)

    app.router.add_route("*", "/{tail:.*}", answer)
    return app


async def with_server(app: web.Application, use: Any) -> Any:
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        return await use(f"http://127.0.0.1:{port}/v1")
    finally:
        await runner.cleanup()


def test_the_client_posts_with_its_key_and_headers_and_retries_a_busy_endpoint() -> None:
    seen: list[dict[str, Any]] = []
    answers = [(503, {"error": "busy"}), (200, {"choices": [{"message": {"content": "YES"}}]})]

    async def use(url: str) -> Any:
        client = NeMoGymAsyncOpenAI(base_url=url, api_key="k", default_headers={"X-Extra": "1"})
        return await client.create_chat_completion(model="judge", messages=[{"role": "user", "content": "q"}])

    result = asyncio.run(with_server(serve_openai(answers, seen), use))
    assert result["choices"][0]["message"]["content"] == "YES"
    assert [s["path"] for s in seen] == ["/v1/chat/completions"] * 2
    assert all(s["auth"] == "Bearer k" and s["extra"] == "1" for s in seen)
    assert seen[0]["body"] == {"model": "judge", "messages": [{"role": "user", "content": "q"}]}


def test_the_client_gives_up_after_its_attempts_with_the_body_kept() -> None:
    import aiohttp

    seen: list[dict[str, Any]] = []

    async def use(url: str) -> Any:
        client = NeMoGymAsyncOpenAI(base_url=url, api_key="k", max_http_attempts=2)
        with pytest.raises(aiohttp.ClientResponseError) as failed:
            await client.create_response(model="m", input="hi")
        return failed.value

    error = asyncio.run(with_server(serve_openai([(500, {"error": "down"})], seen), use))
    assert error.status == 500 and b"down" in error.response_content  # type: ignore[attr-defined]
    assert [s["path"] for s in seen] == ["/v1/responses", "/v1/responses"]


def test_a_client_error_is_not_retried() -> None:
    import aiohttp

    seen: list[dict[str, Any]] = []

    async def use(url: str) -> None:
        with pytest.raises(aiohttp.ClientResponseError):
            await NeMoGymAsyncOpenAI(base_url=url, api_key="k").create_models()

    asyncio.run(with_server(serve_openai([(400, {"error": "bad"})], seen), use))
    assert [s["path"] for s in seen] == ["/v1/models"]


# ---- prompt ----


def test_a_prompt_file_is_found_under_the_working_directory_and_filled(tmp_path: Path, monkeypatch: Any) -> None:
    (tmp_path / "prompts").mkdir()
    (tmp_path / "prompts" / "judge.yaml").write_text("system: 'Grade {{strictly}}.'\nuser: 'Q: {question}'\n")
    monkeypatch.chdir(tmp_path)
    config = load_prompt_config("prompts/judge.yaml")
    assert fill_prompt(config, {"question": "2+2?"}) == [
        {"role": "system", "content": "Grade {strictly}."},
        {"role": "user", "content": "Q: 2+2?"},
    ]
    with pytest.raises(KeyError, match="question"):
        fill_prompt(config, {"other": 1})


def test_a_prompt_is_applied_to_a_copy_of_the_row_and_clashes_with_an_input() -> None:
    row = {"question": "x", "responses_create_params": {"tools": [1]}}
    applied = apply_prompt_to_row(row, PromptConfig(user="{question}"))
    assert applied["responses_create_params"] == {"tools": [1], "input": [{"role": "user", "content": "x"}]}
    assert row == {"question": "x", "responses_create_params": {"tools": [1]}}
    validate_prompt_compatibility([row], PromptConfig(user="u"))
    with pytest.raises(ValueError, match=r"\[0\]"):
        validate_prompt_compatibility([applied], PromptConfig(user="u"))


# ---- rollout_observability ----


def test_observation_records_refuse_unknown_fields_and_bad_values() -> None:
    seen = SandboxObservation(role="verifier", provider="local", outcome="completed", exit_code=0, wall_time_s=1.5)
    assert seen.kind == "sandbox" and seen.model_dump()["outcome"] == "completed"
    with pytest.raises(ValidationError):
        SandboxObservation(role="verifier", surprise=1)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        SandboxObservation(role="verifier", wall_time_s=-1)


def test_an_observation_bundle_tells_records_apart_and_refuses_cycles() -> None:
    bundle = AgentObservationBundle.model_validate({"source": "a", "records": [
        {"kind": "agent_invocation", "invocation_id": "root"},
        {"kind": "agent_invocation", "invocation_id": "sub", "parent_invocation_id": "root"},
        {"kind": "tool_call", "invocation_id": "sub", "tool_call_id": "t", "started_at": 1, "completed_at": 2},
        {"kind": "sandbox", "role": "agent"},
    ]})  # fmt: skip
    assert [type(r).__name__ for r in bundle.records] == [
        "AgentInvocation", "AgentInvocation", "ToolCallObservation", "SandboxObservation"
    ]  # fmt: skip
    cycle = [{"kind": "agent_invocation", "invocation_id": a, "parent_invocation_id": b} for a, b in ("xy", "yx")]
    with pytest.raises(ValidationError, match="cycle"):
        AgentObservationBundle.model_validate({"source": "a", "records": cycle})


# ---- sandbox ----


def local(tmp_path: Path) -> dict[str, Any]:
    return {"local": {"workspace_root": str(tmp_path / "boxes")}}


def test_a_local_sandbox_runs_commands_in_its_workspace_with_its_environment(tmp_path: Path) -> None:
    async def main() -> None:
        spec = SandboxSpec(env={"GREETING": "hi"}, files={"sub/in.txt": "data"})
        box = await AsyncSandbox(local(tmp_path), spec).start()
        done = await box.exec('cat sub/in.txt; echo " $GREETING $EXTRA"; exit 3', env={"EXTRA": "there"})
        assert (done.stdout, done.return_code, done.error_type) == ("data hi there\n", 3, None)
        assert await box.status() == SandboxStatus.RUNNING
        (tmp_path / "up.txt").write_text("up")
        await box.upload(tmp_path / "up.txt", "copied/up.txt")
        await box.download("copied/up.txt", tmp_path / "back" / "up.txt")
        assert (tmp_path / "back" / "up.txt").read_text() == "up"
        await box.stop()
        assert await box.status() == SandboxStatus.STOPPED

    asyncio.run(main())
    assert list((tmp_path / "boxes").iterdir()) == []


def test_a_workdir_the_caller_names_is_kept(tmp_path: Path) -> None:
    mine = tmp_path / "mine"

    async def main() -> None:
        async with AsyncSandbox(local(tmp_path), SandboxSpec(workdir=str(mine))) as box:
            await box.start()
            await box.exec("touch made")

    asyncio.run(main())
    assert (mine / "made").is_file()


def test_a_command_past_its_timeout_is_a_result_and_its_process_group_is_killed(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"

    async def main() -> Any:
        async with AsyncSandbox(local(tmp_path), SandboxSpec()) as box:
            await box.start()
            return await box.exec(f"sleep 600 & echo $! > {pid_file}; wait", timeout_s=1)

    done = asyncio.run(main())
    assert (done.return_code, done.error_type, done.stdout) == (125, "timeout", None)
    child = int(pid_file.read_text())
    wait_until(lambda: not pid_alive(child) or _zombie(child), "the timed-out command's child to be killed")


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


def test_the_synchronous_sandbox_works_outside_an_event_loop(tmp_path: Path) -> None:
    with Sandbox(local(tmp_path), SandboxSpec()) as box:
        box.start()
        assert box.exec("echo sync").stdout == "sync\n"
    assert box.status() == SandboxStatus.STOPPED


def test_a_container_provider_is_made_and_refuses_at_use_naming_what_it_needs(tmp_path: Path) -> None:
    provider = create_provider({"docker": {"host": "unix:///var/run/docker.sock"}})

    async def main() -> None:
        with pytest.raises(SandboxCreateError, match=r"'docker'.*Docker daemon"):
            await AsyncSandbox(provider, SandboxSpec(image="python:3.11")).start()
        with pytest.raises(SandboxCreateError, match="docker-compose"):
            await AsyncSandboxCompose({"docker": {}}, tmp_path / "docker-compose.yaml").start()

    asyncio.run(main())
    with pytest.raises(ValueError, match=r"Available providers: .*apptainer.*local"):
        create_provider({"kubernetes": {}})


def test_provider_blocks_resolve_by_name_or_inline_with_their_metadata() -> None:
    named = OmegaConf.create({"sandbox": {"local": {"shell": "/bin/sh"}, "default_metadata": {"sandbox-api": "x"}}})
    assert resolve_provider_config("sandbox", named) == {"local": {"shell": "/bin/sh"}}
    assert resolve_provider_metadata("sandbox", named) == {"sandbox-api": "x"}
    assert resolve_provider_config({"docker": {}}) == {"docker": {}}
    with pytest.raises(ValueError, match="'sandbox' is not defined in the merged config"):
        resolve_provider_config("sandbox", {})
    with pytest.raises(ValueError, match="exactly one provider key"):
        resolve_provider_config({"local": {}, "docker": {}})


def test_specs_are_checked_and_the_helpers_give_nemo_gyms_values() -> None:
    assert SandboxSpec(ports=["8080", 22], resources={"cpu": 2}).ports == (8080, 22)
    with pytest.raises(ValueError, match="Duplicate"):
        SandboxSpec(ports=[1, 1])
    with pytest.raises(ValueError, match="Unknown sandbox resource keys: cores"):
        SandboxSpec(resources={"cores": 2})
    assert cpu_cap_env(2.7)["OMP_NUM_THREADS"] == "2" and cpu_cap_env(None) == {}
    assert rewrite_image("docker.io/x:1", [{"from": "docker.io/", "to": "mirror/"}]) == "mirror/x:1"


# ---- Ray on loopback, and the packages implied.py adds ----


def test_ray_is_told_to_stay_on_loopback_and_used_only_where_it_can_be() -> None:
    environ: dict[str, str] = {"RAY_ADDRESS": "10.0.0.1:6379"}
    _ray_local.keep_ray_on_loopback(environ)
    assert environ == {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_ADDRESS": "local", "RAY_USAGE_STATS_ENABLED": "0"}
    assert _ray_local.LOCAL_INIT["_node_ip_address"] == "127.0.0.1"
    assert _ray_local.LOCAL_INIT["include_dashboard"] is False

    class NoRay:
        ray_enabled = False

    assert not _ray_local.server_uses_ray(NoRay)
    hook = _ray_local.worker_runtime_env(Path("/t"), Path("/t/resources_servers/e"))["worker_process_setup_hook"]
    module, _, function = hook.rpartition(".")
    assert getattr(__import__(module, fromlist=[function]), function) is _ray_local.enter_worker


def test_a_ray_worker_enters_the_environment_before_its_tasks(tmp_path: Path) -> None:
    folder = tmp_path / "resources_servers" / "env"
    (tmp_path / "responses_api_agents" / "helper").mkdir(parents=True)
    (tmp_path / "responses_api_agents" / "helper" / "__init__.py").write_text("WHERE = 'tree'\n")
    folder.mkdir(parents=True)
    (folder / "task.py").write_text("VALUE = 42\n")
    env = {**os.environ, "NGYM_NEMO_GYM_TREE": str(tmp_path), "NGYM_NEMO_GYM_FOLDER": str(folder)}
    code = (
        "from ngym.nemo_gym_envs.compat.nemo_gym._ray_local import enter_worker\nenter_worker()\n"
        "import os, task, nemo_gym, responses_api_agents.helper as h, resources_servers.env.task as t\n"
        "print(os.getcwd(), task.VALUE, h.WHERE, t.VALUE, nemo_gym.__file__)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    cwd, value, where, again, compat = done.stdout.split()
    assert (cwd, value, where, again) == (str(folder), "42", "tree", "42")
    assert compat.startswith(str(COMPAT_DIR))


def environment(tmp_path: Path, name: str, app: str, requirements: str = "-e nemo-gym[dev] @ ../../\n") -> Path:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "app.py").write_text(app)
    (folder / "requirements.txt").write_text(requirements)
    return folder


def test_ray_and_the_numeric_stack_are_added_only_where_the_code_needs_them(tmp_path: Path) -> None:
    def implied(folder: Path) -> list[str]:
        return implied_requirements(folder, parse_requirements(folder / "requirements.txt"))

    plain = environment(tmp_path, "plain", "import json\nimport tqdm\n")
    uses_ray = environment(tmp_path, "uses_ray", "from runner import run\n")
    (uses_ray / "runner.py").write_text("import ray\n\n@ray.remote\ndef run(): ...\n")
    runs_python = environment(tmp_path, "runs_python", "import sys, subprocess\nsubprocess.run([sys.executable])\n")
    names_numpy = environment(tmp_path, "names_numpy", "import sys\nprint(sys.executable)\n",
                              "-e nemo-gym[dev] @ ../../\nnumpy==2.2.6\n")  # fmt: skip
    assert implied(plain) == ["tqdm"]  # as before: its venv (named by this list) is not rebuilt
    assert implied(uses_ray) == ["ray"]
    assert implied(runs_python) == ["numpy", "scipy"]
    assert implied(names_numpy) == ["scipy"]


# ---- a Ray environment served: nothing it starts listens off loopback ----


def listening_sockets(pids: set[int]) -> list[str]:
    """`address port` of every listening TCP socket the processes hold (from /proc, as `ss -ltnp` reads it)."""
    inodes: dict[str, str] = {}
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A":  # LISTEN
                address, port = fields[1].split(":")
                inodes[fields[9]] = f"{_address(address, width)} {int(port, 16)}"
    found = []
    for pid in pids:
        try:
            entries = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue  # the process ended
        for entry in entries:
            try:
                link = os.readlink(entry)
            except OSError:
                continue  # the descriptor closed meanwhile
            if link.startswith("socket:[") and link[8:-1] in inodes:
                found.append(inodes[link[8:-1]])
    return found


def _address(hexadecimal: str, width: int) -> str:
    raw = bytes.fromhex(hexadecimal)  # 32-bit words in host (little-endian) order
    if width == 8:
        return str(ipaddress.IPv4Address(raw[::-1]))
    address = ipaddress.IPv6Address(b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4)))
    return str(address.ipv4_mapped or address)


def session_pids(leader: int) -> set[int]:
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getsid(int(entry.name)) == leader:
                    found.add(int(entry.name))
            except OSError:
                continue
    return found


@pytest.mark.nemo_gym_envs
def test_code_gens_ray_listens_on_loopback_only(tree: Path) -> None:
    from ngym.nemo_gym_envs.golden import golden_cases
    from ngym.nemo_gym_envs.replay import replay_case, rewards_match, running_environment

    case = golden_cases(tree / "resources_servers" / "code_gen" / "data")[0]
    with running_environment(tree, "code_gen", ready_timeout_s=180) as env:
        assert rewards_match(case.reward, replay_case(env.url, case).get("reward"))  # a Ray task ran
        pids = session_pids(env.process.pid)
        sockets = listening_sockets(pids)
    assert len(pids) > 3 and len(sockets) > 3  # the server, the GCS, the raylet, workers
    assert [s for s in sockets if not ipaddress.ip_address(s.split()[0]).is_loopback] == []
