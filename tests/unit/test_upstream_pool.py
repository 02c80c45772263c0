from ngym.upstream.pool import Session, UpstreamPool, parse_session_cookie


def test_new_sessions_go_to_the_least_loaded_server_and_stay() -> None:
    pool = UpstreamPool(["http://a/v1", "http://b/v1"])
    pool.upstreams[0].in_flight = 3
    chosen = pool.choose(Session("s1", None))
    assert chosen.index == 1
    pool.upstreams[1].in_flight = 10
    assert pool.choose(Session("s1", 1)).index == 1  # pinned beats load


def test_ties_rotate_so_idle_servers_share_new_sessions() -> None:
    pool = UpstreamPool(["http://a/v1", "http://b/v1", "http://c/v1"])
    picks = [pool.choose(Session(f"s{i}", None)).index for i in range(6)]
    assert sorted(picks) == [0, 0, 1, 1, 2, 2]


def test_a_down_server_loses_its_sessions_until_it_is_back() -> None:
    pool = UpstreamPool(["http://a/v1", "http://b/v1"])
    pool.mark_down(pool.upstreams[0])
    assert pool.choose(Session("s", 0)).index == 1
    assert pool.choose(Session("t", None), exclude=frozenset({1})).index == 0  # nothing else left: try it
    pool.mark_up(pool.upstreams[0])
    assert pool.choose(Session("s", 0)).index == 0


def test_header_sessions_hash_to_the_same_server_in_every_process() -> None:
    first = UpstreamPool(["http://a/v1", "http://b/v1"]).choose(Session("abc", None, from_header=True))
    second = UpstreamPool(["http://a/v1", "http://b/v1"]).choose(Session("abc", None, from_header=True))
    assert first.index == second.index


def test_session_cookie_parsing() -> None:
    assert parse_session_cookie("abc.1") == ("abc", 1)
    assert parse_session_cookie("abc") is None
    assert parse_session_cookie("abc.x") is None
    assert parse_session_cookie(None) is None
