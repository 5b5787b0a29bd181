#!/usr/bin/env python3
"""Static checks of the Helm chart in helm/mtls-gateway and of the Containerfile.

Helm is not installable on the build machines, so the chart is never rendered here. What can be
checked without it is checked:
  - every plain YAML file of the chart parses (Chart.yaml, values.yaml, ci/*.yaml);
  - values.schema.json is a valid draft-07 schema, strict (every object says additionalProperties),
    every property described, and it covers exactly the keys values.yaml shows;
  - values.yaml and each ci/*.yaml overlay (merged over values.yaml as Helm merges) validate;
  - the schema rejects a list of known-bad values (unknown keys, kvVersion 3, inline secrets, ...);
  - every key in values.yaml carries a comment;
  - every .Values.x.y path that templates/*.yaml, NOTES.txt and _helpers.tpl read exists in
    values.yaml; template blocks are balanced; every included helper is defined;
  - hardening defaults, probes, grace period, config file paths and the Containerfile agree;
  - each pod keeps its own lifecycle replica id (the config never sets one, nothing overrides
    the pod's host name), and with autoscaling the HorizontalPodAutoscaler, not the Deployment,
    sets the replica count;
  - files/prometheus-rules.yaml names only metrics registered in src/, and its certificate
    lifecycle alerts pass `promtool check rules` and unit tests (when promtool is installed).

Run:       python3 tests/helm_check.py              (checks the real chart)
           python3 tests/helm_check.py --self-test  (breaks temp copies; every break must be caught)
Needs:     pip install pyyaml jsonschema
Output:    one PASS/FAIL line per check, then "N passed, M failed"; exit status 1 on any failure.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

try:
    import jsonschema
    import yaml
except ImportError as exc:  # pragma: no cover - environment problem, not a check result
    sys.exit(f"helm_check: missing Python package ({exc.name}); run: pip install pyyaml jsonschema")

REPO = Path(__file__).resolve().parent.parent
CHART_REL = Path("helm/mtls-gateway")
BINARY = "/usr/local/bin/mtls-gateway"
CONFIG_PATH = "/etc/mtls-gateway/config.yaml"
NONROOT_UID = 65532


@dataclass
class Result:
    name: str
    ok: bool
    detail: str = ""


class Checks:
    """Collects results; each check function appends one or more."""

    def __init__(self, repo: Path):
        self.repo = repo
        self.chart = repo / CHART_REL
        self.results: list[Result] = []

    def add(self, name: str, problems: list[str] | str | None) -> None:
        if isinstance(problems, str):
            problems = [problems]
        problems = problems or []
        self.results.append(Result(name, not problems, "; ".join(problems)))

    def run(self, name: str, fn: Callable[[], list[str] | None]) -> None:
        try:
            self.add(name, fn())
        except Exception as exc:  # a crash in a check is a failed check, with the reason
            self.add(name, f"{type(exc).__name__}: {exc}")

    @property
    def failed(self) -> list[Result]:
        return [r for r in self.results if not r.ok]


# ---------------------------------------------------------------------------------------------
# Helpers


def load_yaml(path: Path) -> Any:
    with path.open(encoding="utf-8") as f:
        return yaml.safe_load(f)


def helm_merge(base: Any, overlay: Any) -> Any:
    """Merge user values over chart defaults the way Helm does: maps merge key by key, a null
    deletes the key, anything else replaces."""
    if not isinstance(base, dict) or not isinstance(overlay, dict):
        return copy.deepcopy(overlay)
    out = copy.deepcopy(base)
    for key, value in overlay.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = helm_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def schema_errors(schema: dict, values: Any) -> list[str]:
    validator = jsonschema.Draft7Validator(schema)
    errs = sorted(validator.iter_errors(values), key=lambda e: list(map(str, e.absolute_path)))
    return [f"{'.'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}" for e in errs]


def strip_template_comments(text: str) -> str:
    # Go template comments: {{/* ... */}} and {{- /* ... */ -}}; keep newlines for line numbers.
    return re.sub(r"\{\{-?\s*/\*.*?\*/\s*-?\}\}", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.S)


def template_files(chart: Path) -> list[Path]:
    tdir = chart / "templates"
    return sorted(p for p in tdir.iterdir() if p.is_file() and p.suffix in {".yaml", ".yml", ".tpl", ".txt"})


def defines(chart: Path) -> dict[str, str]:
    """Map helper name -> body (comments stripped) for every define in the templates."""
    out: dict[str, str] = {}
    for path in template_files(chart):
        text = strip_template_comments(path.read_text(encoding="utf-8"))
        stack: list[tuple[str, str | None, int]] = []  # (block kind, define name, body start)
        for m in ACTION_RE.finditer(text):
            words = m.group(1).split()
            if not words:
                continue
            if words[0] in OPENERS:
                name = words[1].strip('"') if words[0] == "define" and len(words) > 1 else None
                stack.append((words[0], name, m.end()))
            elif words[0] == "end" and stack:
                kind, name, start = stack.pop()
                if kind == "define" and name:
                    out[name] = text[start:m.start()]
    return out


ACTION_RE = re.compile(r"\{\{-?(.*?)-?\}\}", re.S)
OPENERS = {"if", "range", "with", "define", "block"}


# ---------------------------------------------------------------------------------------------
# The checks


def check_chart_yaml(c: Checks) -> list[str]:
    meta = load_yaml(c.chart / "Chart.yaml")
    problems = []
    if not isinstance(meta, dict):
        return ["Chart.yaml is not a mapping"]
    if meta.get("apiVersion") != "v2":
        problems.append(f"apiVersion is {meta.get('apiVersion')!r}, want v2 (Helm 3)")
    if meta.get("name") != c.chart.name:
        problems.append(f"name {meta.get('name')!r} differs from the directory name {c.chart.name!r}")
    if not re.fullmatch(r"\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?", str(meta.get("version", ""))):
        problems.append(f"version {meta.get('version')!r} is not SemVer 2")
    if not meta.get("appVersion"):
        problems.append("appVersion is missing")
    if meta.get("type", "application") != "application":
        problems.append("type should be application")
    return problems


def plain_yaml_files(chart: Path) -> list[Path]:
    return sorted(
        p for p in chart.rglob("*")
        if p.is_file() and p.suffix in {".yaml", ".yml"} and "templates" not in p.relative_to(chart).parts
    )


def check_schema_meta(c: Checks, schema: dict) -> list[str]:
    problems = []
    if schema.get("$schema") != "http://json-schema.org/draft-07/schema#":
        problems.append(f"$schema is {schema.get('$schema')!r}, want http://json-schema.org/draft-07/schema#")
    try:
        jsonschema.Draft7Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        problems.append(f"not a valid draft-07 schema: {exc.message}")
    return problems


def walk_schema_objects(node: Any, path: str, visit: Callable[[str, dict], None]) -> None:
    if isinstance(node, dict):
        if node.get("type") == "object" or "properties" in node:
            visit(path, node)
        for key, child in node.items():
            if key == "properties" and isinstance(child, dict):
                for pname, pnode in child.items():
                    walk_schema_objects(pnode, f"{path}.{pname}" if path else pname, visit)
            elif key in {"items", "additionalProperties", "not", "if", "then", "else"}:
                walk_schema_objects(child, f"{path}[{key}]", visit)
            elif key in {"anyOf", "allOf", "oneOf"} and isinstance(child, list):
                for i, sub in enumerate(child):
                    walk_schema_objects(sub, f"{path}[{key}{i}]", visit)


def check_schema_strict(c: Checks, schema: dict) -> list[str]:
    problems: list[str] = []

    def visit(path: str, node: dict) -> None:
        # Objects inside anyOf/allOf/if/then only refine a parent; the parent carries the rule.
        if any(t in path for t in ("[anyOf", "[allOf", "[oneOf", "[if]", "[then]", "[else]", "[not]")):
            return
        if node.get("type") == "object" and "additionalProperties" not in node:
            problems.append(f"{path or '<root>'}: object without additionalProperties (say false, or true if free-form on purpose)")
        for pname, pnode in (node.get("properties") or {}).items():
            if isinstance(pnode, dict) and not pnode.get("description"):
                problems.append(f"{path + '.' if path else ''}{pname}: property without description")

    walk_schema_objects(schema, "", visit)
    return problems


def check_schema_covers_values(c: Checks, schema: dict, values: dict) -> list[str]:
    """values.yaml shows every option the schema declares, and declares nothing the schema lacks."""
    problems: list[str] = []

    def walk(snode: dict, vnode: Any, path: str) -> None:
        props = snode.get("properties")
        if not props or not isinstance(vnode, dict):
            return
        for key, value in vnode.items():
            if key not in props:
                if snode.get("additionalProperties") is False:
                    problems.append(f"values.yaml {path}{key}: not declared in values.schema.json")
                continue
            walk(props[key], value, f"{path}{key}.")
        # Optional Kubernetes fields (e.g. capabilities.add) may stay out of values.yaml; every
        # required key must be shown with its default.
        for key in snode.get("required", []):
            if key not in vnode:
                problems.append(f"values.schema.json {path}{key}: required but values.yaml does not show it")

    walk(schema, values, "")
    return problems


KEY_LINE = re.compile(r"^(\s*)([A-Za-z_][\w.-]*|\"[^\"]+\"|'[^']+'):(\s|$)")


def has_inline_comment(line: str) -> bool:
    in_single = in_double = False
    for i, ch in enumerate(line):
        if ch == "'" and not in_double:
            in_single = not in_single
        elif ch == '"' and not in_single:
            in_double = not in_double
        elif ch == "#" and not in_single and not in_double and (i == 0 or line[i - 1] in " \t"):
            return True
    return False


def check_values_documented(c: Checks) -> list[str]:
    problems = []
    lines = (c.chart / "values.yaml").read_text(encoding="utf-8").splitlines()
    for n, line in enumerate(lines):
        m = KEY_LINE.match(line)
        if not m:
            continue
        prev = lines[n - 1] if n > 0 else ""
        if not (prev.lstrip().startswith("#") or has_inline_comment(line)):
            problems.append(f"values.yaml:{n + 1}: key {m.group(2)!r} has no comment directly above or inline")
    return problems


def values_path_exists(values: Any, path: list[str]) -> bool:
    node = values
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


VALUES_REF = re.compile(r"(?<![\w)\]])\$?\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)")
ALIAS_DEF = re.compile(r"\{\{-?\s*(\$[A-Za-z_]\w*)\s*:?=\s*\$?\.Values((?:\.[A-Za-z_]\w*)+)\s*-?\}\}")
ALIAS_USE = re.compile(r"(\$[A-Za-z_]\w*)((?:\.[A-Za-z_][A-Za-z0-9_]*)+)")


def check_template_values_refs(c: Checks, values: dict) -> list[str]:
    problems = []
    seen = 0
    for path in template_files(c.chart):
        text = strip_template_comments(path.read_text(encoding="utf-8"))
        aliases: dict[str, str] = {}
        for n, line in enumerate(text.splitlines(), 1):
            if re.search(r'\{\{-?\s*define\s+"', line):
                aliases.clear()  # variables are scoped to their define
            for m in re.finditer(r"\{\{-?\s*range\s+([^:]*):=", line):
                for var in re.findall(r"\$\w+", m.group(1)):
                    aliases.pop(var, None)
            for m in ALIAS_DEF.finditer(line):
                aliases[m.group(1)] = m.group(2)
            refs = [m.group(1) for m in VALUES_REF.finditer(line)]
            refs += [aliases[m.group(1)] + m.group(2) for m in ALIAS_USE.finditer(line) if m.group(1) in aliases]
            for ref in refs:
                seen += 1
                parts = ref.lstrip(".").split(".")
                if not values_path_exists(values, parts):
                    problems.append(f"{path.name}:{n}: .Values.{'.'.join(parts)} is not in values.yaml")
    if seen == 0:
        problems.append("no .Values references found at all: the scanner is broken")
    return problems


def check_template_blocks(c: Checks, path: Path) -> list[str]:
    text = strip_template_comments(path.read_text(encoding="utf-8"))
    problems = []
    if "\t" in text:
        problems.append(f"{path.name}: contains a tab character (YAML forbids tabs for indentation)")
    stack: list[tuple[str, int]] = []
    for m in ACTION_RE.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        words = m.group(1).split()
        if not words:
            problems.append(f"{path.name}:{line}: empty action")
            continue
        if words[0] in OPENERS:
            stack.append((words[0], line))
        elif words[0] == "end":
            if not stack:
                problems.append(f"{path.name}:{line}: end without an open block")
            else:
                stack.pop()
        elif words[0] == "else" and not stack:
            problems.append(f"{path.name}:{line}: else outside a block")
    for kind, line in stack:
        problems.append(f"{path.name}:{line}: {kind} is never closed with end")
    if text.count("{{") != text.count("}}"):
        problems.append(f"{path.name}: {text.count('{{')} '{{{{' but {text.count('}}')} '}}}}'")
    return problems


def check_includes_defined(c: Checks) -> list[str]:
    defined = set(defines(c.chart))
    problems = []
    for name in defined:
        if not name.startswith("mtls-gateway."):
            problems.append(f'define "{name}": helper names must start with "mtls-gateway." (they are global across charts)')
    for path in template_files(c.chart):
        text = strip_template_comments(path.read_text(encoding="utf-8"))
        for m in re.finditer(r'\b(?:include|template)\s+"([^"]+)"', text):
            if m.group(1) not in defined:
                line = text.count("\n", 0, m.start()) + 1
                problems.append(f'{path.name}:{line}: include "{m.group(1)}" but no such define')
    for public in ("mtls-gateway.sidecarContainer", "mtls-gateway.sidecarVolumes",
                   "mtls-gateway.sidecarPodAnnotations", "mtls-gateway.terminationGracePeriodSeconds",
                   "mtls-gateway.serviceAccountName"):
        if public not in defined:
            problems.append(f'public helper "{public}" (documented in docs/helm.md) is not defined')
    return problems


def check_sidecar_helpers_need_no_chart(c: Checks) -> list[str]:
    """An app chart includes the sidecar helpers with (dict "Values" .. "Release" ..): no .Chart."""
    defs = defines(c.chart)
    problems = []

    def reach(name: str, seen: set[str]) -> set[str]:
        if name in seen or name not in defs:
            return seen
        seen.add(name)
        for m in re.finditer(r'\binclude\s+"([^"]+)"', defs[name]):
            reach(m.group(1), seen)
        return seen

    for public in ("mtls-gateway.sidecarContainer", "mtls-gateway.sidecarVolumes",
                   "mtls-gateway.sidecarPodAnnotations", "mtls-gateway.terminationGracePeriodSeconds",
                   "mtls-gateway.serviceAccountName"):
        for name in sorted(reach(public, set())):
            for bad in (".Chart", ".Capabilities", ".Template", ".Files"):
                if re.search(re.escape(bad) + r"\b", defs[name]):
                    problems.append(f"{name} (reached from {public}) uses {bad}, which an app chart's context lacks")
    return problems


def check_no_inline_secrets(c: Checks) -> list[str]:
    problems = []
    for path in template_files(c.chart):
        text = strip_template_comments(path.read_text(encoding="utf-8"))
        if re.search(r"^\s*kind:\s*Secret\s*$", text, flags=re.M):
            problems.append(f"{path.name}: renders a Secret; secrets are taken by reference only")
        if re.search(r"^\s*stringData:", text, flags=re.M):
            problems.append(f"{path.name}: has stringData (inline secret)")
    return problems


def check_hardening(c: Checks, values: dict) -> list[str]:
    problems = []
    sc = values.get("securityContext") or {}
    want = {
        "runAsNonRoot": True,
        "runAsUser": NONROOT_UID,
        "readOnlyRootFilesystem": True,
        "allowPrivilegeEscalation": False,
    }
    for key, expected in want.items():
        if sc.get(key) != expected:
            problems.append(f"values securityContext.{key} is {sc.get(key)!r}, want {expected!r}")
    if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
        problems.append("values securityContext.capabilities.drop lacks ALL")
    if (sc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
        problems.append("values securityContext.seccompProfile.type is not RuntimeDefault")
    psc = values.get("podSecurityContext") or {}
    if psc.get("runAsNonRoot") is not True or psc.get("runAsUser") != NONROOT_UID:
        problems.append("values podSecurityContext must set runAsNonRoot: true and runAsUser: 65532")
    if (psc.get("seccompProfile") or {}).get("type") != "RuntimeDefault":
        problems.append("values podSecurityContext.seccompProfile.type is not RuntimeDefault")
    container = defines(c.chart).get("mtls-gateway.container", "")
    if not re.search(r"securityContext:\s*\n\s*\{\{-\s*toYaml \. \| nindent", container) or ".Values.securityContext" not in container:
        problems.append("the container helper does not render .Values.securityContext")
    if not re.search(r"mountPath:\s*/tmp\s*$", container, flags=re.M):
        problems.append("the container helper mounts nothing at /tmp (root filesystem is read-only)")
    deployment = (c.chart / "templates/deployment.yaml").read_text(encoding="utf-8")
    if ".Values.podSecurityContext" not in deployment:
        problems.append("deployment.yaml does not render .Values.podSecurityContext")
    return problems


def check_probes_and_ports(c: Checks) -> list[str]:
    container = defines(c.chart).get("mtls-gateway.container", "")
    problems = []
    for probe, path in (("livenessProbe", "/live"), ("readinessProbe", "/ready")):
        if not re.search(probe + r":\s*\n\s*httpGet:\s*\n\s*path:\s*" + re.escape(path) + r"\s*\n\s*port:\s*mtls-metrics", container):
            problems.append(f"{probe} is not httpGet {path} on port mtls-metrics")
    if not re.search(r"- name: mtls-metrics\s*\n\s*containerPort: \{\{ \.Values\.ops\.port", container):
        problems.append("no container port named mtls-metrics on .Values.ops.port")
    for name in re.findall(r"- name: (mtls-[a-z-]+)\s*\n\s*containerPort", container):
        if len(name) > 15:
            problems.append(f"port name {name} is longer than 15 characters")
    annotations = defines(c.chart).get("mtls-gateway.podAnnotations", "")
    if "prometheus.io/scrape" not in annotations or "checksum/" not in annotations:
        problems.append("pod annotations lack prometheus.io/scrape or the config checksum")
    podmonitor = (c.chart / "templates/podmonitor.yaml").read_text(encoding="utf-8")
    if "apiVersion: monitoring.coreos.com/v1" not in podmonitor or "kind: PodMonitor" not in podmonitor:
        problems.append("podmonitor.yaml is not a monitoring.coreos.com/v1 PodMonitor")
    if "port: mtls-metrics" not in podmonitor:
        problems.append("the PodMonitor does not scrape port mtls-metrics")
    return problems


def check_grace_period(c: Checks) -> list[str]:
    problems = []
    helper = defines(c.chart).get("mtls-gateway.terminationGracePeriodSeconds", "")
    if not re.search(r"add\s+\(int \.Values\.shutdown\.gracePeriodSecs\)\s+5\b", helper):
        problems.append("terminationGracePeriodSeconds helper is not shutdown.gracePeriodSecs + 5")
    config = defines(c.chart).get("mtls-gateway.config", "")
    if '"grace_period_secs" (int .Values.shutdown.gracePeriodSecs)' not in config:
        problems.append("the gateway config does not take grace_period_secs from .Values.shutdown.gracePeriodSecs")
    deployment = (c.chart / "templates/deployment.yaml").read_text(encoding="utf-8")
    if 'terminationGracePeriodSeconds: {{ include "mtls-gateway.terminationGracePeriodSeconds" . }}' not in deployment:
        problems.append("deployment.yaml does not use the terminationGracePeriodSeconds helper")
    return problems


def check_config_paths_mounted(c: Checks) -> list[str]:
    """Every file the rendered config points at lies under a mountPath of the container."""
    defs = defines(c.chart)
    config = defs.get("mtls-gateway.config", "")
    container = defs.get("mtls-gateway.container", "")
    mounts = re.findall(r"mountPath:\s*(\S+)", container)
    if CONFIG_PATH not in mounts:
        return [f"{CONFIG_PATH} is not mounted by the container helper"]
    if f'"--config", "{CONFIG_PATH}"' not in container:
        return [f"the container is not started with --config {CONFIG_PATH}"]
    problems = []
    files = set(re.findall(r'"(/(?:etc|var/run/secrets)/mtls-gateway/[^"%]*(?:%d[^"]*)?)"', config))
    if not files:
        problems.append("found no file paths in the config helper: the scanner is broken")
    for f in sorted(files):
        if not any(f == m or f.startswith(m.rstrip("/") + "/") for m in mounts if not m.startswith("{{")):
            problems.append(f"config refers to {f}, which no volumeMount covers")
    return problems


def check_replica_id_per_pod(c: Checks) -> list[str]:
    """The gateway's default lifecycle.replica_id is $HOSTNAME plus the process id, and the process
    id is 1 in every container: the pod name is what makes the ids differ (leases need that). So
    the config the chart renders must never set replica_id (one ConfigMap serves every pod), and
    neither the container nor the pod may replace the pod's host name."""
    defs = defines(c.chart)
    problems = []
    config = defs.get("mtls-gateway.config", "")
    if not config:
        return ["no mtls-gateway.config helper"]
    if "replica_id" in config:
        problems.append("the config helper renders lifecycle.replica_id: every pod would share it")
    container = defs.get("mtls-gateway.container", "")
    if re.search(r"name:\s*\"?HOSTNAME\b", container):
        problems.append("the container helper sets HOSTNAME, which names the pod in leases")
    deployment = strip_template_comments((c.chart / "templates/deployment.yaml").read_text(encoding="utf-8"))
    for bad in ("hostNetwork:", "hostname:", "setHostnameAsFQDN:"):
        if bad in deployment:
            problems.append(f"deployment.yaml sets {bad} the pod's host name would no longer be its own name")
    return problems


def check_autoscaling_owns_replicas(c: Checks) -> list[str]:
    """With autoscaling.enabled the Deployment must not carry replicas (every upgrade would reset
    the HPA's count), and the HPA must target this chart's Deployment."""
    deployment = strip_template_comments((c.chart / "templates/deployment.yaml").read_text(encoding="utf-8"))
    problems = []
    if not re.search(r"\{\{-?\s*if not \.Values\.autoscaling\.enabled\s*-?\}\}\s*\n\s*replicas:", deployment):
        problems.append("deployment.yaml renders replicas without `if not .Values.autoscaling.enabled` around it")
    hpa_path = c.chart / "templates/hpa.yaml"
    if not hpa_path.exists():
        return problems + ["templates/hpa.yaml is missing"]
    hpa = strip_template_comments(hpa_path.read_text(encoding="utf-8"))
    if "kind: HorizontalPodAutoscaler" not in hpa or "apiVersion: autoscaling/v2" not in hpa:
        problems.append("hpa.yaml is not an autoscaling/v2 HorizontalPodAutoscaler")
    if not re.search(r"scaleTargetRef:\s*\n\s*apiVersion: apps/v1\s*\n\s*kind: Deployment\s*\n\s*name: \{\{ include \"mtls-gateway.fullname\" \. \| quote \}\}", hpa):
        problems.append("the HPA does not target the chart's Deployment (mtls-gateway.fullname)")
    if ".Values.autoscaling.enabled" not in hpa:
        problems.append("hpa.yaml is not conditional on autoscaling.enabled")
    return problems


def check_image_tag(c: Checks, values: dict) -> list[str]:
    app_version = str(load_yaml(c.chart / "Chart.yaml").get("appVersion"))
    tag = str(((values.get("image") or {}).get("tag")) or "")
    if tag != app_version:
        return [f"values image.tag {tag!r} differs from Chart.yaml appVersion {app_version!r}; keep them equal"]
    return []


def check_containerfile(c: Checks) -> list[str]:
    path = c.repo / "Containerfile"
    if not path.exists():
        return ["Containerfile is missing at the repository root"]
    text = path.read_text(encoding="utf-8")
    lines = [l.strip() for l in text.splitlines() if l.strip() and not l.lstrip().startswith("#")]
    problems = []
    froms = [l for l in lines if l.upper().startswith("FROM ")]
    if len(froms) < 2:
        problems.append("not multi-stage (fewer than two FROM lines)")
    if froms and "rust:1-bookworm" not in froms[0]:
        problems.append("the builder stage is not rust:1-bookworm")
    if froms and not re.search(r"debian:bookworm-slim|distroless/cc", froms[-1]):
        problems.append("the runtime stage is not debian:bookworm-slim or distroless cc")
    users = [l for l in lines if l.upper().startswith("USER ")]
    if not users or not re.fullmatch(rf"USER\s+{NONROOT_UID}(:{NONROOT_UID})?", users[-1]):
        problems.append(f"the last USER is not {NONROOT_UID}")
    runtime = text[text.rfind("\nFROM "):] if "\nFROM " in text else text
    copies = [l for l in runtime.splitlines() if l.strip().upper().startswith("COPY ")]
    if not any(l.strip().endswith(BINARY) and "--from=" in l for l in copies):
        problems.append(f"the runtime stage does not COPY --from=<builder> the binary to {BINARY}")
    for l in copies:
        if "--from=" not in l:
            problems.append(f"the runtime stage copies from the build context ({l.strip()}); only the binary belongs there")
    if "ca-certificates" not in runtime and "distroless" not in runtime:
        problems.append("the runtime stage has no ca-certificates")
    for pkg in ("cmake", "clang", "libclang-dev"):
        if not re.search(rf"\b{re.escape(pkg)}\b", text):
            problems.append(f"the builder does not install {pkg} (boring-sys needs it)")
    if not re.search(r"cargo build[^\n]*--release[^\n]*--locked|cargo build[^\n]*--locked[^\n]*--release", text):
        problems.append("the build is not `cargo build --release --locked`")
    return problems


METRIC_DEF = re.compile(r'"(mtls_gateway_[a-z0-9_]+)"')


def check_rule_metrics(c: Checks) -> list[str]:
    """Every mtls_gateway_* name in files/prometheus-rules.yaml is registered somewhere in src/
    (a renamed metric must not leave an alert that never fires). Histogram series (_bucket,
    _sum, _count) count as their histogram."""
    rules = (c.chart / "files" / "prometheus-rules.yaml").read_text(encoding="utf-8")
    src = c.repo / "src"
    if not src.is_dir():
        return []  # a chart-only copy (self-test): nothing to compare with
    defined: set[str] = set()
    for path in src.rglob("*.rs"):
        defined.update(METRIC_DEF.findall(path.read_text(encoding="utf-8")))
    if not defined:
        return ["found no metric names in src/: the scanner is broken"]
    used = set(re.findall(r"\bmtls_gateway_[a-z0-9_]+", rules))
    return [f"the rules use {name}, which no metric in src/ registers" for name in sorted(used)
            if re.sub(r"_(bucket|sum|count)$", "", name) not in defined and name not in defined]


# promtool unit tests of the certificate lifecycle alerts (the other alerts are tested by
# tests/prometheus-rules.test.yaml through cargo test ops::alert_rules_*). The lifecycle counters
# appear at their first increment, so the "new series" cases matter.
LIFECYCLE_ALERT_TESTS = """
rule_files: [rules.yaml]
evaluation_interval: 1m
tests:
  # A first failure on a fresh process: the series appears at 1 (no earlier sample).
  - interval: 1m
    input_series:
      - series: 'mtls_gateway_certificate_renewals_total{pod="a",result="failed"}'
        values: '_x10 1x100'
    alert_rule_test:
      - {eval_time: 5m, alertname: MtlsGatewayCertificateRenewalFailing, exp_alerts: []}
      - eval_time: 15m
        alertname: MtlsGatewayCertificateRenewalFailing
        exp_alerts: [{exp_labels: {severity: warning, pod: a, result: failed}}]
      - {eval_time: 125m, alertname: MtlsGatewayCertificateRenewalFailing, exp_alerts: []}
  # A count that grows; a steady old count does not fire.
  - interval: 1m
    input_series:
      - series: 'mtls_gateway_certificate_renewals_total{pod="b",result="failed"}'
        values: '0x80 1x60'
      - series: 'mtls_gateway_certificate_renewals_total{pod="c",result="failed"}'
        values: '5x140'
    alert_rule_test:
      - {eval_time: 75m, alertname: MtlsGatewayCertificateRenewalFailing, exp_alerts: []}
      - eval_time: 85m
        alertname: MtlsGatewayCertificateRenewalFailing
        exp_alerts: [{exp_labels: {severity: warning, pod: b, result: failed}}]
  - interval: 1m
    input_series:
      - series: 'mtls_gateway_certificate_cutover_refused_total{pod="a"}'
        values: '_x20 1x100'
    alert_rule_test:
      - eval_time: 25m
        alertname: MtlsGatewayCertificateCutoverRefused
        exp_alerts: [{exp_labels: {severity: warning, pod: a}}]
      - {eval_time: 100m, alertname: MtlsGatewayCertificateCutoverRefused, exp_alerts: []}
  - interval: 1m
    input_series:
      - series: 'mtls_gateway_notifications_total{event="certificate.expiring",result="failed"}'
        values: '0x10 1x100'
      - series: 'mtls_gateway_notifications_total{event="certificate.expiring",result="delivered"}'
        values: '0+1x110'
    alert_rule_test:
      - {eval_time: 5m, alertname: MtlsGatewayNotificationsFailing, exp_alerts: []}
      - eval_time: 20m
        alertname: MtlsGatewayNotificationsFailing
        exp_alerts: [{exp_labels: {severity: warning, event: certificate.expiring, result: failed}}]
      - {eval_time: 90m, alertname: MtlsGatewayNotificationsFailing, exp_alerts: []}
"""


def check_lifecycle_alerts(c: Checks) -> list[str]:
    promtool = shutil.which("promtool")
    if not promtool:
        c.results.append(Result("lifecycle alerts: promtool not found (Debian package prometheus), skipped", True))
        return []
    with tempfile.TemporaryDirectory(prefix="helm_check_rules_") as tmp:
        shutil.copy2(c.chart / "files" / "prometheus-rules.yaml", Path(tmp) / "rules.yaml")
        # Expected annotations are the rule's own, with {{ $labels.x }} filled in (the test is
        # about when each alert fires, not about its wording).
        rules = load_yaml(c.chart / "files" / "prometheus-rules.yaml")
        annotations = {r["alert"]: r.get("annotations", {}) for g in rules["groups"] for r in g["rules"] if "alert" in r}
        tests = yaml.safe_load(LIFECYCLE_ALERT_TESTS)
        for case in tests["tests"]:
            for art in case["alert_rule_test"]:
                for exp in art["exp_alerts"]:
                    labels = exp["exp_labels"]
                    exp["exp_annotations"] = {
                        k: re.sub(r"\{\{\s*\$labels\.(\w+)\s*\}\}", lambda m: str(labels.get(m.group(1), "")), v)
                        for k, v in annotations.get(art["alertname"], {}).items()}
        (Path(tmp) / "test.yaml").write_text(yaml.safe_dump(tests, sort_keys=False), encoding="utf-8")
        problems = []
        for args in (["check", "rules", "rules.yaml"], ["test", "rules", "test.yaml"]):
            out = subprocess.run([promtool, *args], cwd=tmp, capture_output=True, text=True, timeout=120)
            if out.returncode != 0:
                problems.append(f"promtool {' '.join(args)}: {(out.stdout + out.stderr).strip()[-1500:]}")
        return problems


# Values the schema must reject: (description, mutation of a deep copy of values.yaml).
def _set(path: str, value: Any) -> Callable[[dict], None]:
    def apply(v: dict) -> None:
        node = v
        parts = path.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return apply


NEGATIVE_CASES: list[tuple[str, Callable[[dict], None]]] = [
    ("unknown top-level key", _set("replicas", 3)),
    ("misspelled nested key store.vault.kvversion", _set("store.vault.kvversion", 2)),
    ("store.vault.kvVersion 3", _set("store.vault.kvVersion", 3)),
    ("store.vault.kvVersion as a string", _set("store.vault.kvVersion", "2")),
    ("unknown auth method userpass", _set("store.vault.auth.method", "userpass")),
    ("token auth without a Secret name", _set("store.vault.auth.method", "token")),
    ("approle auth without Secret names", _set("store.vault.auth.method", "approle")),
    ("inline Vault token value", _set("store.vault.auth.token.value", "hvs.not-a-real-token")),
    ("inline CA PEM in caSecret", _set("store.vault.caSecret.pem", "-----BEGIN CERTIFICATE-----")),
    ("mode daemonset", _set("mode", "daemonset")),
    ("proxy.port 70000", _set("proxy.port", 70000)),
    ("Vault address without scheme", _set("store.vault.address", "vault:8200")),
    ("extraEnv item with both value and valueFrom",
     _set("extraEnv", [{"name": "X", "value": "a", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}])),
    ("image with neither tag nor digest", lambda v: (v["image"].update(tag="", digest=""))),
    ("podMonitor.interval '30 seconds'", _set("podMonitor.interval", "30 seconds")),
    ("projected token shorter than 600 s", _set("store.vault.auth.kubernetes.projectedToken.expirationSeconds", 60)),
    ("upstream.caSecrets item with an inline PEM", _set("upstream.caSecrets", [{"name": "a", "key": "ca.crt", "pem": "x"}])),
    ("proxy.auth oauth (not none/required)", _set("proxy.auth", "oauth")),
    ("proxy.bindAddress localhost (not an IP literal)", _set("proxy.bindAddress", "localhost")),
    ("auth.oauth1 key with an inline secret", _set("auth.oauth1.keys", [{"key": "k", "secret": "s3cr3t"}])),
    ("auth.jwt enabled without a Secret name", _set("auth.jwt.enabled", True)),
    ("auth.jwt enabled with a key Secret but no issuer or audience",
     lambda v: v["auth"]["jwt"].update(enabled=True, keySecretRef={"name": "idp", "key": "jwt-key"})),
    ("unmapped.policy forward", _set("unmapped.policy", "forward")),
    ("store.file.dir (the gateway's key is path)", _set("store.file.dir", "/data")),
    ("lifecycle.renewAt 1 (a share of the lifetime, at most 0.95)", _set("lifecycle.renewAt", 1)),
    ("lifecycle.replicaId (each pod's own name is used)", _set("lifecycle.replicaId", "gw")),
    ("notifications webhook with an inline secret",
     _set("notifications.webhooks", [{"url": "https://h.example/x", "secret": "0123456789abcdef"}])),
    ("notifications webhook without secretRef", _set("notifications.webhooks", [{"url": "https://h.example/x"}])),
    ("notifications webhook URL without a scheme",
     _set("notifications.webhooks", [{"url": "h.example/x", "secretRef": {"name": "s", "key": "k"}}])),
    ("notifications.expiryDays with 0", _set("notifications.expiryDays", [30, 0])),
    ("redis URL with credentials", _set("redis.url", "redis://gw:s3cr3t@redis:6379")),
    ("redis URL with another scheme", _set("redis.url", "http://redis:6379")),
    ("redis URL with a query", _set("redis.url", "redis://redis:6379/?password=x")),
    ("redis.urls item with credentials", _set("redis.urls", ["redis://:pw@a:6379"])),
    ("redis inline password", _set("redis.password", "s3cr3t")),
    ("redis.passwordSecret with an inline value", _set("redis.passwordSecret.value", "s3cr3t")),
    ("redis.caSecret with an inline PEM", _set("redis.caSecret.pem", "-----BEGIN CERTIFICATE-----")),
    ("redis.keyPrefix with braces (cluster hash tags)", _set("redis.keyPrefix", "{gw}:")),
    ("redis.keyPrefix empty", _set("redis.keyPrefix", "")),
    ("redis.commandTimeoutMs 0", _set("redis.commandTimeoutMs", 0)),
    ("redis.connectTimeoutMs above 60000", _set("redis.connectTimeoutMs", 60001)),
    ("redis.retrySecs 0", _set("redis.retrySecs", 0)),
    ("redis.enabled as a string", _set("redis.enabled", "true")),
    ("store.vault.addresses item without scheme", _set("store.vault.addresses", ["vault-0:8200"])),
    ("store.vault.addresses with a node twice", _set("store.vault.addresses", ["https://v0:8200", "https://v0:8200"])),
    ("autoscaling.minReplicas 0", _set("autoscaling.minReplicas", 0)),
    ("autoscaling.targetCPUUtilizationPercentage 0", _set("autoscaling.targetCPUUtilizationPercentage", 0)),
    ("unknown autoscaling key targetMemoryUtilizationPercentage", _set("autoscaling.targetMemoryUtilizationPercentage", 80)),
    ("podDisruptionBudget.maxUnavailable 'one'", _set("podDisruptionBudget.maxUnavailable", "one")),
    ("podDisruptionBudget.minAvailable -1", _set("podDisruptionBudget.minAvailable", -1)),
    ("podSpread.topologyKeys with a space", _set("podSpread.topologyKeys", ["kubernetes.io/host name"])),
]


def run_all(repo: Path) -> Checks:
    c = Checks(repo)
    chart = c.chart
    if not chart.is_dir():
        c.add("chart directory exists", f"{chart} is not a directory")
        return c

    for path in plain_yaml_files(chart):
        c.run(f"YAML parses: {path.relative_to(chart)}", lambda path=path: (load_yaml(path), [])[1])
    c.run("Chart.yaml metadata", lambda: check_chart_yaml(c))

    try:
        values = load_yaml(chart / "values.yaml")
        schema = json.loads((chart / "values.schema.json").read_text(encoding="utf-8"))
    except Exception as exc:
        c.add("values.yaml and values.schema.json load", f"{type(exc).__name__}: {exc}")
        return c
    if not isinstance(values, dict):
        c.add("values.yaml is a mapping", f"got {type(values).__name__}")
        return c

    c.run("values.schema.json is draft-07", lambda: check_schema_meta(c, schema))
    c.run("values.schema.json is strict and described", lambda: check_schema_strict(c, schema))
    c.run("values.schema.json and values.yaml declare the same keys", lambda: check_schema_covers_values(c, schema, values))
    c.run("values.yaml validates against values.schema.json", lambda: schema_errors(schema, values))
    for overlay in sorted((chart / "ci").glob("*.yaml")) if (chart / "ci").is_dir() else []:
        c.run(f"ci/{overlay.name} merged over values.yaml validates",
              lambda overlay=overlay: schema_errors(schema, helm_merge(values, load_yaml(overlay) or {})))
    for desc, mutate in NEGATIVE_CASES:
        def negative(mutate=mutate) -> list[str]:
            bad = copy.deepcopy(values)
            mutate(bad)
            return [] if schema_errors(schema, bad) else ["the schema accepted it"]
        c.run(f"schema rejects {desc}", negative)

    c.run("every key in values.yaml has a comment", lambda: check_values_documented(c))
    c.run("every .Values path in templates exists in values.yaml", lambda: check_template_values_refs(c, values))
    for path in template_files(chart):
        c.run(f"template blocks balanced: {path.name}", lambda path=path: check_template_blocks(c, path))
    c.run("every included helper is defined", lambda: check_includes_defined(c))
    c.run("sidecar helpers need no .Chart", lambda: check_sidecar_helpers_need_no_chart(c))
    c.run("no inline secrets in templates", lambda: check_no_inline_secrets(c))
    c.run("hardened securityContext and read-only root", lambda: check_hardening(c, values))
    c.run("probes, metrics port, scrape annotations, PodMonitor", lambda: check_probes_and_ports(c))
    c.run("terminationGracePeriodSeconds = shutdown grace + 5", lambda: check_grace_period(c))
    c.run("config file paths are mounted", lambda: check_config_paths_mounted(c))
    c.run("each pod keeps its own lifecycle replica id", lambda: check_replica_id_per_pod(c))
    c.run("with autoscaling the HPA, not the Deployment, sets replicas", lambda: check_autoscaling_owns_replicas(c))
    c.run("image.tag equals appVersion", lambda: check_image_tag(c, values))
    c.run("Containerfile", lambda: check_containerfile(c))
    c.run("alert rules name only metrics the gateway's source registers", lambda: check_rule_metrics(c))
    c.run("lifecycle alerts pass promtool (check rules, unit tests)", lambda: check_lifecycle_alerts(c))
    return c


# ---------------------------------------------------------------------------------------------
# Self-test: every deliberate break of a temp copy must be caught by the named check.


def _edit(rel: str, fn: Callable[[str], str]) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        p = root / rel
        new = fn(p.read_text(encoding="utf-8"))
        p.write_text(new, encoding="utf-8")
    return apply


def _replace_once(old: str, new: str) -> Callable[[str], str]:
    def fn(text: str) -> str:
        if old not in text:
            raise AssertionError(f"self-test fixture out of date: {old!r} not found")
        return text.replace(old, new, 1)
    return fn


C = str(CHART_REL)
BREAKS: list[tuple[str, str, Callable[[Path], None]]] = [
    ("template reads a value that does not exist", "every .Values path in templates exists in values.yaml",
     _edit(f"{C}/templates/service.yaml", _replace_once(".Values.service.type", ".Values.service.kind"))),
    ("helper reads a value through a missing parent", "every .Values path in templates exists in values.yaml",
     _edit(f"{C}/templates/_helpers.tpl", _replace_once(".Values.store.vault.prefix", ".Values.store.vaults.prefix"))),
    ("undocumented, undeclared key in values.yaml", "every key in values.yaml has a comment",
     _edit(f"{C}/values.yaml", lambda t: t + "undocumentedKey: 1\n")),
    ("undeclared key in values.yaml", "values.yaml validates against values.schema.json",
     _edit(f"{C}/values.yaml", lambda t: t + "# documented but not in the schema\nstrayKey: 1\n")),
    ("Chart.yaml is not YAML", "YAML parses: Chart.yaml",
     _edit(f"{C}/Chart.yaml", lambda t: t + "keywords: [unclosed\n")),
    ("ci overlay sets replicaCount -1", "ci/token-values.yaml merged over values.yaml validates",
     _edit(f"{C}/ci/token-values.yaml", lambda t: t + "replicaCount: -1\n")),
    ("schema object loses additionalProperties", "values.schema.json is strict and described",
     _edit(f"{C}/values.schema.json", lambda t: json.dumps(_drop_addl(json.loads(t), "store"), indent=2))),
    ("schema loses kvVersion enum", "schema rejects store.vault.kvVersion 3",
     _edit(f"{C}/values.schema.json", lambda t: t.replace('"enum": [\n                1,\n                2\n              ]', '"minimum": 1'))),
    ("unclosed if in a template", "template blocks balanced: service.yaml",
     _edit(f"{C}/templates/service.yaml", lambda t: t.rsplit("{{- end }}", 1)[0])),
    ("include of an undefined helper", "every included helper is defined",
     _edit(f"{C}/templates/configmap.yaml", _replace_once('include "mtls-gateway.labels"', 'include "mtls-gateway.label"'))),
    ("template renders an inline Secret", "no inline secrets in templates",
     _edit(f"{C}/templates/serviceaccount.yaml", lambda t: t + "---\napiVersion: v1\nkind: Secret\nstringData:\n  token: x\n")),
    ("container may run as root", "hardened securityContext and read-only root",
     _edit(f"{C}/values.yaml", _replace_once("  readOnlyRootFilesystem: true", "  readOnlyRootFilesystem: false"))),
    ("grace period decoupled", "terminationGracePeriodSeconds = shutdown grace + 5",
     _edit(f"{C}/templates/_helpers.tpl", _replace_once("add (int .Values.shutdown.gracePeriodSecs) 5", "add (int .Values.shutdown.gracePeriodSecs) 0"))),
    ("readiness probe on the wrong path", "probes, metrics port, scrape annotations, PodMonitor",
     _edit(f"{C}/templates/_helpers.tpl", _replace_once("path: /ready", "path: /healthz"))),
    ("config points at an unmounted file", "config file paths are mounted",
     _edit(f"{C}/templates/_helpers.tpl", _replace_once('"/etc/mtls-gateway/vault-ca/ca.crt"', '"/etc/mtls-gateway/vault-cacert/ca.crt"'))),
    ("sidecar helper uses .Chart", "sidecar helpers need no .Chart",
     _edit(f"{C}/templates/_helpers.tpl", _replace_once('default "mtls-gateway" .Values.nameOverride', 'default .Chart.Name .Values.nameOverride'))),
    ("image tag drifts from appVersion", "image.tag equals appVersion",
     _edit(f"{C}/Chart.yaml", _replace_once('appVersion: "', 'appVersion: "9'))),
    ("config renders one replica_id for every pod", "each pod keeps its own lifecycle replica id",
     _edit(f"{C}/templates/_helpers.tpl", _replace_once('"cutover_check" $lc.cutoverCheck) -}}',
                                                        '"cutover_check" $lc.cutoverCheck "replica_id" "gw") -}}'))),
    ("Deployment keeps replicas under the HPA", "with autoscaling the HPA, not the Deployment, sets replicas",
     _edit(f"{C}/templates/deployment.yaml", _replace_once("{{- if not .Values.autoscaling.enabled }}\n  replicas:", "{{- if true }}\n  replicas:"))),
    ("config points at an unmounted Redis file", "config file paths are mounted",
     _edit(f"{C}/templates/_helpers.tpl", _replace_once('"/etc/mtls-gateway/redis/password"', '"/etc/mtls-gateway/redis-auth/password"'))),
    ("Containerfile runs as root", "Containerfile",
     _edit("Containerfile", lambda t: re.sub(r"(?m)^USER .*$", "USER root", t))),
]


def _drop_addl(schema: dict, prop: str) -> dict:
    schema["properties"][prop].pop("additionalProperties", None)
    return schema


def self_test() -> Checks:
    outer = Checks(REPO)
    with tempfile.TemporaryDirectory(prefix="helm_check_") as tmp:
        pristine = Path(tmp) / "pristine"
        _copy_repo_subset(pristine)
        base = run_all(pristine)
        outer.add("pristine copy passes", [f"{r.name}: {r.detail}" for r in base.failed])
        for desc, expected, apply in BREAKS:
            root = Path(tmp) / re.sub(r"\W+", "_", desc)
            _copy_repo_subset(root)
            try:
                apply(root)
            except AssertionError as exc:
                outer.add(f"break is caught: {desc}", str(exc))
                continue
            res = run_all(root)
            failed = {r.name: r.detail for r in res.failed}
            if expected in failed:
                outer.add(f"break is caught: {desc}", None)
                outer.results[-1].detail = f"{expected}: {failed[expected][:160]}"
            else:
                outer.add(f"break is caught: {desc}",
                          f"expected check {expected!r} to fail; failed instead: {sorted(failed) or 'nothing'}")
    return outer


def _copy_repo_subset(dest: Path) -> None:
    shutil.copytree(REPO / CHART_REL, dest / CHART_REL)
    if (REPO / "Containerfile").exists():
        shutil.copy2(REPO / "Containerfile", dest / "Containerfile")


def report(c: Checks, verbose: bool) -> int:
    for r in c.results:
        if not r.ok:
            print(f"FAIL {r.name}: {r.detail}")
        elif verbose:
            print(f"PASS {r.name}" + (f"  [{r.detail}]" if r.detail else ""))
    passed = sum(r.ok for r in c.results)
    failed = len(c.results) - passed
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--self-test", action="store_true",
                    help="break temp copies of the chart on purpose and check that every break is caught")
    ap.add_argument("-q", "--quiet", action="store_true", help="print only failures and the summary")
    args = ap.parse_args()
    checks = self_test() if args.self_test else run_all(REPO)
    return report(checks, verbose=not args.quiet)


if __name__ == "__main__":
    sys.exit(main())
