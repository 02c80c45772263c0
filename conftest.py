"""Suite-wide rules: every test has a time limit that fits what it does, so a hang fails fast instead of holding
the suite; and a child process that hung is shown with its output when it is killed."""

from __future__ import annotations

import subprocess
from collections.abc import Generator

import pytest

# Seconds. A plain test (in-process servers, the vLLM stand-in, ng_run children) ends in seconds; one that starts
# real vLLM (CPU build: tens of seconds to start on a loaded 2-core machine), a Ray cluster or a browser gets more.
DEFAULT_TIMEOUT_S = 120
HEAVY_TIMEOUT_S = 300
HEAVY_MARKERS = ("vllm", "ray", "browser", "nemo_gym_envs")


# Session fixtures that start one real vLLM for every test that uses them: with several workers (make test runs
# pytest-xdist), those tests share one worker, so that the server starts once.
SHARED_VLLM_FIXTURES = frozenset({"vllm_server", "tiny_model_dir"})


def pytest_itemcollected(item: pytest.Item) -> None:
    """As each test is collected, so before pytest-xdist reads the groups (its collection_modifyitems)."""
    if item.get_closest_marker("timeout") is None:
        heavy = any(item.get_closest_marker(name) for name in HEAVY_MARKERS)
        item.add_marker(pytest.mark.timeout(HEAVY_TIMEOUT_S if heavy else DEFAULT_TIMEOUT_S))
    if item.get_closest_marker("xdist_group") is None:
        # A module's tests stay together (its module fixtures start once), unless it is marked `spread` (each test
        # starts what it needs); the users of a shared vLLM stay together too.
        shared = SHARED_VLLM_FIXTURES & set(getattr(item, "fixturenames", ()))
        if shared:
            item.add_marker(pytest.mark.xdist_group("tiny-vllm"))
        elif item.get_closest_marker("spread") is None:
            item.add_marker(pytest.mark.xdist_group(item.nodeid.split("::")[0]))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, None, None]:
    outcome = yield
    report = outcome.get_result()
    error = call.excinfo.value if call.excinfo is not None else None
    if isinstance(error, subprocess.TimeoutExpired):
        for name, output in (("stdout", error.stdout), ("stderr", error.stderr)):
            if output:
                text = output.decode(errors="replace") if isinstance(output, bytes) else output
                report.sections.append((f"hung child {error.cmd!r}: its {name}", text[-20_000:]))
