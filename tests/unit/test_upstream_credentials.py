"""A user:password written into a base_url: sent as Basic auth, never in a URL aiohttp sees or a message shows.

It used to reach aiohttp inside the URL, and together with api_key's Authorization header the model server died at
start-up with `ValueError: Cannot combine AUTHORIZATION header with ... credentials encoded in URL`."""

from __future__ import annotations

import base64

import pytest

from ngym.config.errors import ConfigError
from ngym.http.client import HttpClient
from ngym.upstream.client import UpstreamClient
from ngym.upstream.pool import split_credentials


def test_credentials_leave_the_url_and_become_a_basic_authorization_header() -> None:
    url, authorization = split_credentials("http://ngym:p%40ss-word@127.0.0.1:8000/v1")
    assert url == "http://127.0.0.1:8000/v1"
    assert authorization == "Basic " + base64.b64encode(b"ngym:p@ss-word").decode()
    assert split_credentials("http://127.0.0.1:8000/v1") == ("http://127.0.0.1:8000/v1", None)


def test_each_server_gets_its_own_credentials_and_messages_show_none() -> None:
    client = UpstreamClient(
        ["http://a:key-one-111@127.0.0.1:1/v1", "http://127.0.0.1:2/v1"], HttpClient(), {"X-Api-Key": "k"}
    )
    first = client.upstreams[0]
    assert first.url("/v1/chat/completions") == "http://127.0.0.1:1/v1/chat/completions"
    assert "key-one-111" not in first.shown
    assert client.headers_of[0]["Authorization"].startswith("Basic ")
    assert "Authorization" not in client.headers_of[1] and client.headers_of[1]["X-Api-Key"] == "k"


def test_a_keyed_url_and_an_api_key_at_once_is_a_config_error_naming_the_url() -> None:
    with pytest.raises(ConfigError, match=r"base_url http://127.0.0.1:1/v1 carries a user:password") as caught:
        UpstreamClient(["http://a:key-one-111@127.0.0.1:1/v1"], HttpClient(), {"Authorization": "Bearer sk-x"})
    assert "key-one-111" not in str(caught.value)
