"""The restart budget of a local replica refills with healthy running (issue 24): one restart credited back per
`restart_refill_s` of it, never beyond `max_restarts`; the back-off follows the restarts still counted. The clock
is injected: no test waits."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from ngym.config.errors import ConfigError
from ngym.config.load import load_config
from ngym.placement.base import DOWN, STARTING, UP
from ngym.placement.listening import bind_kept, listening, steer
from ngym.placement.restarts import DEFAULT_RESTART_REFILL_S, RestartBudget, RestartPolicy
from ngym.servers.supervisor import plan_run

ROOT = Path(__file__).resolve().parents[2]
SEED_PATHS = (
    "+config_paths=[responses_api_models/vllm_model/configs/vllm_model.yaml, "
    "resources_servers/simple_weather/configs/simple_weather.yaml]"
)
ENV = ["+policy_base_url=http://127.0.0.1:1/v1", "+policy_api_key=x", "+policy_model_name=m", "+head_server.port=0"]
WEATHER = "simple_weather.resources_servers.simple_weather"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def budget(max_restarts: int = 3, refill_s: float = 600.0) -> tuple[RestartBudget, Clock]:
    clock = Clock()
    return RestartBudget(RestartPolicy(max_restarts, refill_s), clock), clock


def test_a_replica_that_keeps_dying_spends_its_budget_with_a_doubling_back_off() -> None:
    account, clock = budget()
    account.up()
    delays = []
    for _ in range(3):
        clock.now += 5  # dies 5 s after each start: no credit
        delays.append(account.died())
        account.up()
    clock.now += 5
    assert delays == [0.5, 1.0, 2.0] and account.died() is None
    assert (account.restarts, account.spent, account.shown()) == (3, 3, "3 of 3")


def test_each_refill_period_of_healthy_running_gives_one_restart_back() -> None:
    account, clock = budget(max_restarts=2, refill_s=600.0)
    account.up()
    clock.now += 1
    assert account.died() == 0.5
    account.up()
    clock.now += 1
    assert account.died() == 1.0  # both restarts spent
    account.up()
    clock.now += 1300  # two periods of healthy running: both restarts back, and the back-off starts again
    assert account.died() == 0.5
    assert (account.restarts, account.spent) == (3, 1)


def test_healthy_time_adds_up_over_lives_but_is_never_banked_beyond_the_budget() -> None:
    account, clock = budget(max_restarts=1, refill_s=600.0)
    account.up()
    clock.now += 10_000  # nothing spent yet: these hours are not banked
    assert account.died() == 0.5
    account.up()
    clock.now += 400
    assert account.died() is None, "400 s of the 600 s period: the one restart is still spent"
    account, clock = budget(max_restarts=2, refill_s=600.0)
    account.up()
    clock.now += 1
    account.died()
    account.up()
    clock.now += 400
    account.died()  # both spent; 400 s healthy so far
    account.up()
    clock.now += 250  # 650 s over two lives: one restart back
    assert account.died() == 1.0 and account.spent == 2


def test_time_down_or_starting_is_not_healthy_running() -> None:
    account, clock = budget(max_restarts=1, refill_s=600.0)
    account.up()
    clock.now += 1
    account.died()
    clock.now += 5000  # down and starting again: not up(), so not counted
    account.up()
    clock.now += 1
    assert account.died() is None


def test_refill_zero_never_gives_back_and_minus_one_is_never_spent() -> None:
    account, clock = budget(max_restarts=1, refill_s=0)
    account.up()
    clock.now += 10**6
    assert account.died() == 0.5
    account.up()
    clock.now += 10**6
    assert account.died() is None
    unlimited, clock = budget(max_restarts=-1)
    for _ in range(50):
        unlimited.up()
        clock.now += 1
        assert unlimited.died() is not None
    assert unlimited.shown() == "50 of unlimited" and unlimited.died() == 30.0


def test_restart_refill_s_is_read_per_instance_and_checked() -> None:
    run = plan_run(load_config([SEED_PATHS, *ENV, f"++{WEATHER}.restart_refill_s=60"], ROOT, use_env_file=False))
    try:
        weather = next(child for child in run.children if child.spec.name == "simple_weather")
        model = next(child for child in run.children if child.spec.name == "policy_model")
        assert weather.budget.policy.refill_s == 60.0
        assert model.budget.policy.refill_s == DEFAULT_RESTART_REFILL_S
    finally:
        run.close_sockets()
    with pytest.raises(ConfigError, match="restart_refill_s"):
        plan_run(load_config([SEED_PATHS, *ENV, f"++{WEATHER}.restart_refill_s=-1"], ROOT, use_env_file=False))


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
    except ConnectionRefusedError:
        return True
    return False


def test_a_dead_replica_refuses_while_another_is_up_and_keeps_its_port() -> None:
    first, second = bind_kept("127.0.0.1", 0), bind_kept("127.0.0.1", 0)
    try:
        port = first.getsockname()[1]
        steer([(DOWN, first), (UP, second)])
        assert refused(port) and not listening(first) and listening(second)
        other = socket.socket()
        with pytest.raises(OSError):  # the port stays ng_run's while it refuses
            other.bind(("127.0.0.1", port))
        other.close()
        steer([(DOWN, first), (DOWN, second)])  # nowhere else to go: connections wait for the restart
        assert listening(first) and listening(second) and not refused(port)
        steer([(STARTING, first), (UP, second)])  # a process starts on it: it listens when it serves
        assert listening(first) and first.getsockname()[1] == port
    finally:
        first.close()
        second.close()
