"""deploy/ is checked statically (no Docker here): valid YAML, real commands and settings."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from dispatcher.cli import build_parser
from dispatcher.settings import PREFIX, Settings

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
KNOWN_SETTINGS = {PREFIX + f.name.upper() for f in dataclasses.fields(Settings)}


def k8s_documents() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                docs.append((path.name, doc))
    return docs


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return loaded


def assert_hooklane_command(args: list[str]) -> None:
    """The arguments parse as a real `hooklane` subcommand."""
    parsed = build_parser().parse_args(args)
    assert parsed.command in {"api", "router", "deliverer", "migrate"}


def test_compose_services_run_real_commands_with_known_settings() -> None:
    """Every Hooklane service in compose runs a real subcommand with known settings."""
    services = compose()["services"]
    assert {"kafka", "postgres", "migrate", "api", "router", "deliverer"} <= set(services)
    for name in ("migrate", "api", "router", "deliverer"):
        service = services[name]
        assert_hooklane_command(service["command"])
        env = service["environment"]
        assert set(env) <= KNOWN_SETTINGS, set(env) - KNOWN_SETTINGS
        assert env["HOOKLANE_KAFKA_BOOTSTRAP_SERVERS"] == "kafka:9092"
        assert "HOOKLANE_SECRET_KEY" in env


def test_compose_dependencies_exist() -> None:
    """depends_on only names services that exist."""
    services = compose()["services"]
    for service in services.values():
        assert set(service.get("depends_on", {})) <= set(services)


@pytest.mark.parametrize(("filename", "doc"), k8s_documents())
def test_k8s_objects_are_well_formed(filename: str, doc: dict[str, Any]) -> None:
    """Each manifest has apiVersion, kind and a DNS-1123 name."""
    assert doc["apiVersion"] and doc["kind"], filename
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"])


def workloads() -> list[dict[str, Any]]:
    return [doc for _, doc in k8s_documents() if doc["kind"] in {"Deployment", "Job"}]


def test_k8s_workloads_run_real_commands_and_read_config() -> None:
    """Workloads run real subcommands, their selectors match, and they read the config."""
    config = next(d for _, d in k8s_documents() if d["kind"] == "ConfigMap")
    secret = next(d for _, d in k8s_documents() if d["kind"] == "Secret")
    assert set(config["data"]) | set(secret["stringData"]) <= KNOWN_SETTINGS
    commands = set()
    for doc in workloads():
        template = doc["spec"]["template"]
        if doc["kind"] == "Deployment":
            assert (
                doc["spec"]["selector"]["matchLabels"].items()
                <= template["metadata"]["labels"].items()
            )
        for container in template["spec"]["containers"]:
            assert_hooklane_command(container["args"])
            commands.add(container["args"][0])
            refs = {next(iter(ref.values()))["name"] for ref in container["envFrom"]}
            assert refs == {config["metadata"]["name"], secret["metadata"]["name"]}
    assert commands == {"api", "router", "deliverer", "migrate"}


def test_services_select_existing_pods() -> None:
    """Every Service's selector matches a Deployment's pod labels."""
    pod_labels = [d["spec"]["template"]["metadata"]["labels"] for d in workloads()]
    for _, doc in k8s_documents():
        if doc["kind"] == "Service":
            selector = doc["spec"]["selector"]
            assert any(selector.items() <= labels.items() for labels in pod_labels)


def test_dockerfile_copies_existing_paths() -> None:
    """Every COPY source in the Dockerfile exists in the repository."""
    root = DEPLOY.parent
    for line in (DEPLOY / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY") and "--from" not in line:
            *sources, _dest = line.split()[1:]
            for source in sources:
                assert (root / source).exists(), source
