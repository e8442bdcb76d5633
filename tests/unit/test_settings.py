"""Settings: one typed object from config/kairos.yaml and the environment."""

from pathlib import Path

import pytest

from engine.settings import Settings, SettingsError, load_settings


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "kairos.yaml").write_text(text)
    return tmp_path


def test_defaults_work_on_the_embedded_stack(tmp_path):
    s = load_settings({}, tmp_path)
    assert s.port == 8000 and s.embedded_redis and s.embedded_kafka


def test_environment_wins_over_the_file(tmp_path):
    cdir = write(tmp_path, "port: 9000\npartitions: 8\n")
    s = load_settings({"KAIROS_PORT": "9100", "KAIROS_REDIS_URL": "redis://h:1/0",
                       "KAIROS_KAFKA_BOOTSTRAP": "k:9092"}, cdir)
    assert (s.port, s.partitions) == (9100, 8)
    assert not s.embedded_redis and not s.embedded_kafka


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        ("prot: 1\n", {}, "unknown setting 'prot'"),
        ("affinity: {half_life_days: {category: 0, brand: 1, tag: 1, item: 1}}\n", {}, "half_life_days.category"),
        ("affinity: {wieghts: {}}\n", {}, "unknown affinity setting"),
        ("", {"KAIROS_PORT": "eighty"}, "KAIROS_PORT='eighty' is not a valid int"),
        ("", {"KAIROS_REDIS_URL": "localhost:6379"}, "must start with redis://"),
        ("port: [1\n", {}, "kairos.yaml"),
    ],
)
def test_bad_settings_are_named(tmp_path, text, env, message):
    with pytest.raises(SettingsError, match=message.replace("[", r"\[")):
        load_settings(env, write(tmp_path, text))


def test_json_round_trip_for_child_processes(tmp_path):
    s = load_settings({}, Path("config"))
    assert Settings.from_json(s.to_json()) == s


def test_shipped_config_is_valid():
    load_settings({}, Path(__file__).resolve().parents[2] / "config")
