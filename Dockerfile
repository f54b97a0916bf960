# The chat as one container: one gunicorn process with one gevent worker,
# configured from the environment like every other deployment of it.
#
#   docker build -t chat .        (or: podman build --format docker -t chat .)
#   docker run -p 5050:5050 chat
#
# BASE is any Debian-based image with python3 (3.11) and its venv module:
# the official python:3.11-slim-bookworm by default; the tests build one
# with mmdebstrap (no registry is reachable there).
ARG BASE=python:3.11-slim-bookworm

# -- build: the virtual environment and the pinned client bundle -------------
FROM ${BASE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /build
COPY requirements.txt ./
# Wheels only: the final image needs no compiler, and neither does this one.
RUN python3 -m venv /opt/chat/venv \
 && /opt/chat/venv/bin/pip install --only-binary=:all: -r requirements.txt \
 && /opt/chat/venv/bin/pip uninstall --yes pip \
 && find /opt/chat/venv -name __pycache__ -prune -exec rm -rf {} +
COPY package-lock.json deploy/bundle.py ./
RUN python3 bundle.py package-lock.json /build/vendor

# -- run: only what runs -------------------------------------------------------
FROM ${BASE}
# A user of its own, without a login shell or a writable home.
RUN echo 'chat:x:10001:10001:chat:/opt/chat:/usr/sbin/nologin' >> /etc/passwd \
 && echo 'chat:x:10001:' >> /etc/group
WORKDIR /opt/chat/app
COPY --from=build /opt/chat/venv /opt/chat/venv
COPY pyproject.toml wsgi.py gunicorn.conf.py ./
COPY chat ./chat
COPY templates ./templates
COPY static ./static
COPY --from=build /build/vendor ./static/vendor
ENV PATH=/opt/chat/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOST=0.0.0.0 \
    PORT=5050 \
    LOG_FORMAT=json \
    ACCESS_LOG=-
USER 10001:10001
EXPOSE 5050
# SIGTERM drains: users are handed over to the other containers; give the
# container longer than GRACEFUL_TIMEOUT_S (20 s) to stop.
STOPSIGNAL SIGTERM
# Liveness with what the image has: Python's own HTTP client.
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
  CMD ["python3", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('PORT', '5050'), timeout=2)"]
CMD ["gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]
