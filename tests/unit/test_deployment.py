"""The compose file: every service runs a real `kairos` command with valid arguments."""

from pathlib import Path

import pytest
import yaml

from engine import cli

ROOT = Path(__file__).resolve().parents[2]


def compose():
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_runs_kafka_redis_api_and_workers():
    services = compose()["services"]
    assert {"kafka", "redis", "postgres", "migrate", "api", "worker"} <= set(services)
    assert "KAIROS_DATABASE_URL" in services["api"]["environment"]
    assert services["api"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert int(services["kafka"]["environment"]["KAFKA_NUM_PARTITIONS"]) >= 4
    assert "--appendonly" in services["redis"]["command"]
    assert services["api"]["deploy"]["replicas"] == 2
    assert services["worker"]["deploy"]["replicas"] == 2
    assert services["learner"]["deploy"]["replicas"] == 1  # one owner of the learning models


def test_every_service_has_a_restart_policy():
    """A process that dies is started again: the long-running ones always (until stopped),
    a one-shot step only when it failed."""
    services = compose()["services"]
    missing = [name for name, svc in services.items() if "restart" not in svc]
    assert not missing, f"services without a restart policy: {missing}"
    for name, svc in services.items():
        policy = str(svc["restart"])
        assert policy in ("always", "unless-stopped") or policy.startswith("on-failure"), name
    assert services["migrate"]["restart"].startswith("on-failure")
    for name in ("kafka", "redis", "postgres", "api", "worker"):
        assert services[name]["restart"] == "unless-stopped", name


def test_compose_cluster_profile_runs_on_three_primaries():
    from engine.store.client import cluster_nodes

    services = compose()["services"]
    nodes = [n for n in ("redis-c1", "redis-c2", "redis-c3") if n in services]
    assert len(nodes) == 3
    for n in nodes:
        assert services[n]["profiles"] == ["cluster"]
        assert "--cluster-enabled" in services[n]["command"]
    assert "--cluster create" in services["redis-cluster-init"]["command"][-1]
    for name in ("api-cluster", "worker-cluster"):
        url = services[name]["environment"]["KAIROS_REDIS_URL"]
        assert url.startswith("redis+cluster://")
        assert [h for h, _ in cluster_nodes(url)] == nodes
        assert services[name]["depends_on"]["redis-cluster-init"]["condition"] == \
            "service_completed_successfully"
    # the API needs its control plane on a cluster too (`up api-cluster` starts postgres, migrate)
    assert services["api-cluster"]["depends_on"]["migrate"]["condition"] == \
        "service_completed_successfully"


@pytest.mark.parametrize("name", ["api", "worker", "migrate", "mailer", "api-cluster",
                                  "worker-cluster", "learner"])
def test_service_command_is_a_real_kairos_command(name, monkeypatch):
    command = compose()["services"][name]["command"]
    assert command[0] == "kairos"
    parser_calls = []
    monkeypatch.setattr(cli, f"cmd_{command[1]}", lambda args: parser_calls.append(args) or 0)
    assert cli.main(command[1:]) == 0
    assert parser_calls, "the subcommand ran"


def test_dockerfile_installs_the_package_and_its_entry_point():
    text = (ROOT / "Dockerfile").read_text()
    assert "pip install" in text and 'CMD ["kairos", "api"]' in text
