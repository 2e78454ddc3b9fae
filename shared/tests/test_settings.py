import pytest
from pydantic import SecretStr, ValidationError

from nattery_shared.settings import Environment, PostgresSettings, RabbitSettings, ServiceSettings


def test_env_prefix_and_nested_sections(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NATTERY_PORT", "3999")
    monkeypatch.setenv("NATTERY_INFLUX__BATCH_SIZE", "123")
    settings = ServiceSettings()
    assert settings.port == 3999
    assert settings.influx.batch_size == 123


def test_placeholder_secrets_refused_outside_development() -> None:
    ServiceSettings(environment=Environment.DEVELOPMENT)  # dev defaults are fine
    with pytest.raises(ValidationError, match=r"postgres\.dsn"):
        ServiceSettings(environment=Environment.PRODUCTION)
    ServiceSettings(
        environment=Environment.PRODUCTION,
        postgres=PostgresSettings(dsn=SecretStr("postgresql://nattery:Xk3-long-random@db/nattery")),
        rabbit=RabbitSettings(url=SecretStr("amqp://nattery:Q9-long-random@mq/nattery")),
    )
