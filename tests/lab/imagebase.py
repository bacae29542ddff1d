"""A stand-in for the Dockerfile's base image, so the image can be built and run here without a registry.

No Docker engine runs here and base images cannot be pulled, so this makes the nearest thing once: a
``debootstrap --variant=minbase`` Debian bookworm (the official ``python:3.11-slim-bookworm`` is bookworm with
CPython 3.11 too) with python3, venv, pip, CA certificates and ``passwd`` (useradd), plus ``python``/``pip`` shims
in /usr/local/bin where the official image keeps them. It is imported into a dedicated buildah storage and tagged
under every external name the Dockerfile's FROM lines use. Both the root file system and the image are cached
(keyed by the recipe), so only the first run pays for debootstrap.

Run ``python -m tests.lab.imagebase`` to make it by hand.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

CACHE_DIR = Path(os.environ.get("MX_EXPORTER_IMAGE_CACHE", "/var/cache/mx-exporter-test"))
SUITE = "bookworm"
PACKAGES = ("python3", "python3-venv", "python3-pip", "ca-certificates", "passwd")
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
RECIPE_LABEL = "org.mx-exporter.standin-recipe"
# pip in Debian refuses to touch the system Python (PEP 668); the official image's Python is its own, so the
# shim lifts that guard the way the official image never needs to.
SHIMS = {
    "python": '#!/bin/sh\nexec /usr/bin/python3 "$@"\n',
    "pip": '#!/bin/sh\nPIP_BREAK_SYSTEM_PACKAGES=1 exec /usr/bin/python3 -m pip "$@"\n',
    "pip3": '#!/bin/sh\nPIP_BREAK_SYSTEM_PACKAGES=1 exec /usr/bin/python3 -m pip "$@"\n',
}
DEBOOTSTRAP_TIMEOUT = 1800
BUILDAH_TIMEOUT = 900


class ImageLabError(RuntimeError):
    """A missing tool or a failed step, phrased so a failing test says what to install or look at."""


def require_tools() -> None:
    """Fail clearly (not skip) when a tool the image tests need is missing."""
    missing = [tool for tool in ("buildah", "debootstrap", "tar") if shutil.which(tool) is None]
    if missing:
        raise ImageLabError(
            f"missing {', '.join(missing)}: install the Debian packages buildah and debootstrap "
            "(scripts/test.sh does this on a fresh machine)"
        )
    if os.geteuid() != 0:
        raise ImageLabError(
            "debootstrap and buildah --isolation chroot need root; run the image tests as root"
        )


@dataclass(frozen=True)
class Buildah:
    """buildah bound to a dedicated storage (vfs: no kernel overlay or fuse needed)."""

    root: Path
    runroot: Path

    def cmd(self, *args: str) -> list[str]:
        return [
            "buildah",
            "--root",
            str(self.root),
            "--runroot",
            str(self.runroot),
            "--storage-driver",
            "vfs",
            *args,
        ]

    def run(self, *args: str, timeout: float = BUILDAH_TIMEOUT) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(self.cmd(*args), capture_output=True, text=True, timeout=timeout, check=False)
        if result.returncode != 0:
            raise ImageLabError(
                f"buildah {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-4000:]}"
            )
        return result

    def image_label(self, name: str, label: str) -> str | None:
        """The label's value on a local image, or None when the image (or label) is missing."""
        result = subprocess.run(
            self.cmd(
                "inspect",
                "--type",
                "image",
                "--format",
                f'{{{{index .OCIv1.Config.Labels "{label}"}}}}',
                name,
            ),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        value = result.stdout.strip()
        return value if result.returncode == 0 and value not in ("", "<no value>") else None


def lab_buildah(cache_dir: Path = CACHE_DIR) -> Buildah:
    return Buildah(root=cache_dir / "storage", runroot=cache_dir / "run")


def external_bases(dockerfile: str) -> list[str]:
    """Images the FROM lines pull from outside (not earlier stages, not scratch), in order."""
    stages: set[str] = set()
    bases: list[str] = []
    for line in dockerfile.splitlines():
        match = re.match(r"\s*FROM\s+(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?\s*$", line, re.IGNORECASE)
        if not match:
            continue
        image, stage = match.group(1), match.group(2)
        if image.lower() not in stages and image != "scratch" and image not in bases:
            bases.append(image)
        if stage:
            stages.add(stage.lower())
    return bases


def local_names(image: str) -> list[str]:
    """The names a daemonless build may look a FROM image up under (short names resolve to docker.io)."""
    first = image.split("/", 1)[0]
    if "/" in image and ("." in first or ":" in first or first == "localhost"):
        return [image]
    path = image if "/" in image else f"library/{image}"
    return [f"docker.io/{path}", f"localhost/{image}"]


def apt_mirror(apt_dir: Path = Path("/etc/apt")) -> str:
    """The Debian archive this machine's apt uses (deb822 .sources or one-line sources.list)."""
    candidates: list[tuple[str, str]] = []
    for path in sorted((apt_dir / "sources.list.d").glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", path.read_text(encoding="utf-8")):
            fields = dict(re.findall(r"^(\w[\w-]*):\s*(.*)$", stanza, re.MULTILINE))
            for uri in fields.get("URIs", "").split():
                candidates.append((uri, fields.get("Suites", "")))
    sources_list = apt_dir / "sources.list"
    if sources_list.exists():
        for line in sources_list.read_text(encoding="utf-8").splitlines():
            match = re.match(r"\s*deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+(\S+)", line)
            if match:
                candidates.append((match.group(1), match.group(2)))
    for uri, suites in candidates:
        if SUITE in suites.split() and not uri.rstrip("/").endswith("-security"):
            return uri
    raise ImageLabError(f"no Debian {SUITE} mirror in {apt_dir}/sources.list*: cannot debootstrap the base")


def recipe_digest() -> str:
    """Changes whenever the stand-in would come out different, so a stale cache is rebuilt."""
    text = repr((SUITE, PACKAGES, sorted(SHIMS.items()), HOST_CA_BUNDLE.read_bytes()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _debootstrap(target: Path, mirror: str) -> None:
    command = [
        "debootstrap",
        "--variant=minbase",
        f"--include={','.join(PACKAGES)}",
        SUITE,
        str(target),
        mirror,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=DEBOOTSTRAP_TIMEOUT, check=False)
    if result.returncode != 0:
        log = target / "debootstrap" / "debootstrap.log"
        detail = log.read_text(errors="replace")[-3000:] if log.exists() else result.stderr[-3000:]
        raise ImageLabError(f"debootstrap from {mirror} failed ({result.returncode}):\n{detail}")


def _finish_rootfs(root: Path) -> None:
    """Shims, the host's CA bundle, and no caches or host identity left behind."""
    for name, text in SHIMS.items():
        shim = root / "usr/local/bin" / name
        shim.write_text(text)
        shim.chmod(0o755)
    shutil.copyfile(HOST_CA_BUNDLE, root / "etc/ssl/certs/ca-certificates.crt")
    for pattern in ("var/cache/apt/archives/*.deb", "var/lib/apt/lists/*", "var/log/*.log"):
        for path in root.glob(pattern):
            if path.is_file():
                path.unlink()
    for name in ("etc/resolv.conf", "etc/hostname"):
        (root / name).unlink(missing_ok=True)


def build_rootfs_tar(cache_dir: Path, digest: str) -> Path:
    """debootstrap once into a tar under the cache; reused while the recipe is unchanged."""
    tar_path = cache_dir / f"bookworm-python-{digest}.tar"
    if tar_path.exists():
        return tar_path
    cache_dir.mkdir(parents=True, exist_ok=True)
    mirror = apt_mirror()
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix="rootfs-") as tmp:
        root = Path(tmp) / "root"
        _debootstrap(root, mirror)
        _finish_rootfs(root)
        partial = tar_path.with_suffix(".partial")
        subprocess.run(
            ["tar", "--numeric-owner", "--xattrs", "-C", str(root), "-cf", str(partial), "."],
            check=True,
            timeout=600,
        )
        partial.rename(tar_path)
    return tar_path


def ensure_base_image(images: list[str], cache_dir: Path = CACHE_DIR) -> bool:
    """Make the stand-in and tag it under every name in ``images``; True when it had to be (re)made."""
    require_tools()
    buildah = lab_buildah(cache_dir)
    digest = recipe_digest()
    names = [name for image in images for name in local_names(image)]
    if names and all(buildah.image_label(name, RECIPE_LABEL) == digest for name in names):
        return False
    tar_path = build_rootfs_tar(cache_dir, digest)
    container = buildah.run("from", "--pull=never", "scratch").stdout.strip()
    try:
        buildah.run("add", container, str(tar_path), "/")
        buildah.run(
            "config",
            "--env",
            "PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin",
            "--env",
            "LANG=C.UTF-8",
            "--cmd",
            "python3",
            "--label",
            f"{RECIPE_LABEL}={digest}",
            container,
        )
        image_id = buildah.run("commit", "--rm", container).stdout.strip().splitlines()[-1]
    except BaseException:
        subprocess.run(buildah.cmd("rm", container), capture_output=True, timeout=120, check=False)
        raise
    for name in names:
        buildah.run("tag", image_id, name)
    return True


if __name__ == "__main__":
    dockerfile = Path(__file__).resolve().parents[2] / "Dockerfile"
    bases = external_bases(dockerfile.read_text()) if dockerfile.exists() else ["python:3.11-slim-bookworm"]
    made = ensure_base_image(bases)
    print(f"stand-in base {'made' if made else 'already cached'} for {', '.join(bases)} in {CACHE_DIR}")
    sys.exit(0)
