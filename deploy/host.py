"""Deploy with ``git push``: a bare repository whose hook builds, checks and rolls.

    python3 deploy/host.py init /srv/chat        # once, on the host
    git remote add prod ssh://host/srv/chat/repo.git
    git push prod main                           # every deploy
    python3 /srv/chat/current/deploy/host.py rollback /srv/chat [SHA]
    python3 /srv/chat/current/deploy/host.py stop /srv/chat

Layout of the host directory:

    repo.git/          bare repository; hooks/pre-receive does the whole deploy
    env                settings of every release (REDIS_URL, SECRET_KEY, INSTANCES...)
    releases/<sha>/    one checkout per pushed commit, with .venv and static/vendor
    venvs/<hash>/      virtual environments, shared by releases with the same
                       requirements.txt
    tools/             supervisord's own virtual environment
    current            symlink to the release being served
    served             the releases served, oldest first (what rollback reads)
    supervisord.conf   written from env at every deploy; nginx/ likewise
    logs/              supervisord, instance and nginx logs, rotated

The pre-receive hook checks the pushed commit out, installs its
dependencies and smoke-checks it: the release starts on a spare port and
two socket.io clients chat on it in a room of their own. Then it rolls:
``current`` moves to the release and supervisord restarts one instance at a
time, each of which must answer /readyz within ``DEPLOY_READY_TIMEOUT_S``
before the next. If one does not, every switched instance goes back to the
previous release and the push is refused, so ``main`` always names what
serves. (A post-receive hook could not refuse anything: the ref has moved.)

Every instance start, by a deploy or after a crash, goes through
``host.py instance``, which reads ``env`` and ``current`` at that moment.

Only the standard library is used here: this runs before any venv exists.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

# Run as a script from a release's checkout: make ``deploy`` importable.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from deploy.nginx import nginx_argv, nginx_conf, reap_orphans  # noqa: E402
from deploy.procs import free_port, http_get, route_id  # noqa: E402
from deploy.supervisord import (  # noqa: E402
    STOP_WAIT_S,
    Layout,
    instance_program,
    nginx_program,
    supervisord_conf,
)

ENV_TEMPLATE = """\
# Settings for every release of the chat on this host; never in the repository.
# A push applies changes: every instance restarts with them.
# 2 or more need REDIS_URL (a push with several instances and no Redis is
# refused: each instance would be a chat of its own).
INSTANCES=1
BASE_PORT=5051
HOST=127.0.0.1
# nginx, the public side: LB_HOST=0.0.0.0 to serve other machines.
LB_HOST=127.0.0.1
LB_PORT=5050
# With both, nginx serves HTTPS on LB_TLS_PORT and redirects LB_PORT to it.
LB_TLS_CERT=
LB_TLS_KEY=
LB_TLS_PORT=443
# Required when INSTANCES > 1: redis://:password@host:port/0
REDIS_URL=
SECRET_KEY={secret}
# How long each switched instance has to answer /readyz before the deploy
# rolls back.
DEPLOY_READY_TIMEOUT_S=60
# processes: each instance is a gunicorn under supervisord. containers: the
# push builds an image (Dockerfile) with Podman and each instance is a
# container of it (nginx stays under supervisord).
MODE=processes
# Releases (and, in container mode, images) kept for rollback.
KEEP_RELEASES=5
"""

PRE_RECEIVE = """\
#!/bin/sh
# Build, smoke-check and roll out a pushed main; refuse the push if any fails.
while read old new ref; do
  [ "$ref" = "refs/heads/main" ] || continue
  [ "$new" = "0000000000000000000000000000000000000000" ] && continue
  mkdir -p "{root}/releases"
  rel="{root}/releases/$new"
  rm -rf "$rel" && mkdir -p "$rel"
  git archive "$new" | tar -x -C "$rel" || exit 1
  python3 "$rel/deploy/host.py" deploy "{root}" "$new" || exit 1
done
"""

SMOKE_ROOM = "deploy-smoke"


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


def clean_environ() -> dict[str, str]:
    """This process's environment without git's hook variables (quarantine
    object paths must not leak into supervisord and the instances)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}


# -- init ---------------------------------------------------------------------
def init(root: Path) -> None:
    """Create the bare repository, its hook, supervisord's venv and an env file."""
    import secrets

    root = root.resolve()
    for sub in ("releases", "venvs", "logs"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    repo = root / "repo.git"
    if not repo.exists():
        subprocess.run(
            ["git", "init", "--bare", "-q", "-b", "main", str(repo)], check=True
        )
    hook = repo / "hooks" / "pre-receive"
    hook.write_text(PRE_RECEIVE.format(root=root))
    hook.chmod(0o755)
    (repo / "hooks" / "post-receive").unlink(missing_ok=True)
    env = root / "env"
    if not env.exists():
        env.write_text(ENV_TEMPLATE.format(secret=secrets.token_hex(32)))
    install_tools(root)
    say(f"ready: git remote add prod {repo}; edit {env}; git push prod main")
    say(
        "start at boot (the first push starts it too): "
        f"{root}/tools/bin/supervisord -c {root}/supervisord.conf"
    )


def install_tools(root: Path) -> None:
    """supervisord in its own venv, at the version deploy/requirements.txt pins."""
    tools = root / "tools"
    requirements = Path(__file__).resolve().parent / "requirements.txt"
    if (tools / "bin" / "supervisord").exists():
        return
    run([sys.executable, "-m", "venv", str(tools)], root, "python -m venv tools")
    run(
        [str(tools / "bin/pip"), "install", "--quiet", "--disable-pip-version-check"]
        + ["-r", str(requirements)],
        root,
        "pip install supervisor",
    )


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
            [str(venv / "bin/pip"), "install", "--quiet", "--disable-pip-version-check"]
            + ["-r", "requirements.txt"],
            release,
            "pip install -r requirements.txt",
        )
        (venv / ".complete").touch()
    return venv


def check_settings(root: Path) -> dict[str, str]:
    """The host's settings, refused with one line when they cannot work."""
    settings = read_env(root)
    mode = settings.get("MODE", "processes")
    if mode not in ("processes", "containers"):
        raise SystemExit(f"[deploy] refused: MODE={mode!r}: processes or containers")
    count = settings.get("INSTANCES", "1")
    if not count.isdigit() or int(count) < 1:
        raise SystemExit(f"[deploy] refused: INSTANCES={count!r}: a whole number >= 1")
    if int(count) > 1 and not settings.get("REDIS_URL"):
        raise SystemExit(
            f"[deploy] refused: INSTANCES={count} needs REDIS_URL in {root}/env "
            "(without Redis each instance would be a chat of its own)"
        )
    return settings


def image_of(release: Path) -> str:
    """The container image of a release (container mode)."""
    return f"localhost/chat:{release.name[:12]}"


def build_image(root: Path, sha: str) -> Path:
    """Container mode: the release's image from its Dockerfile, with Podman."""
    from deploy import containers

    release = root / "releases" / sha
    say(f"building the image of {sha[:12]}")
    try:
        if not containers.image_exists(containers.BASE_IMAGE):
            say("making the base image (once per host)")
        containers.build(release, image_of(release))
    except subprocess.CalledProcessError as failed:
        for line in ((failed.stdout or "") + (failed.stderr or "")).splitlines()[-15:]:
            say(f"  {line}")
        raise SystemExit("[deploy] build failed: podman build") from None
    # The smoke check's two clients (deploy/smoke.js) run on the host.
    run(
        ["npm", "ci", "--omit=dev", "--no-audit", "--no-fund", "--loglevel=error"],
        release,
        "npm ci",
    )
    return release


def build(root: Path, sha: str) -> Path:
    """Install a release's dependencies; exit non-zero if that fails."""
    if read_env(root).get("MODE") == "containers":
        return build_image(root, sha)
    release = root / "releases" / sha
    say(f"building {sha[:12]}")
    venv = venv_for(root, release)
    (release / ".venv").symlink_to(venv)
    run(
        ["npm", "ci", "--omit=dev", "--no-audit", "--no-fund", "--loglevel=error"],
        release,
        "npm ci",
    )
    vendor = release / "static" / "vendor"
    vendor.mkdir(parents=True, exist_ok=True)
    dist = release / "node_modules" / "socket.io-client" / "dist"
    for name in ("socket.io.js", "socket.io.js.map", "socket.io.min.js"):
        shutil.copy(dist / name, vendor)
    shutil.copy(dist / "socket.io.min.js.map", vendor)
    admin_ui = release / "node_modules" / "@socket.io" / "admin-ui" / "ui" / "dist"
    shutil.copytree(admin_ui, vendor / "admin-ui", dirs_exist_ok=True)
    return release


def smoke_check(root: Path, release: Path) -> None:
    """Start the release on a spare port; the page is served and the chat works.

    Two socket.io clients (deploy/smoke.js) log in, see each other join, type,
    exchange a message and leave, in a room of their own: the check never
    posts into a room people use.
    """
    port = free_port()
    own = {
        **read_env(root),
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "RELEASE": release.name,
    }
    env = {**clean_environ(), **own}
    log_path = root / "logs" / f"smoke-{release.name[:12]}.log"

    def fail(why: str) -> None:
        if isinstance(proc, SmokeContainer):
            proc.save_log()
        for line in log_path.read_text(errors="replace").splitlines()[-15:]:
            say(f"  {line}")
        raise SystemExit(f"[deploy] build failed: smoke check, {why}")

    if read_env(root).get("MODE") == "containers":
        proc = SmokeContainer(release, own, log_path)
    else:
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [str(release / ".venv/bin/gunicorn")]
                + ["-c", "gunicorn.conf.py", "wsgi:app"],
                cwd=release,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
    url = f"http://127.0.0.1:{port}"
    try:
        if not ready(url, 30, proc):
            fail("the release is not ready (/readyz)")
        page = http_get(f"{url}/")
        if not page or page.status_code != 200 or "socket.io.min.js" not in page.text:
            fail("the page is not served")
        script = http_get(f"{url}/socket.io/socket.io.min.js")
        if not script or script.status_code != 200:
            fail("the socket.io client is not served")
        chat = subprocess.run(
            ["node", str(release / "deploy" / "smoke.js"), url, SMOKE_ROOM],
            cwd=release,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if chat.returncode != 0:
            lines = (chat.stdout + chat.stderr).strip().splitlines()
            fail(f"two clients cannot chat ({lines[-1] if lines else 'no output'})")
    finally:
        if isinstance(proc, SmokeContainer):
            proc.remove()
        elif proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)


class SmokeContainer:
    """A container of the release's image on a spare port, for the smoke check."""

    def __init__(self, release: Path, env: dict[str, str], log_path: Path) -> None:
        from deploy import containers

        self.containers = containers
        self.name = f"chat-smoke-{release.name[:12]}"
        self.log_path = log_path
        containers.podman("rm", "--force", self.name, check=False)
        containers.podman(
            "run",
            "--detach",
            "--name",
            self.name,
            "--network",
            "host",
            *container_env(env),
            image_of(release),
        )

    def poll(self) -> int | None:
        """None while the container runs (as ``Popen.poll``)."""
        state = self.containers.podman(
            "inspect", "--format", "{{.State.Running}}", self.name, check=False
        )
        return None if state.stdout.strip() == "true" else 1

    def save_log(self) -> None:
        logs = self.containers.podman("logs", self.name, check=False)
        self.log_path.write_text(logs.stdout + logs.stderr)

    def remove(self) -> None:
        self.save_log()
        self.containers.podman("rm", "--force", "--time", "5", self.name, check=False)


def container_env(settings: dict[str, str]) -> list[str]:
    """``--env`` options for the chat's settings (nothing of this host's own
    environment reaches a container)."""
    return [f"--env={key}={value}" for key, value in sorted(settings.items())]


def ready(url: str, timeout: float, proc: subprocess.Popen | None = None) -> bool:
    """Whether ``url/readyz`` answers 200 within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = http_get(f"{url}/readyz")
        if answer is not None and answer.status_code == 200:
            return True
        if proc is not None and proc.poll() is not None:
            return False
        time.sleep(0.1)
    return False


# -- supervisord ----------------------------------------------------------------
class Host:
    """The processes of one host, as supervisord runs them from ``root/env``."""

    def __init__(
        self, root: Path, tools: Path | None = None, extra: tuple[str, ...] = ()
    ) -> None:
        self.root = root
        self.layout = Layout(root)
        self.settings = read_env(root)
        count = int(self.settings.get("INSTANCES", "1"))
        base = int(self.settings.get("BASE_PORT", "5051"))
        self.ports = [base + i for i in range(count)]
        self.ready_timeout = float(self.settings.get("DEPLOY_READY_TIMEOUT_S", "60"))
        self.tools = tools or root / "tools" / "bin"
        self.extra = list(extra)  # more programs (make cluster's redis-server)
        # processes: instances under supervisord; containers: Podman's.
        self.containers = self.settings.get("MODE") == "containers"

    def write_conf(self) -> None:
        """supervisord.conf and nginx.conf from the current env."""
        s = self.settings
        tls = None
        if s.get("LB_TLS_CERT") and s.get("LB_TLS_KEY"):
            tls = (
                Path(s["LB_TLS_CERT"]),
                Path(s["LB_TLS_KEY"]),
                int(s.get("LB_TLS_PORT") or 443),
            )
        nginx_dir = self.layout.nginx_dir
        nginx_dir.mkdir(parents=True, exist_ok=True)
        conf = nginx_dir / "nginx.conf"
        conf.write_text(
            nginx_conf(
                int(s.get("LB_PORT", "5050")),
                self.ports,
                nginx_dir,
                host=s.get("LB_HOST") or "127.0.0.1",
                tls=tls,
            )
        )
        programs = [*self.extra]
        if not self.containers:
            programs += [instance_program(self.layout, p) for p in self.ports]
        launcher = self.root / "current" / "deploy" / "host.py"
        programs.append(
            nginx_program(
                self.layout, [sys.executable, str(launcher), "nginx", str(self.root)]
            )
        )
        self.layout.conf.write_text(supervisord_conf(self.layout, programs))

    def ctl(self, *args: str, check: bool = True) -> str:
        result = subprocess.run(
            [str(self.tools / "supervisorctl"), "-c", str(self.layout.conf), *args],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if check and result.returncode != 0:
            raise SystemExit(
                f"[deploy] supervisorctl {' '.join(args)} failed: "
                f"{(result.stdout + result.stderr).strip()}"
            )
        return result.stdout

    def running(self) -> bool:
        """Whether supervisord answers on its socket."""
        if not self.layout.socket.exists():
            return False
        return self.ctl("pid", check=False).strip().isdigit()

    def start_supervisord(self) -> None:
        say("starting supervisord")
        with open(self.layout.logs / "supervisord.out", "ab") as out:
            subprocess.run(
                [str(self.tools / "supervisord"), "-c", str(self.layout.conf)],
                cwd=self.root,
                env=clean_environ(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                check=True,
            )

    def url(self, port: int) -> str:
        return f"http://127.0.0.1:{port}"

    def serves(self, port: int) -> bool:
        """The instance answers /readyz and supervisord (or Podman) counts it
        as started, within the deploy's readiness timeout."""
        deadline = time.monotonic() + self.ready_timeout
        if not ready(self.url(port), self.ready_timeout):
            return False
        if self.containers:
            return self.container_running(port)
        while time.monotonic() < deadline:
            if self.ctl("status", f"chat-{port}", check=False).split()[1:2] == [
                "RUNNING"
            ]:
                return True
            time.sleep(0.2)
        return False

    def roll(self, release: Path, previous: Path | None) -> None:
        """Serve ``release``: one instance at a time, each ready before the next.

        If an instance is not ready in time, every switched instance goes back
        to ``previous`` and this exits non-zero, saying why.
        """
        point_current(self.root, release)
        self.write_conf()
        if not self.running():
            self.start_supervisord()
            if self.containers:
                for port in self.ports:
                    self.start_container(port, release)
            late = [p for p in self.ports if not self.serves(p)]
            if late:
                self._give_up(release, previous, self.ports, late[0])
            return
        # Instances added to or removed from env; nginx reads its new config.
        self.ctl("update")
        self.ctl("signal", "HUP", "nginx", check=False)
        if self.containers:
            self.remove_other_containers()
        switched = []
        for port in self.ports:
            say(f"restarting the instance on {port}")
            switched.append(port)
            self.restart(port, release)
            if not self.serves(port):
                self._give_up(release, previous, switched, port)

    def restart(self, port: int, release: Path) -> None:
        """The instance on ``port`` drains and comes back on ``release``."""
        if self.containers:
            self.start_container(port, release)
        else:
            self.ctl("restart", f"chat-{port}", check=False)

    # -- container mode ---------------------------------------------------------
    def start_container(self, port: int, release: Path) -> None:
        """Replace the container on ``port`` (it drains first) by one of
        ``release``'s image, restarted by Podman whenever it exits."""
        from deploy import containers

        name = f"chat-{port}"
        containers.podman(
            "rm", "--force", "--time", str(STOP_WAIT_S), name, check=False, timeout=120
        )
        containers.podman(
            "run",
            "--detach",
            "--name",
            name,
            "--network",
            "host",
            "--restart",
            "always",
            "--stop-timeout",
            str(STOP_WAIT_S),
            "--log-opt",
            f"path={self.layout.logs / name}.log",
            *container_env(instance_settings(self.settings, release, port)),
            image_of(release),
        )

    def container_running(self, port: int) -> bool:
        from deploy import containers

        state = containers.podman(
            "inspect", "--format", "{{.State.Running}}", f"chat-{port}", check=False
        )
        return state.stdout.strip() == "true"

    def remove_other_containers(self) -> None:
        """Containers of instances no longer in env (INSTANCES went down)."""
        from deploy import containers

        names = containers.podman(
            "ps", "--all", "--format", "{{.Names}}", "--filter", "name=^chat-[0-9]+$"
        ).stdout.split()
        for name in names:
            if int(name.split("-")[1]) not in self.ports:
                say(f"removing {name}")
                containers.podman(
                    "rm", "--force", "--time", str(STOP_WAIT_S), name, check=False
                )

    def stop(self) -> None:
        """Stop everything this host runs (containers drain first)."""
        if self.containers:
            from deploy import containers

            for port in self.ports:
                containers.podman(
                    "rm",
                    "--force",
                    "--time",
                    str(STOP_WAIT_S),
                    f"chat-{port}",
                    check=False,
                    timeout=120,
                )
        if self.running():
            self.ctl("shutdown", check=False)

    def _give_up(self, release, previous, switched, port) -> None:
        why = (
            f"the instance on {port} was not ready (/readyz) within "
            f"{self.ready_timeout:g}s; see {self.layout.logs}/chat-{port}.log"
        )
        if previous is None:
            self.stop()
            raise SystemExit(f"[deploy] roll failed: {why}; nothing was serving before")
        say(f"{why}: rolling back to {previous.name[:12]}")
        point_current(self.root, previous)
        for back in switched:
            self.restart(back, previous)
            self.serves(back)
        raise SystemExit(
            f"[deploy] roll failed: {why}; {previous.name[:12]} serves again"
        )


def point_current(root: Path, release: Path) -> None:
    """Atomically point ``root/current`` at ``release``."""
    link = root / "current.new"
    link.unlink(missing_ok=True)
    link.symlink_to(release)
    link.replace(root / "current")


def serving(root: Path) -> Path | None:
    current = root / "current"
    return current.resolve() if current.exists() else None


def note_served(root: Path, sha: str) -> None:
    with open(root / "served", "a") as served:
        served.write(f"{sha} {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n")


def deploy(root: Path, sha: str) -> None:
    """pre-receive: build, smoke-check and roll; any failure refuses the push."""
    started = time.monotonic()
    try:
        check_settings(root)
        release = build(root, sha)
        smoke_check(root, release)
        say(f"built {sha[:12]}: smoke check passed (two clients chatted)")
        previous = serving(root)
        say(f"rolling restart to {sha[:12]}")
        Host(root).roll(release, previous)
        note_served(root, sha)
    finally:
        prune(root)
    port = read_env(root).get("LB_PORT", "5050")
    say(f"serving {sha[:12]} on port {port} ({time.monotonic() - started:.0f} s)")


def prune(root: Path) -> None:
    """Keep the serving release and the last KEEP_RELEASES served (rollback's
    choices); remove every other release, a refused one included, the
    virtual environments none of them uses, and their images."""
    keep_count = int(read_env(root).get("KEEP_RELEASES") or 5)
    served_file = root / "served"
    lines = served_file.read_text().splitlines() if served_file.exists() else []
    shas = [line.split()[0] for line in lines if line.strip()]
    keep = set(shas[-keep_count:])
    current = serving(root)
    if current is not None:
        keep.add(current.name)
    releases = root / "releases"
    gone = []
    for release in releases.iterdir() if releases.exists() else ():
        if release.name not in keep:
            shutil.rmtree(release, ignore_errors=True)
            gone.append(release)
    used = {
        (release / ".venv").resolve()
        for release in releases.iterdir()
        if (release / ".venv").is_symlink()
    }
    for venv in (root / "venvs").iterdir() if (root / "venvs").exists() else ():
        if venv.resolve() not in used:
            shutil.rmtree(venv, ignore_errors=True)
    if gone and shutil.which("podman"):
        from deploy import containers

        for release in gone:
            containers.podman("rmi", "--force", image_of(release), check=False)


def stop(root: Path) -> None:
    """Stop this host's chat: the instances drain, then nginx and supervisord."""
    Host(root).stop()
    say("stopped; the next push (or supervisord -c supervisord.conf) starts it")


def rollback(root: Path, sha: str | None) -> None:
    """Serve an earlier release again (default: the one before the current one),
    and move ``main`` to it so the next push builds on what serves."""
    current = serving(root)
    if sha is None:
        lines = (root / "served").read_text().split("\n") if current else []
        shas = [line.split()[0] for line in lines if line.strip()]
        earlier = [s for s in shas if current is None or s != current.name]
        if not earlier:
            raise SystemExit("[deploy] nothing to roll back to")
        sha = earlier[-1]
    matches = [p for p in (root / "releases").iterdir() if p.name.startswith(sha)]
    if len(matches) != 1 or not (matches[0] / ".venv").exists():
        raise SystemExit(f"[deploy] no built release {sha}")
    release = matches[0]
    say(f"rolling back to {release.name[:12]}")
    Host(root).roll(release, current)
    note_served(root, release.name)
    subprocess.run(
        ["git", "update-ref", "refs/heads/main", release.name],
        cwd=root / "repo.git",
        check=True,
    )
    say(f"serving {release.name[:12]}; main names it")


# -- one instance (supervisord's command) -----------------------------------------
# The host's own settings, which an instance has no use for.
HOST_ONLY = frozenset(
    {
        "INSTANCES",
        "BASE_PORT",
        "LB_HOST",
        "LB_PORT",
        "LB_TLS_CERT",
        "LB_TLS_KEY",
        "LB_TLS_PORT",
        "DEPLOY_READY_TIMEOUT_S",
        "MODE",
        "KEEP_RELEASES",
    }
)


def instance_settings(settings: dict[str, str], release: Path, port: int) -> dict:
    """What the instance on ``port`` runs with, process or container."""
    return {
        # nginx on this host is the only peer; the client is in X-Forwarded-For.
        "TRUSTED_PROXIES": "127.0.0.1",
        "RELEASE": release.name,
        **{k: v for k, v in settings.items() if k not in HOST_ONLY},
        "PORT": str(port),
        "ROUTE_ID": route_id(port),
    }


def instance(root: Path, port: int) -> None:
    """Replace this process by gunicorn of the current release on ``port``."""
    release = (root / "current").resolve()
    env = {**clean_environ(), **instance_settings(read_env(root), release, port)}
    os.chdir(release)
    gunicorn = release / ".venv" / "bin" / "gunicorn"
    os.execve(gunicorn, [str(gunicorn), "-c", "gunicorn.conf.py", "wsgi:app"], env)


def run_nginx(root: Path) -> None:
    """Replace this process by nginx with the host's current configuration,
    once whatever a killed nginx left holding the port is gone."""
    conf = Layout(root).nginx_dir / "nginx.conf"
    if reap_orphans(conf.parent / "nginx.pid"):
        say("killed the workers a killed nginx left behind")
    argv = nginx_argv(conf)
    os.execv(argv[0], argv)


def main(argv: list[str]) -> None:
    command, root = argv[0], Path(argv[1]).resolve()
    if command == "init":
        init(root)
    elif command == "deploy":
        deploy(root, argv[2])
    elif command == "rollback":
        rollback(root, argv[2] if len(argv) > 2 else None)
    elif command == "instance":
        instance(root, int(argv[2]))
    elif command == "stop":
        stop(root)
    elif command == "nginx":
        run_nginx(root)
    else:
        raise SystemExit(
            f"unknown command {command!r}: init, deploy, rollback, stop or instance"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
