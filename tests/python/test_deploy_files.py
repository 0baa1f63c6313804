"""Structure of the deploy artifacts: Kubernetes manifests, compose file, Dockerfile."""

import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"


def docs():
    out = {}
    for f in sorted(K8S.glob("*.yaml")):
        for d in yaml.safe_load_all(f.read_text()):
            if d:
                assert {"apiVersion", "kind"} <= d.keys(), f
                out.setdefault(d["kind"], []).append(d)
    return out


def test_kubernetes_manifests():
    k = docs()
    for kind in ("Deployment", "Service", "ConfigMap", "PodDisruptionBudget", "HorizontalPodAutoscaler", "Kustomization"):
        assert kind in k, kind
    node = next(d for d in k["Deployment"] if d["metadata"]["name"] == "roomcast")
    pod = node["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    pre_stop = int(c["lifecycle"]["preStop"]["exec"]["command"][-1])
    toml = tomllib.loads(k["ConfigMap"][0]["data"]["roomcast.toml"])
    drain_s = (toml["shutdown"]["drain_window_ms"] + toml["shutdown"]["grace_ms"]) / 1000
    assert pod["terminationGracePeriodSeconds"] > pre_stop + drain_s
    assert node["spec"]["selector"]["matchLabels"] == node["spec"]["template"]["metadata"]["labels"]
    service = next(d for d in k["Service"] if d["metadata"]["name"] == "roomcast")
    assert service["spec"]["selector"] == node["spec"]["template"]["metadata"]["labels"]
    kustomized = set(k["Kustomization"][0]["resources"])
    assert kustomized == {f.name for f in K8S.glob("*.yaml")} - {"kustomization.yaml"}


def test_compose_file():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    s = compose["services"]
    assert {"redis", "node", "lb"} <= set(s)
    assert s["node"]["scale"] == 3
    assert s["node"]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert s["lb"]["depends_on"]["node"]["condition"] == "service_healthy"
    assert s["node"]["environment"]["ROOMCAST_BUS"] == "${ROOMCAST_BUS:-redis}"
    assert s["node"]["environment"]["ROOMCAST_LOG__FORMAT"] == "json"


def test_redis_cluster_profile():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    s = compose["services"]
    shards = [f"redis-c{i}" for i in range(1, 7)]
    for name in shards + ["redis-cluster-init"]:
        assert s[name]["profiles"] == ["redis-cluster"], name
    assert "--cluster-enabled" in s["redis-c1"]["command"]
    assert set(s["redis-cluster-init"]["depends_on"]) == set(shards)
    assert "--cluster-replicas 1" in s["redis-cluster-init"]["command"][2]
    env = dict(line.split("=", 1) for line in (ROOT / "deploy" / "redis-cluster.env").read_text().splitlines()
               if line and not line.startswith("#"))
    assert env["ROOMCAST_BUS"] == "redis-cluster"
    assert all(seed.split("//")[1].split(":")[0] in s for seed in env["ROOMCAST_REDIS_URL"].split(","))


def test_dockerfile():
    text = (ROOT / "deploy" / "Dockerfile").read_text()
    for needle in ("ARG RUST_IMAGE=rust:1-bookworm", "ARG RUNTIME_IMAGE=debian:bookworm-slim", "USER roomcast",
                   "STOPSIGNAL SIGTERM", "HEALTHCHECK", "--healthcheck", "MIMALLOC_ALLOW_THP=0"):
        assert needle in text, needle


def test_observability_profile_and_dashboard():
    import json
    import re

    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    s = compose["services"]
    for name in ("otel-collector", "jaeger", "prometheus"):
        assert s[name]["profiles"] == ["observability"], name
    for name in ("redis", "node", "lb"):
        assert "profiles" not in s[name], "the default cluster needs no profile"
    collector = yaml.safe_load((ROOT / "deploy" / "otel-collector.yaml").read_text())
    assert collector["service"]["pipelines"]["traces"]["receivers"] == ["otlp"]
    prometheus = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text())
    assert prometheus["scrape_configs"][0]["dns_sd_configs"][0]["names"] == ["node"]

    dashboard = json.loads((ROOT / "deploy" / "grafana-dashboard.json").read_text())
    source = (ROOT / "src" / "metrics.rs").read_text()
    used = set()
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            used |= set(re.findall(r"roomcast_[a-z_]+", target["expr"]))
    assert len(used) >= 15
    for name in used:
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        assert base.removeprefix("roomcast_") in source or base in source, f"{name} is not a metric roomcast exports"
