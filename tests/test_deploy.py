"""Deploy recipes are validated here, since no Docker engine runs where the tests do."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


class TestCompose:
    def test_compose_has_durable_redis_worker_and_flower(self) -> None:
        """Redis runs with AOF and noeviction; a worker and an authenticated Flower are defined."""
        compose = yaml.safe_load((ROOT / "deploy" / "docker-compose.yml").read_text())
        services = compose["services"]
        redis_command = " ".join(services["redis"]["command"])
        assert "--appendonly yes" in redis_command
        assert "--maxmemory-policy noeviction" in redis_command
        assert services["worker"]["command"][:4] == ["celery", "-A", "cio_worker", "worker"]
        assert "FLOWER_BASIC_AUTH" in services["flower"]["environment"]
        assert all(port.startswith("127.0.0.1:") for port in services["flower"]["ports"])

    def test_dockerfile_installs_the_package(self) -> None:
        """The image the compose file builds installs cio_worker and drops root."""
        text = (ROOT / "deploy" / "Dockerfile").read_text()
        assert "pip install" in text and "USER " in text


class TestProcfile:
    def test_worker_and_flower_lines(self) -> None:
        """The Procfile runs a worker and Flower with basic auth."""
        lines = dict(
            line.split(":", 1) for line in (ROOT / "Procfile").read_text().splitlines() if line
        )
        assert "celery -A cio_worker worker" in lines["worker"]
        assert "celery -A cio_worker flower" in lines["flower"]
        assert "--basic-auth" in lines["flower"]
