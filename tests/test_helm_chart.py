"""The Helm chart, checked by schema and structure: no helm binary exists here to render it.

What a render would catch first is checked directly: values against the schema (and the schema against known-bad
values), every `.Values` path a template reads, balanced template blocks, defined includes, the settings file the
ConfigMap renders (loaded by the exporter's own settings model), the rules copy, and the README's value table.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from mx_exporter.settings import DomainSettings, Settings, leaf_keys, load_settings

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "helm" / "mx-exporter"
TEMPLATES = sorted((CHART / "templates").glob("*"))
CI_FILES = sorted((CHART / "ci").glob("*.yaml"))
RULES = ROOT / "deploy" / "prometheus" / "mx-exporter.rules.yml"
RULES_COPY = CHART / "files" / "mx-exporter.rules.yml"
# Settings the chart sets itself: listen_address and web.config_file in the ConfigMap, shard through env.
CHART_MANAGED = {"listen_address", "web.config_file", "shard.index", "shard.count"}
SUBCHART_KEYS = {"global", "enabled"}
WEB_CONFIG_PATH = "/etc/mx-exporter-web/web-config.yml"
BLOCK_OPENERS = {"if", "range", "with", "define", "block"}
VALUES_REF = re.compile(r"\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)")
ACTION = re.compile(r"\{\{-?\s*(.*?)\s*-?\}\}", re.DOTALL)


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


VALUES: dict[str, Any] = load_yaml(CHART / "values.yaml")
SCHEMA: dict[str, Any] = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))


def merge(base: Any, override: Any) -> Any:
    """Helm's coalescing of a values file over the defaults: mappings merge, anything else replaces."""
    if isinstance(base, dict) and isinstance(override, dict):
        merged = dict(base)
        for key, value in override.items():
            merged[key] = merge(base.get(key), value) if key in base else value
        return merged
    return override


def values_sets() -> list[tuple[str, dict[str, Any]]]:
    return [("values.yaml", VALUES)] + [(p.name, merge(VALUES, load_yaml(p))) for p in CI_FILES]


def schema_errors(values: Any) -> list[str]:
    validator = jsonschema.Draft7Validator(SCHEMA)
    return [
        f"{'.'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}"
        for e in validator.iter_errors(values)
    ]


def test_chart_has_ci_values_and_templates() -> None:
    assert {p.name for p in CI_FILES} >= {"default-values.yaml", "sharded-values.yaml", "probe-values.yaml"}
    names = {p.name for p in TEMPLATES}
    for kind in (
        "deployment",
        "statefulset",
        "service",
        "configmap",
        "secret",
        "serviceaccount",
        "servicemonitor",
    ):
        assert f"{kind}.yaml" in names
    for kind in ("prometheusrule", "networkpolicy", "poddisruptionbudget"):
        assert f"{kind}.yaml" in names
    assert "NOTES.txt" in names


def test_schema_is_draft07_and_closed_at_top() -> None:
    jsonschema.Draft7Validator.check_schema(SCHEMA)
    assert SCHEMA["$schema"] == "http://json-schema.org/draft-07/schema#"
    assert SCHEMA["additionalProperties"] is False
    # global and enabled are what Helm adds when this chart is a subchart (helm/helm#10392).
    assert set(SCHEMA["properties"]) == set(VALUES) | SUBCHART_KEYS, (
        "schema and values.yaml differ at the top"
    )


@pytest.mark.parametrize(("name", "values"), values_sets(), ids=lambda v: v if isinstance(v, str) else "")
def test_values_validate_against_schema(name: str, values: dict[str, Any]) -> None:
    assert schema_errors(values) == [], name


BAD_VALUES = [
    ({"replica": 2}, "Additional properties are not allowed ('replica'"),
    ({"shards": 0}, "shards: 0 is less than the minimum of 1"),
    ({"image": {"pullPolicy": "Sometimes"}}, "image.pullPolicy: 'Sometimes' is not one of"),
    ({"config": {"smtp": {"port": 0}}}, "config.smtp.port: 0 is less than the minimum of 1"),
    (
        {"config": {"smtp": {"greeting_timeout": 0}}},
        "config.smtp.greeting_timeout: 0 is less than or equal to",
    ),
    ({"config": {"shard": {"index": 1}}}, "Additional properties are not allowed ('shard'"),
    ({"config": {"listen_address": ":9"}}, "Additional properties are not allowed ('listen_address'"),
    ({"config": {"ehlo_name": "localhost"}}, "config.ehlo_name: 'localhost' does not match"),
    ({"config": {"log_level": "loud"}}, "config.log_level: 'loud' is not one of"),
    ({"config": {"domains": [{"name": "example.org", "expect": {"tiers": 2}}]}}, "config.domains.0: "),
    ({"webConfig": {"scheme": "http"}}, "webConfig.scheme: 'http' is not one of"),
    ({"serviceMonitor": {"probeTargets": [{"interval": "1m"}]}}, "'target' is a required property"),
    ({"serviceMonitor": {"interval": "30 seconds"}}, "serviceMonitor.interval: '30 seconds' does not match"),
    ({"networkPolicy": {"dnsPorts": []}}, "networkPolicy.dnsPorts: [] should be non-empty"),
]


@pytest.mark.parametrize(("override", "message"), BAD_VALUES)
def test_schema_rejects_bad_values(override: dict[str, Any], message: str) -> None:
    errors = schema_errors(merge(VALUES, override))
    assert any(message in e for e in errors), errors


def test_every_non_template_yaml_parses() -> None:
    files = [
        CHART / "Chart.yaml",
        CHART / "values.yaml",
        *CI_FILES,
        *sorted((CHART / "files").glob("*.y*ml")),
    ]
    assert len(files) >= 6
    for path in files:
        assert isinstance(load_yaml(path), dict), f"{path} is not a YAML mapping"


def test_chart_yaml_fields() -> None:
    chart = load_yaml(CHART / "Chart.yaml")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == CHART.name
    assert chart["type"] == "application"
    assert re.fullmatch(r"\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?", chart["version"])
    assert chart["appVersion"] == project["version"], "appVersion must follow pyproject.toml's version"
    assert chart["kubeVersion"] == ">=1.28.0-0", "the pod-index label needs Kubernetes 1.28"
    assert chart["description"].strip()


def test_rules_copy_is_byte_identical() -> None:
    assert RULES_COPY.read_bytes() == RULES.read_bytes(), (
        f"{RULES_COPY} is stale: run scripts/update_helm_rules.py"
    )


def test_prometheusrule_embeds_the_rules_unchanged() -> None:
    """The template nests the file under spec: with nindent 2; done here the same way, it yields the same groups."""
    template = (CHART / "templates" / "prometheusrule.yaml").read_text(encoding="utf-8")
    assert re.search(
        r'^spec:\n(?:  #.*\n)*  \{\{- \.Files\.Get "files/mx-exporter\.rules\.yml" \| nindent 2 \}\}$',
        template,
        re.MULTILINE,
    ), "spec must be exactly the rules file, indented by 2"
    content = RULES_COPY.read_text(encoding="utf-8")
    nested = "spec:" + "".join("\n  " + line for line in content.split("\n"))
    assert yaml.safe_load(nested)["spec"] == load_yaml(RULES)
    assert load_yaml(RULES)["groups"], "the rules file has no groups"


def missing_values_refs(text: str, values: dict[str, Any]) -> list[str]:
    """`.Values` paths in a template that values.yaml lacks (below a free-form `{}` mapping anything goes)."""
    missing = []
    for match in VALUES_REF.finditer(text):
        node: Any = values
        for part in match.group(1).strip(".").split("."):
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, dict) and not node:
                break
            else:
                missing.append(match.group(1).strip("."))
                break
    return missing


def test_values_ref_checker_finds_a_missing_key() -> None:
    text = "{{ .Values.service.port }} {{ .Values.servce.port }} {{ $.Values.webConfig.config.anything }}"
    assert missing_values_refs(text, VALUES) == ["servce.port"]


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: p.name)
def test_templates_reference_only_existing_values(template: Path) -> None:
    assert missing_values_refs(template.read_text(encoding="utf-8"), VALUES) == []


def block_problems(text: str) -> list[str]:
    """Unbalanced `{{ }}` or if/with/range/define blocks, described; empty when balanced."""
    problems = []
    if text.count("{{") != text.count("}}"):
        problems.append(f"{text.count('{{')} '{{{{' but {text.count('}}')} '}}}}'")
    stack: list[str] = []
    for match in ACTION.finditer(text):
        body = match.group(1)
        if "{{" in body:
            problems.append(f"nested '{{{{' in action {body[:40]!r}")
        if body.startswith("/*"):
            continue
        word = re.split(r"[\s(]", body, maxsplit=1)[0]
        if word in BLOCK_OPENERS:
            stack.append(word)
        elif word == "else" and (not stack or stack[-1] not in ("if", "with", "range")):
            problems.append("else outside if/with/range")
        elif word == "end":
            if not stack:
                problems.append("end without an open block")
            else:
                stack.pop()
    problems.extend(f"unclosed {word}" for word in stack)
    return problems


def undefined_variables(text: str) -> list[str]:
    """`$name`s used but never declared (Go templates refuse to parse those); `$` and `$_` are built in."""
    bodies = [m.group(1) for m in ACTION.finditer(text) if not m.group(1).startswith("/*")]
    declared = {"", "_"}
    for body in bodies:
        declared |= set(re.findall(r"\$(\w+)\s*(?:,|:=|=)", body))
    used = {name for body in bodies for name in re.findall(r"\$(\w*)", body)}
    return sorted(used - declared)


def test_variable_checker_catches_an_undeclared_variable() -> None:
    text = "{{- $a := 1 }}{{ range $k, $v := .x }}{{ $k }}{{ $v }}{{ end }}{{ $.Values.a }}{{ $a }}"
    assert undefined_variables(text) == []
    assert undefined_variables("# the rules keep {{ $labels.domain }}") == ["labels"]


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: p.name)
def test_templates_declare_their_variables(template: Path) -> None:
    assert undefined_variables(template.read_text(encoding="utf-8")) == []


def test_block_checker_catches_unbalanced_templates() -> None:
    assert block_problems("{{- if .a }}x{{- else }}y{{- end }}") == []
    assert block_problems("{{- if .a }}{{ with .b }}x{{ end }}") == ["unclosed if"]
    assert block_problems("{{ .a }}{{ end }}") == ["end without an open block"]
    assert block_problems("{{ .a }") == ["1 '{{' but 0 '}}'"]


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda p: p.name)
def test_templates_balance_their_blocks(template: Path) -> None:
    assert block_problems(template.read_text(encoding="utf-8")) == []


def test_includes_and_files_exist() -> None:
    texts = {p.name: p.read_text(encoding="utf-8") for p in TEMPLATES}
    defined = {name for text in texts.values() for name in re.findall(r'define "([^"]+)"', text)}
    for name, text in texts.items():
        for used in re.findall(r'(?:include|template) "([^"]+)"', text):
            assert used in defined, f"{name} includes undefined {used!r}"
        for used in re.findall(r'\.Files\.Get "([^"]+)"', text):
            assert (CHART / used).is_file(), f"{name} reads missing file {used}"
        for used in re.findall(r'\$\.Template\.BasePath "/([^"]+)"', text):
            assert (CHART / "templates" / used).is_file(), f"{name} checksums missing template {used}"


def rendered_config(values: dict[str, Any]) -> dict[str, Any]:
    """The settings file configmap.yaml renders: its literal keys, then `toYaml .Values.config`."""
    host = values["listenHost"]
    host = f"[{host}]" if ":" in host else host  # configmap.yaml's $listenHost
    config: dict[str, Any] = {"listen_address": f"{host}:{values['service']['port']}"}
    if values["webConfig"]["enabled"]:
        config["web"] = {"config_file": WEB_CONFIG_PATH}
    config.update(values["config"])
    return config


def literal_config_keys(template: str) -> set[str]:
    """Dotted keys written literally (not by toYaml) inside the ConfigMap's config.yml block."""
    block = template.split("config.yml: |\n", 1)[1]
    keys, parents = set(), {}
    for line in block.splitlines():
        match = re.match(r"^( +)([a-z_]+):", line)
        if match:
            depth = (len(match.group(1)) - 4) // 2
            parents[depth] = match.group(2)
            keys.add(".".join(parents[d] for d in range(depth + 1)))
    return keys


def test_configmap_renders_only_settings_keys() -> None:
    template = (CHART / "templates" / "configmap.yaml").read_text(encoding="utf-8")
    assert literal_config_keys(template) == {"listen_address", "web", "web.config_file"}
    assert WEB_CONFIG_PATH.rsplit("/", 1)[0] in (CHART / "templates" / "_helpers.tpl").read_text(
        encoding="utf-8"
    )
    assert "{{- toYaml .Values.config | nindent 4 }}" in template
    settings_keys = set(leaf_keys())
    groups = {key.rsplit(".", 1)[0] for key in settings_keys if "." in key}
    for name, values in values_sets():
        for key in flatten(rendered_config(values), stop_at={"domains"}):
            assert key in settings_keys or key in groups, f"{name}: {key} is not an exporter setting"


def test_shard_environment_names_settings() -> None:
    pod = (CHART / "templates" / "_pod.tpl").read_text(encoding="utf-8")
    assert "fieldPath: metadata.labels['apps.kubernetes.io/pod-index']" in pod
    for env in re.findall(r"name: (MX_EXPORTER_\w+)", pod):
        key = env.removeprefix("MX_EXPORTER_").lower().replace("__", ".")
        assert key in leaf_keys(), f"{env} sets no setting"
    assert {"MX_EXPORTER_SHARD__INDEX", "MX_EXPORTER_SHARD__COUNT"} <= set(
        re.findall(r"MX_EXPORTER_\w+", pod)
    )


@pytest.mark.parametrize(("name", "values"), values_sets(), ids=lambda v: v if isinstance(v, str) else "")
def test_rendered_settings_load_in_the_exporter(name: str, values: dict[str, Any], tmp_path: Path) -> None:
    values = merge(values, {"config": {"ehlo_name": values["config"]["ehlo_name"] or "mx-probe.example.net"}})
    # The settings check that CA files are readable: in the pod the chart mounts them (extraVolumeMounts); here
    # each mounted directory is a temporary one holding the named file.
    text = yaml.safe_dump(rendered_config(values))
    for mount in values.get("extraVolumeMounts") or []:
        local = tmp_path / mount["name"]
        text = text.replace(mount["mountPath"] + "/", f"{local}/")
        for name in re.findall(re.escape(f"{local}/") + r"([\w.-]+)", text):
            local.mkdir(exist_ok=True)
            (local / name).write_text("mounted\n", encoding="utf-8")
    path = tmp_path / "config.yml"
    path.write_text(text, encoding="utf-8")
    settings = load_settings(str(path))
    assert len(settings.domains) == len(values["config"]["domains"])
    assert settings.listen_address.endswith(f":{values['service']['port']}")


def test_an_ipv6_listen_host_renders_a_listen_address_the_exporter_takes(tmp_path: Path) -> None:
    template = (CHART / "templates" / "configmap.yaml").read_text(encoding="utf-8")
    assert 'printf "%s:%d" $listenHost' in template and '(contains ":" .Values.listenHost)' in template
    values = merge(
        dict(values_sets()[0][1]), {"listenHost": "::", "config": {"ehlo_name": "mx-probe.example.net"}}
    )
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(rendered_config(values)), encoding="utf-8")
    settings = load_settings(str(path))
    assert settings.listen_address == f"[::]:{values['service']['port']}"


def flatten(
    data: dict[str, Any], prefix: str = "", stop_at: frozenset[str] | set[str] = frozenset()
) -> list[str]:
    keys = []
    for key, value in data.items():
        path = prefix + key
        if isinstance(value, dict) and value and path not in stop_at:
            keys.extend(flatten(value, path + ".", stop_at))
        else:
            keys.append(path)
    return keys


def schema_leaves(node: dict[str, Any], prefix: str = "", stop_at: frozenset[str] = frozenset()) -> set[str]:
    leaves: set[str] = set()
    for key, sub in node.get("properties", {}).items():
        path = prefix + key
        if "properties" in sub and path not in stop_at:
            leaves |= schema_leaves(sub, path + ".", stop_at)
        else:
            leaves.add(path)
    return leaves


def test_schema_covers_every_exporter_setting() -> None:
    """A new setting in the exporter fails here until the chart's schema (and README) know it."""
    config = SCHEMA["properties"]["config"]
    assert schema_leaves(config) == set(leaf_keys(Settings)) - CHART_MANAGED
    domain = config["properties"]["domains"]["items"]["oneOf"][1]
    assert schema_leaves(domain) == set(leaf_keys(DomainSettings))


def test_readme_documents_every_value() -> None:
    readme = (CHART / "README.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `([^`]+)` \|", readme, re.MULTILINE))
    # Kubernetes objects passed through whole (security contexts, resources ...) are documented as one row;
    # config is documented key by key as the schema lists it (optional keys too).
    passthrough = {
        k for k, v in SCHEMA["properties"].items() if v.get("type") == "object" and "properties" not in v
    }
    expected = set(flatten(VALUES, stop_at=passthrough | {"config"})) - {"config"}
    expected |= {"config." + k for k in schema_leaves(SCHEMA["properties"]["config"])}
    assert sorted(expected - documented) == [], "values missing from the README's table"
    assert sorted(documented - expected) == [], "README documents values that do not exist"
    for phrase in ("No `helm` binary", "StatefulSet", "hashmod", "pod-index", "values.schema.json"):
        assert phrase in readme


def test_hardened_defaults_match_the_image_user() -> None:
    user = re.search(r"^USER (\d+):(\d+)$", (ROOT / "Dockerfile").read_text(encoding="utf-8"), re.MULTILINE)
    assert user, "the Dockerfile sets no numeric USER"
    container, pod = VALUES["securityContext"], VALUES["podSecurityContext"]
    assert container["runAsNonRoot"] is True and pod["runAsNonRoot"] is True
    assert container["readOnlyRootFilesystem"] is True
    assert container["allowPrivilegeEscalation"] is False
    assert container["capabilities"]["drop"] == ["ALL"]
    assert container["seccompProfile"] == pod["seccompProfile"] == {"type": "RuntimeDefault"}
    assert (container["runAsUser"], container["runAsGroup"]) == (int(user.group(1)), int(user.group(2)))
    assert VALUES["service"]["port"] == 9706
