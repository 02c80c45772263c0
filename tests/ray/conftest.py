"""A real Ray cluster on this machine for the tests of servers on Ray (issue 16): a head node, and a second node
carrying the custom resource `second_machine` that stands for a second machine. Every node, the test's driver
and every server listen on 127.0.0.1 only (RayCluster.new_listeners_off_loopback tells what else does).

Without Ray these tests are skipped; in CI (CI set) they fail instead, as the vLLM tests do."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from testkit.ray_cluster import LOOPBACK_ENV, SECOND_MACHINE, RayCluster, off_loopback_listeners

os.environ.update(LOOPBACK_ENV)  # before Ray is imported
CPUS_PER_NODE = 3


def _ray() -> ModuleType:
    try:
        import ray
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("CI must test servers on Ray, but Ray is not installed (make setup installs ngym[ray])")
        pytest.skip("Ray is not installed: pip install -e '.[ray]'")
    return ray


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[RayCluster]:
    _ray()
    from ray.cluster_utils import Cluster

    before = off_loopback_listeners()
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"node_ip_address": "127.0.0.1", "num_cpus": CPUS_PER_NODE, "include_dashboard": False},
    )
    try:
        cluster.add_node(node_ip_address="127.0.0.1", num_cpus=CPUS_PER_NODE, resources={SECOND_MACHINE: 10})
        cluster.wait_for_nodes()
        head = cluster.head_node
        assert head is not None
        yield RayCluster(cluster.address, before, Path(head.get_session_dir_path()))
    finally:
        cluster.shutdown()


@pytest.fixture(scope="module")
def driver(ray_cluster: RayCluster) -> Iterator[ModuleType]:
    """Ray, connected to the cluster as a second driver beside ng_run: to look at what ng_run left there."""
    ray = _ray()
    ray.init(address=ray_cluster.address, namespace="ngym-tests", log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()
