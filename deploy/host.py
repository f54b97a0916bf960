"""Deploy with ``git push``: a bare repository whose hooks build and roll out.

    python3 deploy/host.py init /srv/chat        # once, on the host
    git remote add prod ssh://host/srv/chat/repo.git
    git push prod main                           # every deploy

Layout of the host directory:

    repo.git/         bare repository; hooks/pre-receive builds, post-receive switches
    env               settings of every release (REDIS_URL, SECRET_KEY, INSTANCES...)
    releases/<sha>/   one checkout per pushed commit, with .venv and static/vendor
    venvs/<hash>/     virtual environments, shared by releases with the same
                      requirements.txt
    current           symlink to the release being served
    logs/             supervisor, instance and nginx logs

pre-receive checks the pushed commit out, installs its dependencies and runs a
smoke check (the release answers /readyz and serves its page); if any step
fails the push is refused, saying why, and the old release keeps serving.
post-receive points ``current`` at the new release and asks the supervisor
for a rolling restart, one instance at a time, and waits for it to finish.

Only the standard library is used here: this runs before any venv exists.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

# Run as a script from a release's checkout: make ``deploy`` importable.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from deploy.procs import free_port, http_get  # noqa: E402  (standard library only)

ENV_TEMPLATE = """\
# Settings for every release of the chat on this host; never in the repository.
INSTANCES=2
BASE_PORT=5051
LB_PORT=5050
HOST=127.0.0.1
# Required when INSTANCES > 1: redis://:password@host:port/0
REDIS_URL=
SECRET_KEY={secret}
"""

PRE_RECEIVE = """\
#!/bin/sh
# Build and smoke-check a pushed main before accepting it.
while read old new ref; do
  [ "$ref" = "refs/heads/main" ] || continue
  [ "$new" = "0000000000000000000000000000000000000000" ] && continue
  mkdir -p "{root}/releases"
  rel="{root}/releases/$new"
  rm -rf "$rel" && mkdir -p "$rel"
  git archive "$new" | tar -x -C "$rel" || exit 1
  python3 "$rel/deploy/host.py" build "{root}" "$new" || exit 1
done
"""

POST_RECEIVE = """\
#!/bin/sh
# Switch the instances to the accepted main, one at a time.
while read old new ref; do
  [ "$ref" = "refs/heads/main" ] || continue
  python3 "{root}/releases/$new/deploy/host.py" switch "{root}" "$new"
done
"""

SWITCH_TIMEOUT_S = 180


def say(text: str) -> None:
    """One line to the pusher's terminal (git prefixes it with ``remote:``)."""
    print(f"[deploy] {text}", flush=True)


def read_env(root: Path) -> dict[str, str]:
    """KEY=VALUE lines of ``root/env``; comments and blanks ignored."""
    settings = {}
    for line in (root / "env").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            settings[key.strip()] = value.strip()
    return settings


# -- init ---------------------------------------------------------------------
def init(root: Path) -> None:
    """Create the bare repository, its hooks and an env file to edit."""
    import secrets

    root = root.resolve()
    for sub in ("releases", "venvs", "logs"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    repo = root / "repo.git"
    if not repo.exists():
        subprocess.run(
            ["git", "init", "--bare", "-q", "-b", "main", str(repo)], check=True
        )
    for name, text in (("pre-receive", PRE_RECEIVE), ("post-receive", POST_RECEIVE)):
        hook = repo / "hooks" / name
        hook.write_text(text.format(root=root))
        hook.chmod(0o755)
    env = root / "env"
    if not env.exists():
        env.write_text(ENV_TEMPLATE.format(secret=secrets.token_hex(32)))
    say(f"ready: git remote add prod {repo}; edit {env}; git push prod main")


# -- build ----------------------------------------------------------------------
def run(argv: list[str], cwd: Path, what: str, env: dict | None = None) -> None:
    """Run a build step; on failure say which and show the end of its output."""
    result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        tail = (result.stdout + result.stderr).strip().splitlines()[-15:]
        for line in tail:
            say(f"  {line}")
        raise SystemExit(f"[deploy] build failed: {what} (exit {result.returncode})")


def venv_for(root: Path, release: Path) -> Path:
    """The virtual environment for this requirements.txt, created once."""
    digest = hashlib.sha256((release / "requirements.txt").read_bytes()).hexdigest()
    venv = root / "venvs" / digest[:16]
    if not (venv / ".complete").exists():
        say("installing Python dependencies (new requirements.txt)")
        shutil.rmtree(venv, ignore_errors=True)
        run([sys.executable, "-m", "venv", str(venv)], release, "python -m venv")
        run(
            [
                str(venv / "bin/pip"),
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
                "requirements.txt",
            ],
            release,
            "pip install -r requirements.txt",
        )
        (venv / ".complete").touch()
    return venv


def build(root: Path, sha: str) -> None:
    """Install a release's dependencies and smoke-check it; exit non-zero if bad."""
    release = root / "releases" / sha
    say(f"building {sha[:12]}")
    venv = venv_for(root, release)
    (release / ".venv").symlink_to(venv)
    run(["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], release, "npm ci")
    vendor = release / "static" / "vendor"
    vendor.mkdir(parents=True, exist_ok=True)
    shutil.copy(release / "node_modules/socket.io-client/dist/socket.io.min.js", vendor)
    smoke_check(root, release)
    say(f"built {sha[:12]}: smoke check passed")


def smoke_check(root: Path, release: Path) -> None:
    """Start the release on a spare port: /readyz, the page and its script answer."""
    port = free_port()
    env = {**os.environ, **read_env(root), "PORT": str(port), "HOST": "127.0.0.1"}
    log_path = root / "logs" / f"smoke-{release.name[:12]}.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [str(release / ".venv/bin/gunicorn"), "-c", "gunicorn.conf.py", "wsgi:app"],
            cwd=release,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"

    def status(path: str) -> int:
        answer = http_get(url + path)
        return answer.status_code if answer else 0

    try:
        deadline = time.monotonic() + 30
        while status("/readyz") != 200:
            if proc.poll() is not None or time.monotonic() > deadline:
                for line in log_path.read_text(errors="replace").splitlines()[-15:]:
                    say(f"  {line}")
                raise SystemExit(
                    "[deploy] build failed: smoke check, the release "
                    "is not ready (/readyz)"
                )
            time.sleep(0.1)
        page = http_get(f"{url}/")
        script = status("/static/vendor/socket.io.min.js")
        if not page or page.status_code != 200 or "socket.io.min.js" not in page.text:
            raise SystemExit(
                "[deploy] build failed: smoke check, the page is not served"
            )
        if script != 200:
            raise SystemExit(
                "[deploy] build failed: smoke check, the socket.io client is not served"
            )
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


# -- switch -------------------------------------------------------------------
def read_state(root: Path) -> dict:
    try:
        return json.loads((root / "state.json").read_text())
    except (OSError, ValueError):
        return {}


def supervisor_pid(root: Path) -> int | None:
    try:
        pid = int((root / "supervisor.pid").read_text())
        os.kill(pid, 0)
        return pid
    except (OSError, ValueError):
        return None


def switch(root: Path, sha: str) -> None:
    """Point ``current`` at the release and roll the instances over to it."""
    release = root / "releases" / sha
    link = root / "current.new"
    link.unlink(missing_ok=True)
    link.symlink_to(release)
    link.replace(root / "current")
    pid = supervisor_pid(root)
    started = None
    if pid is None:
        say("starting the supervisor")
        with open(root / "logs" / "supervisor.log", "ab") as log:
            started = subprocess.Popen(
                [
                    str(release / ".venv/bin/python"),
                    "-m",
                    "deploy.supervisor",
                    str(root),
                ],
                cwd=release,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
    else:
        say(f"rolling restart to {sha[:12]}")
        os.kill(pid, signal.SIGHUP)
    deadline = time.monotonic() + SWITCH_TIMEOUT_S
    while True:
        state = read_state(root)
        if state.get("release") == sha and state.get("status") == "serving":
            say(f"serving {sha[:12]} on port {state.get('port')}")
            return
        if state.get("status") == "failed" and state.get("release") == sha:
            raise SystemExit(f"[deploy] switch failed: {state.get('reason')}")
        if started is not None and started.poll() is not None:
            log = (root / "logs" / "supervisor.log").read_text(errors="replace")
            for line in log.splitlines()[-10:]:
                say(f"  {line}")
            raise SystemExit("[deploy] switch failed: the supervisor exited")
        if time.monotonic() > deadline:
            raise SystemExit("[deploy] switch did not finish in time; see logs/")
        time.sleep(0.2)


def main(argv: list[str]) -> None:
    command, root = argv[0], Path(argv[1]).resolve()
    if command == "init":
        init(root)
    elif command == "build":
        build(root, argv[2])
    elif command == "switch":
        switch(root, argv[2])
    else:
        raise SystemExit(f"unknown command {command!r}: init, build or switch")


if __name__ == "__main__":
    main(sys.argv[1:])
