"""Loopback servers refuse foreign pages (issue 23): a request whose `Host` (DNS rebinding) or `Origin` (a page of
another site) does not name the server gets a 403 and no data, on every ngym server: head, model, agent,
resources and the viewer; a viewer reachable off this machine asks for the token it printed."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from starlette.applications import Starlette

from ngym.config.errors import ConfigError
from ngym.http.app import serve_in_background
from ngym.http.hosts import allowed_hosts, host_name, hosts_setting, origin_name
from ngym.rollouts.output import JsonlAppender
from ngym.servers.agent import Agent
from ngym.servers.base import ServerConfig, ServerContext
from ngym.servers.head import HeadState, head_app
from ngym.servers.model import ModelServer
from ngym.servers.resources import ResourcesServer
from ngym.viewer.server import viewer_app
from ngym.viewer.state import Viewer, ViewerConfig
from testkit.gym_process import console_script
from testkit.viewer_rows import synthetic_rows

KEY = "sk-live-5e6f7a8b9c"
FOREIGN_HOSTS = [
    "evil.example", "evil.example:{port}", "127.0.0.1.evil.example", "localhost.evil.example:{port}",
    "evil.localhost", "0.0.0.0:{port}", "10.1.2.3", "[::2]:{port}", "", "127.0.0.1@evil.example",
]  # fmt: skip
OWN_HOSTS = [
    "127.0.0.1:{port}", "127.0.0.1", "localhost:{port}", "LOCALHOST", "localhost.:{port}", "[::1]:{port}",
    "[0:0:0:0:0:0:0:1]",
]  # fmt: skip
HANG_GUARD_S = 30


async def call(url: str, path: str, *, method: str = "GET", **headers: str) -> tuple[int, bytes]:
    async with aiohttp.ClientSession() as http, http.request(method, url + path, headers=headers) as answer:
        return answer.status, await answer.read()


async def until_indexed(url: str, rows: int, **headers: str) -> None:
    async def wait() -> None:
        while orjson.loads((await call(url, "/api/status", **headers))[1]).get("rows") != rows:
            await asyncio.sleep(0.05)

    await asyncio.wait_for(wait(), HANG_GUARD_S)  # a hang guard, not a timing assertion


def write_rows(path: Path, count: int) -> None:
    writer = JsonlAppender(path)
    for row in synthetic_rows(count):
        writer.write(row)
    writer.close()


def port_of(url: str) -> str:
    return url.rsplit(":", 1)[1]


def head() -> Starlette:
    return head_app({"policy_api_key": KEY, "head_server": {"host": "127.0.0.1", "port": 1}}, HeadState())


def server_app(kind: type[Any], host: str | None = None, extra: list[str] | None = None) -> Starlette:
    settings = {"allowed_hosts": extra} if extra is not None else {}
    context = ServerContext("the_server", {**settings, "the_server": {"x": {"y": {"api_key": KEY}}}})
    return kind(ServerConfig(host=host), context).app(manage_lifecycle=False)


@pytest.fixture(params=["head", "model", "agent", "resources", "viewer"])
async def ngym_server(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[str, str]]:
    """(its URL, a path that answers data) for each kind of ngym server."""
    if request.param == "viewer":
        write_rows(tmp_path / "out.jsonl", 2)
        app, path = viewer_app(Viewer(ViewerConfig(tmp_path / "out.jsonl"))), "/api/rows/r0"
    elif request.param == "head":
        app, path = head(), "/config"
    else:
        kind = {"model": ModelServer, "agent": Agent, "resources": ResourcesServer}[request.param]
        app, path = server_app(kind), "/health"
    async with serve_in_background(app) as url:
        if request.param == "viewer":
            await until_indexed(url, 2)
        yield url, path


async def test_a_foreign_host_gets_403_and_no_data(ngym_server: tuple[str, str]) -> None:
    url, path = ngym_server
    for host in FOREIGN_HOSTS:
        status, body = await call(url, path, Host=host.format(port=port_of(url)))
        assert status == 403, (host, body)
        error = orjson.loads(body)["error"]
        assert error["code"] == "host_not_allowed" and "is not a name of this server" in error["message"]
        assert KEY not in body.decode() and "***" not in body.decode() and "Paris" not in body.decode()


async def test_its_own_names_are_answered(ngym_server: tuple[str, str]) -> None:
    url, path = ngym_server
    for host in OWN_HOSTS:
        status, body = await call(url, path, Host=host.format(port=port_of(url)))
        assert status == 200, (host, body)


async def test_a_page_of_another_site_cannot_post(ngym_server: tuple[str, str]) -> None:
    url, path = ngym_server
    for origin in ("http://evil.example", "https://evil.example:443", "null", "http://127.0.0.1.evil.example"):
        status, body = await call(url, "/run", method="POST", Origin=origin)
        assert status == 403 and b"may not use this server" in body, (origin, body)
    status, _ = await call(url, path, Origin=f"http://localhost:{port_of(url)}")
    assert status == 200  # the page's own requests


async def test_the_configured_host_and_allowed_hosts_are_names_too() -> None:
    app = server_app(ModelServer, host="10.9.8.7", extra=["Gym.Example.COM", "10.0.0.5"])
    # Listening on 10.9.8.7 needs that address here: the check is the app's, so any listening address will do.
    async with serve_in_background(app) as url:
        for host in ("10.9.8.7:80", "gym.example.com", "gym.example.com.:1", "10.0.0.5", "127.0.0.1"):
            assert (await call(url, "/health", Host=host))[0] == 200, host
        for host in ("example.com", "other.gym.example.com", "10.0.0.6"):
            assert (await call(url, "/health", Host=host))[0] == 403, host


def test_host_names_are_compared_as_names() -> None:
    assert host_name("LocalHost.:8080") == "localhost"
    assert host_name("[::1]:1") == host_name("::1") == host_name("[0:0::1]") == "::1"
    assert host_name("127.0.0.1") == "127.0.0.1"
    assert origin_name("http://user@LOCALHOST:3000/x") == "localhost" and origin_name("null") == ""
    assert allowed_hosts() == {"127.0.0.1", "localhost", "::1"}
    assert "gym.internal" in allowed_hosts("127.0.0.1", ["gym.internal"])
    wildcard = allowed_hosts("0.0.0.0")
    assert "0.0.0.0" in wildcard and wildcard > allowed_hosts()
    assert hosts_setting("a.example, b.example") == ["a.example", "b.example"]
    for bad in ({"a": 1}, ["http://a.example/"], [3]):
        with pytest.raises(ConfigError, match="allowed_hosts"):
            hosts_setting(bad)


async def test_a_viewer_off_loopback_answers_only_with_its_token(tmp_path: Path) -> None:
    write_rows(tmp_path / "out.jsonl", 2)
    token = "t0k3n-for-this-viewer"
    app = viewer_app(Viewer(ViewerConfig(tmp_path / "out.jsonl")), token=token)
    async with serve_in_background(app) as url:
        await until_indexed(url, 2, Authorization=f"token {token}")
        for path in ("/", "/api/rows/r0", "/static/app.js", f"/api/rows/r0?token={token}x"):
            status, body = await call(url, path)
            assert status == 401 and b"token" in body and b"Paris" not in body, (path, body)
        assert (await call(url, "/api/rows/r0", Authorization=f"token {token}"))[0] == 200
        assert (await call(url, "/api/rows/r0", Authorization=f"Bearer {token}"))[0] == 200
        assert (await call(url, f"/api/rows/r0/value?path=reward&token={token}"))[0] == 200  # the token is not a param
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
            # The printed address: the page sets a cookie and leaves the address without the token.
            async with browser.get(f"{url}/?token={token}&view=rollouts") as page:
                assert page.status == 200 and "/static/app.js" in await page.text()
                assert page.url.query_string == "view=rollouts"
            async with browser.get(f"{url}/api/rows/r0") as row:
                assert row.status == 200
            # DNS rebinding: the cookie belongs to this address only, and the host check stands before it.
            async with browser.get(f"{url}/api/rows/r0", headers={"Host": "evil.example"}) as row:
                assert row.status == 403


def test_ng_viewer_off_loopback_prints_its_token(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    write_rows(path, 2)
    process = subprocess.Popen(
        [console_script("ng_viewer"), f"+jsonl_fpath={path}", "+host=0.0.0.0", "+port=0"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert "at http://0.0.0.0:" in line and "/?token=" in line, line
        address = line.split(" at ")[1].split(" ")[0]
        port = address.split(":")[2].split("/")[0]
        url = f"http://127.0.0.1:{port}"

        async def check() -> None:
            assert (await call(url, "/api/rows/r0"))[0] == 401
            token = address.split("token=")[1]
            await until_indexed(url, 2, Authorization=f"token {token}")
            assert (await call(url, "/api/rows/r0", Authorization=f"token {token}"))[0] == 200
            status, _ = await call(url, "/api/rows/r0", Host="evil.example", Authorization=f"token {token}")
            assert status == 403

        asyncio.run(asyncio.wait_for(check(), HANG_GUARD_S))  # a hang guard, not a timing assertion
    finally:
        process.send_signal(signal.SIGINT)
        code = process.wait(HANG_GUARD_S)
    assert code == 0, process.stderr.read() if process.stderr else ""
