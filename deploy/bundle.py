"""The page's socket.io client bundle and the socket.io Admin UI, straight
from the npm registry.

``make vendor`` gets it through ``npm ci``; an image build has no need for
Node or npm just to copy built files, so it runs this instead: the tarball
of the version package-lock.json pins, checked against the lock's sha512
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

REGISTRY = "https://registry.npmjs.org"
# (package, its files the page needs, where they go under the target).
CLIENT = (
    "socket.io-client",
    ["dist/socket.io.js", "dist/socket.io.js.map", "dist/socket.io.min.js"]
    + ["dist/socket.io.min.js.map"],
    "",
)
# The socket.io Admin UI: its built files, every one under ui/dist/.
ADMIN_UI = ("@socket.io/admin-ui", "ui/dist/", "admin-ui")


def pinned(lock_path: Path, package: str) -> tuple[str, str]:
    """(version, sha512 integrity) of ``package`` in package-lock.json."""
    entry = json.loads(lock_path.read_text())["packages"][f"node_modules/{package}"]
    return entry["version"], entry["integrity"]


def verified(data: bytes, integrity: str) -> bool:
    algorithm, _, expected = integrity.partition("-")
    if algorithm != "sha512":
        return False
    return base64.b64encode(hashlib.sha512(data).digest()).decode() == expected


def fetch(lock_path: Path, into: Path, package: str, wanted, under: str) -> None:
    """Files of ``package`` (a list, or every file under a prefix) into
    ``into/under``, keeping their paths below ``dist/`` or the prefix."""
    version, integrity = pinned(lock_path, package)
    base = package.rsplit("/", 1)[-1]
    url = f"{REGISTRY}/{package}/-/{base}-{version}.tgz"
    with urllib.request.urlopen(url, timeout=60) as response:
        data = response.read()
    if not verified(data, integrity):
        raise SystemExit(f"{url}: does not match the integrity in {lock_path}")
    target = into / under
    count = 0
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for member in tar.getmembers():
            path = member.name.removeprefix("package/")
            if isinstance(wanted, str):
                if not (member.isfile() and path.startswith(wanted)):
                    continue
                relative = path[len(wanted) :]
            elif path in wanted:
                relative = path.rsplit("/", 1)[-1]
            else:
                continue
            if ".." in Path(relative).parts:
                raise SystemExit(f"{url}: unsafe path {member.name}")
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            (target / relative).write_bytes(tar.extractfile(member).read())
            count += 1
    if not count or (not isinstance(wanted, str) and count != len(wanted)):
        raise SystemExit(f"{url}: the expected files are not there")
    print(f"{package} {version}: {count} files -> {target}")


if __name__ == "__main__":
    lock, into = Path(sys.argv[1]), Path(sys.argv[2])
    for package, wanted, under in (CLIENT, ADMIN_UI):
        fetch(lock, into, package, wanted, under)
