"""Podman on this kind of machine: its settings, a base image made without a
registry, and the chat's image built from the Dockerfile.

No image registry is reachable here, so the Dockerfile's ``BASE`` points at
an image made with mmdebstrap from Debian's packages (``base_image``); pip
and the npm registry are reached from inside a build with the host's CA
bundle. runc with cgroupfs is the runtime that works on these machines
(crun and runc with podman's defaults cannot set the rlimits they ask for),
and both ulimits must be given. Used by the tests, ``make image`` and the
deploy host's container mode.

    python -m deploy.containers image      # build localhost/chat:latest
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STATE = Path(os.environ.get("CHAT_CONTAINERS_DIR", "/var/tmp/chat-containers"))
BASE_IMAGE = "localhost/chat-base:bookworm"
CHAT_IMAGE = "localhost/chat:latest"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
CONTAINERS_CONF = """\
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"

[containers]
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
log_driver = "k8s-file"
"""
# What a base image leaves out: documentation, man pages, locales.
_EXCLUDES = (
    "/usr/share/man/*",
    "/usr/share/doc/*",
    "/usr/share/locale/*",
    "/usr/share/info/*",
)
# apt in the image keeps no caches (an apt.conf.d file, not --aptopt, or
# every apt layer built on the image keeps its package cache).
_NO_APT_CACHE = (
    'Dir::Cache::pkgcache "";\nDir::Cache::srcpkgcache "";\n'
    'APT::Install-Recommends "false";\n'
)


def env() -> dict[str, str]:
    """The environment podman runs in: the settings that work here."""
    STATE.mkdir(parents=True, exist_ok=True)
    conf = STATE / "containers.conf"
    if not conf.exists() or conf.read_text() != CONTAINERS_CONF:
        conf.write_text(CONTAINERS_CONF)
    return {**os.environ, "CONTAINERS_CONF": str(conf)}


def podman(*args: str, check: bool = True, timeout: float = 600, **kwargs):
    """Run ``podman args``; its output is returned (text)."""
    return subprocess.run(
        ["podman", *args],
        env=env(),
        check=check,
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,
    )


def image_exists(name: str) -> bool:
    return podman("image", "exists", name, check=False).returncode == 0


def _sources() -> Path:
    """The host's Debian sources (the only package mirror reachable here)."""
    for path in (
        Path("/etc/apt/sources.list.d/debian.sources"),
        Path("/etc/apt/sources.list"),
    ):
        if path.exists() and path.read_text().strip():
            return path
    raise SystemExit("no Debian sources on this host for mmdebstrap")


def base_image(name: str = BASE_IMAGE, packages: tuple[str, ...] = ()) -> str:
    """A minimal Debian bookworm with python3 and its venv module (and
    ``packages``), imported into podman as ``name``; made once."""
    if image_exists(name):
        return name
    include = ",".join(("python3", "python3-venv", "ca-certificates", *packages))
    with tempfile.TemporaryDirectory(dir=STATE) as tmp:
        rootfs = Path(tmp) / "rootfs.tar"
        hook = (
            "mkdir -p $1/etc/apt/apt.conf.d && printf '%s' "
            f"'{_NO_APT_CACHE}' > $1/etc/apt/apt.conf.d/99-no-cache"
        )
        subprocess.run(
            [
                "mmdebstrap",
                "--quiet",
                "--variant=apt",
                f"--include={include}",
                *(f"--dpkgopt=path-exclude={p}" for p in _EXCLUDES),
                f"--customize-hook={hook}",
                "--customize-hook=rm -rf $1/var/lib/apt/lists/* $1/var/cache/apt/*",
                "bookworm",
                str(rootfs),
                str(_sources()),
            ],
            check=True,
            capture_output=True,
            timeout=600,
        )
        podman(
            "import",
            "--change",
            "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "--change",
            'CMD ["/bin/bash"]',
            str(rootfs),
            name,
        )
    return name


def build(
    context: Path = ROOT,
    tag: str = CHAT_IMAGE,
    base: str | None = None,
    dockerfile: Path | None = None,
) -> str:
    """``podman build`` of ``context`` (its Dockerfile) on ``base``."""
    args = [
        "build",
        "--format",
        "docker",  # OCI images drop HEALTHCHECK
        "--pull=never",
        "--build-arg",
        f"BASE={base or base_image()}",
        "--tag",
        tag,
    ]
    if CA_BUNDLE.exists():
        args += ["--volume", f"{CA_BUNDLE}:{CA_BUNDLE}:ro"]
    if dockerfile is not None:
        args += ["--file", str(dockerfile)]
    podman(*args, str(context), timeout=900)
    return tag


def service_image(tag: str, packages: str) -> str:
    """An image of Debian ``packages`` on the base (Redis, nginx for compose)."""
    if image_exists(tag):
        return tag
    with tempfile.TemporaryDirectory(dir=STATE) as tmp:
        containerfile = Path(tmp) / "Containerfile"
        containerfile.write_text(
            "ARG BASE\nFROM ${BASE}\n"
            "RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive "
            f"apt-get install -y -qq {packages} && rm -rf /var/lib/apt/lists/*\n"
        )
        build(Path(tmp), tag, dockerfile=containerfile)
    return tag


def image_size_mb(tag: str) -> float:
    out = podman("image", "inspect", "--format", "{{.Size}}", tag).stdout
    return int(out.strip()) / 1e6


def main(argv: list[str]) -> None:
    if not shutil.which("podman"):
        raise SystemExit("podman is not installed (make system-deps)")
    if argv[:1] == ["image"]:
        tag = build()
        print(f"{tag}: {image_size_mb(tag):.0f} MB")
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
