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


@pytest.mark.parametrize("name", ["api", "worker", "migrate", "mailer"])
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
