"""deploy/ is checked statically (no Docker here): valid YAML, real commands and settings."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
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


# -- Kubernetes schemas, CRDs, metrics and probes (observability) ----------------------

K8S_VERSION = "1.30.0"
CRD_KINDS = {"ScaledObject", "ServiceMonitor", "PrometheusRule", "TriggerAuthentication"}
ANY = None  # an allow-list leaf: any content
# Hand-kept field allow-lists of the CRDs we use (KEDA 2.x, Prometheus Operator v1).
_METADATA = {"name": ANY, "namespace": ANY, "labels": ANY, "annotations": ANY}
CRD_FIELDS: dict[str, Any] = {
    "ScaledObject": {
        "apiVersion": ANY,
        "kind": ANY,
        "metadata": _METADATA,
        "spec": {
            "scaleTargetRef": {"name": ANY, "kind": ANY, "apiVersion": ANY},
            "pollingInterval": ANY,
            "cooldownPeriod": ANY,
            "idleReplicaCount": ANY,
            "minReplicaCount": ANY,
            "maxReplicaCount": ANY,
            "fallback": {"failureThreshold": ANY, "replicas": ANY},
            "advanced": ANY,
            "triggers": [
                {
                    "type": ANY,
                    "name": ANY,
                    "metricType": ANY,
                    "authenticationRef": ANY,
                    "metadata": {
                        "bootstrapServers": ANY,
                        "consumerGroup": ANY,
                        "topic": ANY,
                        "lagThreshold": ANY,
                        "activationLagThreshold": ANY,
                        "offsetResetPolicy": ANY,
                        "allowIdleConsumers": ANY,
                        "scaleToZeroOnInvalidOffset": ANY,
                        "excludePersistentLag": ANY,
                        "limitToPartitionsWithLag": ANY,
                        "version": ANY,
                    },
                }
            ],
        },
    },
    "TriggerAuthentication": {
        "apiVersion": ANY,
        "kind": ANY,
        "metadata": _METADATA,
        "spec": {
            "secretTargetRef": [{"parameter": ANY, "name": ANY, "key": ANY}],
            "env": ANY,
            "podIdentity": ANY,
        },
    },
    "ServiceMonitor": {
        "apiVersion": ANY,
        "kind": ANY,
        "metadata": _METADATA,
        "spec": {
            "selector": ANY,
            "namespaceSelector": ANY,
            "jobLabel": ANY,
            "targetLabels": ANY,
            "podTargetLabels": ANY,
            "endpoints": [
                {
                    "port": ANY,
                    "path": ANY,
                    "interval": ANY,
                    "scrapeTimeout": ANY,
                    "scheme": ANY,
                    "honorLabels": ANY,
                    "relabelings": ANY,
                    "metricRelabelings": ANY,
                }
            ],
        },
    },
    "PrometheusRule": {
        "apiVersion": ANY,
        "kind": ANY,
        "metadata": _METADATA,
        "spec": {
            "groups": [
                {
                    "name": ANY,
                    "interval": ANY,
                    "rules": [
                        {
                            "alert": ANY,
                            "record": ANY,
                            "expr": ANY,
                            "for": ANY,
                            "keep_firing_for": ANY,
                            "labels": ANY,
                            "annotations": ANY,
                        }
                    ],
                }
            ]
        },
    },
}
CRD_API_VERSIONS = {
    "ScaledObject": "keda.sh/v1alpha1",
    "TriggerAuthentication": "keda.sh/v1alpha1",
    "ServiceMonitor": "monitoring.coreos.com/v1",
    "PrometheusRule": "monitoring.coreos.com/v1",
}
# Metrics of other exporters that alerts may use (kube-state-metrics).
EXTERNAL_METRICS = {"kube_deployment_status_replicas_unavailable"}
PROMQL_WORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right",
    "and", "or", "unless", "offset", "bool", "inf", "nan",
}  # fmt: skip


def unknown_fields(value: Any, allowed: Any, path: str = "") -> list[str]:
    """Paths in ``value`` that the allow-list ``allowed`` does not name."""
    if allowed is ANY:
        return []
    if isinstance(allowed, list):
        if not isinstance(value, list):
            return [f"{path}: expected a list"]
        return [
            p
            for i, item in enumerate(value)
            for p in unknown_fields(item, allowed[0], f"{path}[{i}]")
        ]
    if not isinstance(value, dict):
        return [f"{path}: expected a mapping"]
    found = []
    for key, item in value.items():
        if key not in allowed:
            found.append(f"{path}.{key}")
        else:
            found += unknown_fields(item, allowed[key], f"{path}.{key}")
    return found


def registry_names() -> set[str]:
    """Every series name the code's full registry exports (with Prometheus suffixes)."""
    from dispatcher.ops.metrics import build_registry

    names = set()
    for family in build_registry().registry.collect():
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names |= {family.name + suffix for suffix in ("_bucket", "_count", "_sum")}
        else:
            names.add(family.name)
    return names


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # strings
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges and subqueries
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    expr = re.sub(r"\$\w+", "", expr)  # Grafana variables
    names = set()
    for match in re.finditer(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\b(\s*\()?", expr):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in PROMQL_WORDS or re.fullmatch(r"\d+\w*", name):
            continue
        names.add(name)
    return names


def unknown_metrics(expr: str, known: set[str]) -> set[str]:
    """Metric names in ``expr`` that neither the registry nor the allowed exporters have."""
    return metric_names(expr) - known - EXTERNAL_METRICS


def deploy_exprs() -> list[tuple[str, str]]:
    """(where, expr) of every PromQL expression in alerts, the dashboard and scalers."""
    found = []
    for filename, doc in k8s_documents():
        if doc["kind"] == "PrometheusRule":
            for group in doc["spec"]["groups"]:
                for rule in group["rules"]:
                    found.append((f"{filename}:{rule.get('alert')}", rule["expr"]))
        if doc["kind"] == "ScaledObject":
            for trigger in doc["spec"]["triggers"]:
                if "query" in trigger["metadata"]:  # prometheus triggers
                    found.append(
                        (f"{filename}:{doc['metadata']['name']}", trigger["metadata"]["query"])
                    )
    dashboard = json.loads((DEPLOY / "grafana" / "hooklane.json").read_text())
    for panel in dashboard["panels"]:
        for target in panel.get("targets", ()):
            found.append((f"dashboard:{panel['title']}", target["expr"]))
    return found


@pytest.mark.parametrize(
    ("filename", "doc"), [(f, d) for f, d in k8s_documents() if d["kind"] not in CRD_KINDS]
)
def test_k8s_objects_validate_against_the_kubernetes_schemas(
    filename: str, doc: dict[str, Any]
) -> None:
    """Built-in kinds validate offline against Kubernetes' own schemas (strict: no extra fields)."""
    kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


@pytest.mark.parametrize(
    ("filename", "doc"), [(f, d) for f, d in k8s_documents() if d["kind"] in CRD_KINDS]
)
def test_crds_use_only_known_fields(filename: str, doc: dict[str, Any]) -> None:
    """KEDA and Prometheus Operator objects use their API version and known fields only."""
    assert doc["apiVersion"] == CRD_API_VERSIONS[doc["kind"]], filename
    assert unknown_fields(doc, CRD_FIELDS[doc["kind"]]) == [], filename


def test_unknown_fields_and_unknown_metrics_are_caught() -> None:
    """The checks fail on a misspelt field (built-in or CRD) and on a misspelt metric name."""
    probe = {"httpGet": {"path": "/readyz", "port": "metrics"}, "periodSecond": 5}
    pod = {"containers": [{"name": "x", "image": "x", "readinessProbe": probe}]}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "x"},
        "spec": {
            "selector": {"matchLabels": {"a": "b"}},
            "template": {"metadata": {"labels": {"a": "b"}}, "spec": pod},
        },
    }
    with pytest.raises(kubernetes_validate.ValidationError, match="periodSecond"):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)
    doc = {"apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "spec": {"maxReplicas": 3}}
    assert unknown_fields(doc, CRD_FIELDS["ScaledObject"]) == [".spec.maxReplicas"]
    known = registry_names()
    assert unknown_metrics("sum(rate(hooklane_atempts_total[5m]))", known) == {
        "hooklane_atempts_total"
    }
    assert unknown_metrics('rate(hooklane_attempt_duration_seconds{outcome="x"}[1m])', known) == {
        "hooklane_attempt_duration_seconds"  # histograms are only _bucket/_count/_sum
    }
    good = 'sum by (le) (rate(hooklane_attempt_duration_seconds_bucket{outcome="success"}[5m]))'
    assert unknown_metrics(good, known) == set()


@pytest.mark.parametrize(("where", "expr"), deploy_exprs())
def test_every_metric_in_alerts_dashboard_and_scalers_exists(where: str, expr: str) -> None:
    """Alerts, dashboard panels and scalers only use metrics the code exports."""
    assert metric_names(expr), where  # the extraction found something to check
    assert unknown_metrics(expr, registry_names()) == set(), where


def test_alerts_cover_the_operations_contract() -> None:
    """The PrometheusRule has the five alerts the SREs asked for."""
    rules = [
        rule
        for _, doc in k8s_documents()
        if doc["kind"] == "PrometheusRule"
        for group in doc["spec"]["groups"]
        for rule in group["rules"]
    ]
    by_name = {rule["alert"]: rule for rule in rules}
    assert set(by_name) == {
        "HooklaneConsumerLagGrowing",
        "HooklaneBacklogOldEntry",
        "HooklaneDelivererNotReady",
        "HooklaneAttemptFailureRatioHigh",
        "HooklaneAttemptLogRowsDropped",
    }
    assert by_name["HooklaneConsumerLagGrowing"]["for"] == "10m"
    assert by_name["HooklaneAttemptFailureRatioHigh"]["for"] == "15m"
    assert "> 3600" in by_name["HooklaneBacklogOldEntry"]["expr"]
    assert "> 0.5" in by_name["HooklaneAttemptFailureRatioHigh"]["expr"]


def test_dashboard_shows_the_operations_views() -> None:
    """The Grafana dashboard plots throughput, latency, lag, backlog, in-flight, loop lag."""
    dashboard = json.loads((DEPLOY / "grafana" / "hooklane.json").read_text())
    used = {
        name
        for _, expr in deploy_exprs()
        if _.startswith("dashboard:")
        for name in metric_names(expr)
    }
    assert {
        "hooklane_deliveries_total",
        "hooklane_attempt_duration_seconds_bucket",
        "hooklane_consumer_lag",
        "hooklane_backlog_deliveries",
        "hooklane_backlog_oldest_age_seconds",
        "hooklane_in_flight_requests",
        "hooklane_event_loop_lag_seconds",
    } <= used
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(dashboard["panels"])


def config_value(name: str) -> str:
    config = next(d for _, d in k8s_documents() if d["kind"] == "ConfigMap")
    value: str = config["data"][name]
    return value


def test_scaled_objects_track_the_real_groups_and_partition_bounds() -> None:
    """KEDA scales each Deployment on its own group, between 1 and its partition count."""
    from dispatcher.deliverer import GROUP_ID as DELIVERER_GROUP
    from dispatcher.router.router import GROUP_ID as ROUTER_GROUP

    scaled = {
        d["spec"]["scaleTargetRef"]["name"]: d
        for _, d in k8s_documents()
        if d["kind"] == "ScaledObject"
    }
    deployments = {d["metadata"]["name"] for d in workloads() if d["kind"] == "Deployment"}
    assert set(scaled) == {"hooklane-deliverer", "hooklane-router"} <= deployments
    partitions = {
        "hooklane-deliverer": int(config_value("HOOKLANE_DELIVERIES_PARTITIONS")),
        "hooklane-router": int(config_value("HOOKLANE_TOPIC_PARTITIONS")),
    }
    groups = {"hooklane-deliverer": DELIVERER_GROUP, "hooklane-router": ROUTER_GROUP}
    bootstrap = config_value("HOOKLANE_KAFKA_BOOTSTRAP_SERVERS")
    for name, doc in scaled.items():
        spec = doc["spec"]
        assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"] <= partitions[name]
        (trigger,) = spec["triggers"]
        assert trigger["type"] == "kafka"
        assert trigger["metadata"]["consumerGroup"] == groups[name]
        assert trigger["metadata"]["bootstrapServers"] == bootstrap
    prefix = config_value("HOOKLANE_TOPIC_PREFIX")
    assert scaled["hooklane-deliverer"]["spec"]["triggers"][0]["metadata"]["topic"] == (
        f"{prefix}deliveries"
    )
    hpa = next(d for _, d in k8s_documents() if d["kind"] == "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "hooklane-api" in deployments


def test_every_deployment_probes_the_ops_endpoints_and_has_a_disruption_budget() -> None:
    """Readiness is /readyz, liveness /healthz, on the metrics port the ConfigMap sets."""
    assert config_value("HOOKLANE_METRICS_HOST") == "0.0.0.0"
    port = int(config_value("HOOKLANE_METRICS_PORT"))
    budgets = [d for _, d in k8s_documents() if d["kind"] == "PodDisruptionBudget"]
    for doc in workloads():
        if doc["kind"] != "Deployment":
            continue
        labels = doc["spec"]["template"]["metadata"]["labels"]
        assert any(b["spec"]["selector"]["matchLabels"].items() <= labels.items() for b in budgets)
        (container,) = doc["spec"]["template"]["spec"]["containers"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["metrics"] == port
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}


def test_service_monitor_scrapes_a_metrics_port_of_every_component() -> None:
    """The ServiceMonitor's selector and port reach a metrics port of api, router, deliverer."""
    monitor = next(d for _, d in k8s_documents() if d["kind"] == "ServiceMonitor")
    selector = monitor["spec"]["selector"]["matchLabels"]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics"
    components = set()
    for _, doc in k8s_documents():
        if (
            doc["kind"] == "Service"
            and selector.items() <= doc["metadata"]["labels"].items()
            and endpoint["port"] in {p["name"] for p in doc["spec"]["ports"]}
        ):
            components.add(doc["metadata"]["labels"]["app.kubernetes.io/component"])
    assert components == {"api", "router", "deliverer"}


def test_compose_and_dockerfile_listen_for_metrics_on_all_interfaces() -> None:
    """Containers set HOOKLANE_METRICS_HOST=0.0.0.0 so probes and Prometheus can reach them."""
    services = compose()["services"]
    for name in ("api", "router", "deliverer"):
        assert services[name]["environment"]["HOOKLANE_METRICS_HOST"] == "0.0.0.0"
    assert "HOOKLANE_METRICS_HOST=0.0.0.0" in (DEPLOY / "Dockerfile").read_text()


# -- a secured Kafka (issue 23): settings from the Secret, files mounted, KEDA, Strimzi --


def strimzi_documents() -> list[dict[str, Any]]:
    return list(yaml.safe_load_all((DEPLOY / "strimzi" / "kafka.yaml").read_text()))


def test_kafka_security_settings_come_from_the_secret_with_the_files_mounted(
    tmp_path: Path,
) -> None:
    """The Secret's Kafka settings are accepted by Settings (with its files present), every
    workload mounts those files where the settings point, from Secrets Strimzi makes."""
    secret = next(d for _, d in k8s_documents() if d["kind"] == "Secret")
    env = {k: v for k, v in secret["stringData"].items() if k.startswith("HOOKLANE_KAFKA_")}
    files = {k: v for k, v in env.items() if k.endswith("FILE")}
    assert env["HOOKLANE_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    assert files, env
    mount_dirs = {str(Path(path).parent) for path in files.values()}
    for path in files.values():  # the files, as the projected volume lays them out
        (tmp_path / Path(path).name).write_text("x")
    local = {k: str(tmp_path / Path(v).name) if k in files else v for k, v in env.items()}
    local["HOOKLANE_KAFKA_BOOTSTRAP_SERVERS"] = config_value("HOOKLANE_KAFKA_BOOTSTRAP_SERVERS")
    Settings.from_env(local)  # consistent: would raise SettingsError otherwise

    strimzi = strimzi_documents()
    cluster = next(d for d in strimzi if d["kind"] == "Kafka")["metadata"]["name"]
    users = {d["metadata"]["name"] for d in strimzi if d["kind"] == "KafkaUser"}
    made_by_strimzi = users | {f"{cluster}-cluster-ca-cert"}
    for doc in workloads():
        spec = doc["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in spec["volumes"]}
        for container in spec["containers"]:
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert mount_dirs <= set(mounts), doc["metadata"]["name"]
            for directory in mount_dirs:
                sources = volumes[mounts[directory]]["projected"]["sources"]
                paths = {
                    item["path"]: source["secret"]["name"]
                    for source in sources
                    for item in source["secret"]["items"]
                }
                assert {Path(p).name for p in files.values()} <= set(paths)
                assert set(paths.values()) <= made_by_strimzi
    assert env["HOOKLANE_KAFKA_SASL_USERNAME"] in users


def test_keda_logs_in_like_the_processes_and_strimzi_matches_the_config() -> None:
    """Every Kafka scaler uses the TriggerAuthentication, whose Secrets exist (here or
    made by Strimzi); the Strimzi listener is what the ConfigMap's bootstrap names."""
    docs = [d for _, d in k8s_documents()]
    auth = next(d for d in docs if d["kind"] == "TriggerAuthentication")
    secrets = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Secret"}
    strimzi = strimzi_documents()
    kafka = next(d for d in strimzi if d["kind"] == "Kafka")
    cluster = kafka["metadata"]["name"]
    users = {d["metadata"]["name"] for d in strimzi if d["kind"] == "KafkaUser"}
    refs = {ref["parameter"]: ref for ref in auth["spec"]["secretTargetRef"]}
    assert set(refs) == {"sasl", "tls", "username", "password", "ca"}
    for ref in refs.values():
        if ref["name"] in secrets:
            assert ref["key"] in secrets[ref["name"]]["stringData"]
        else:
            assert ref["name"] in users | {f"{cluster}-cluster-ca-cert"}
    scaler = secrets[refs["sasl"]["name"]]["stringData"]
    assert scaler["sasl"] == "scram_sha512" and scaler["tls"] == "enable"
    for doc in docs:
        if doc["kind"] == "ScaledObject":
            for trigger in doc["spec"]["triggers"]:
                assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]

    host, port = config_value("HOOKLANE_KAFKA_BOOTSTRAP_SERVERS").rsplit(":", 1)
    assert host == f"{cluster}-kafka-bootstrap"
    (listener,) = [lst for lst in kafka["spec"]["kafka"]["listeners"] if lst["port"] == int(port)]
    assert listener["tls"] is True
    assert listener["authentication"]["type"] == "scram-sha-512"
    prefix = config_value("HOOKLANE_TOPIC_PREFIX")
    topics = {d["metadata"]["name"]: d["spec"] for d in strimzi if d["kind"] == "KafkaTopic"}
    assert topics[f"{prefix}deliveries"]["partitions"] == int(
        config_value("HOOKLANE_DELIVERIES_PARTITIONS")
    )
    for doc in strimzi:
        assert doc["apiVersion"] == "kafka.strimzi.io/v1beta2"
        if doc["kind"] != "Kafka":
            assert doc["metadata"]["labels"]["strimzi.io/cluster"] == cluster
