"""The page's socket.io client bundle, straight from the npm registry.

``make vendor`` gets it through ``npm ci``; an image build has no need for
Node or npm just to copy four files, so it runs this instead: the tarball of
the version package-lock.json pins, checked against the lock's sha512
``integrity`` before anything is taken out of it.

    python3 deploy/bundle.py package-lock.json static/vendor
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import sys
import tarfile
import urllib.request
from pathlib import Path

PACKAGE = "socket.io-client"
FILES = ("socket.io.js", "socket.io.js.map", "socket.io.min.js", "socket.io.min.js.map")
REGISTRY = "https://registry.npmjs.org"


def pinned(lock_path: Path) -> tuple[str, str]:
    """(version, sha512 integrity) of the package in package-lock.json."""
    entry = json.loads(lock_path.read_text())["packages"][f"node_modules/{PACKAGE}"]
    return entry["version"], entry["integrity"]


def verified(data: bytes, integrity: str) -> bool:
    algorithm, _, expected = integrity.partition("-")
    if algorithm != "sha512":
        return False
    return base64.b64encode(hashlib.sha512(data).digest()).decode() == expected


def fetch(lock_path: Path, into: Path) -> None:
    version, integrity = pinned(lock_path)
    url = f"{REGISTRY}/{PACKAGE}/-/{PACKAGE}-{version}.tgz"
    with urllib.request.urlopen(url, timeout=60) as response:
        data = response.read()
    if not verified(data, integrity):
        raise SystemExit(f"{url}: does not match the integrity in {lock_path}")
    into.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for name in FILES:
            member = tar.extractfile(f"package/dist/{name}")
            if member is None:
                raise SystemExit(f"{url}: no dist/{name}")
            (into / name).write_bytes(member.read())
    print(f"{PACKAGE} {version}: {', '.join(FILES)} -> {into}")


if __name__ == "__main__":
    fetch(Path(sys.argv[1]), Path(sys.argv[2]))
