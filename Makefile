# Two commands for a new machine: `make run` and `make test`.
# Every target installs what it needs, once (stamps in .stamps/).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMPS := .stamps
# The page loads socket.io.min.js; the other files serve clients written
# for Node's server (/socket.io/socket.io.js) and debuggers (the maps).
VENDOR_FILES := $(addprefix static/vendor/,socket.io.js socket.io.js.map \
	socket.io.min.js socket.io.min.js.map) static/vendor/admin-ui/index.html
VENDOR := static/vendor/socket.io.min.js
PEER_MODULES := bench/peer/node_modules/.package-lock.json
N ?= 3
# make cluster: nginx on CLUSTER_PORT, the instances on the ports after it.
CLUSTER_PORT ?= 5050

.PHONY: run test lint format vendor image cluster bench bench-quick bench-scale chaos soak system-deps clean

run: $(STAMPS)/venv $(VENDOR_FILES)
	$(BIN)/gunicorn -c gunicorn.conf.py wsgi:app

test: $(STAMPS)/venv-bench $(STAMPS)/venv-deploy $(VENDOR_FILES) $(STAMPS)/node-dev $(PEER_MODULES) system-deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest

lint: $(STAMPS)/venv-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMPS)/venv-dev
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# The container image (localhost/chat:latest) with Podman, on a Debian base
# made once with mmdebstrap; `docker build -t chat .` works the same.
image: $(STAMPS)/venv-dev system-deps
	$(BIN)/python -m deploy.containers image

cluster: $(STAMPS)/venv-deploy $(VENDOR_FILES) system-deps
	$(BIN)/python -m deploy.cluster --instances $(N) --port $(CLUSTER_PORT) \
	  $(if $(SENTINEL),--sentinel) $(if $(REDIS_CLUSTER),--redis-cluster)

bench: $(STAMPS)/venv-bench $(PEER_MODULES) system-deps
	ulimit -n 20000 2>/dev/null || true; $(BIN)/python -m bench.run

bench-quick:
	BENCH_QUICK=1 $(MAKE) bench

# 1, 2, 4 and 8 instances through one Redis, many rooms; not part of make test.
bench-scale: $(STAMPS)/venv-bench $(PEER_MODULES) system-deps
	ulimit -n 20000 2>/dev/null || true; $(BIN)/python -m bench.scale

# Two instances, churn, one flooding address, for SOAK_SECONDS: memory and
# Redis keys must stay flat and nothing acknowledged go missing; not part of
# `make test` (a 30 s form of it is).
SOAK_SECONDS ?= 600
soak: $(STAMPS)/venv-dev $(VENDOR_FILES) system-deps
	$(BIN)/python -m bench.soak --seconds $(SOAK_SECONDS)

# Random instance kills, Redis restarts and pauses against 30 users; not part
# of `make test`. CHAOS_SECONDS=60 for a short run, CHAOS_SEED to repeat one.
CHAOS_SECONDS ?= 600
chaos: $(STAMPS)/venv-dev $(VENDOR_FILES) system-deps
	$(BIN)/python -m bench.chaos --seconds $(CHAOS_SECONDS) $(if $(CHAOS_SEED),--seed $(CHAOS_SEED)) \
	  $(if $(REDIS_CLUSTER),--redis-cluster)

# -- installs ---------------------------------------------------------------
$(STAMPS)/venv: requirements.txt
	@mkdir -p $(STAMPS)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt
	@touch $@

$(STAMPS)/venv-dev: $(STAMPS)/venv requirements-dev.txt
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@touch $@

$(STAMPS)/venv-deploy: $(STAMPS)/venv deploy/requirements.txt
	$(BIN)/pip install --quiet --disable-pip-version-check -r deploy/requirements.txt
	@touch $@

$(STAMPS)/venv-bench: $(STAMPS)/venv-dev bench/requirements.txt
	$(BIN)/pip install --quiet --disable-pip-version-check -r bench/requirements.txt
	@touch $@

$(PEER_MODULES): bench/peer/package.json bench/peer/package-lock.json
	cd bench/peer && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	@touch $@

# `make vendor` builds the page's client bundle. Whichever of the files is
# missing, the rule copies all four, so no target leaves the page without
# the one it loads.
vendor: $(VENDOR_FILES)

$(VENDOR_FILES): node_modules/.package-lock.json
	@mkdir -p static/vendor
	cp $(addprefix node_modules/socket.io-client/dist/,socket.io.js socket.io.js.map \
	   socket.io.min.js socket.io.min.js.map) static/vendor/
	rm -rf static/vendor/admin-ui
	cp -r node_modules/@socket.io/admin-ui/ui/dist static/vendor/admin-ui

$(STAMPS)/node-dev: node_modules/.package-lock.json
	@mkdir -p $(STAMPS)
	@touch $@

# redis-server, nginx and chromium from Debian, only when missing.
system-deps:
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v nginx >/dev/null || test -x /usr/sbin/nginx || missing="$$missing nginx-light"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v openssl >/dev/null || missing="$$missing openssl"; \
	command -v podman >/dev/null || missing="$$missing podman"; \
	command -v runc >/dev/null || missing="$$missing runc"; \
	command -v mmdebstrap >/dev/null || missing="$$missing mmdebstrap"; \
	command -v newuidmap >/dev/null || missing="$$missing uidmap"; \
	command -v slirp4netns >/dev/null || missing="$$missing slirp4netns"; \
	command -v fuse-overlayfs >/dev/null || missing="$$missing fuse-overlayfs"; \
	command -v catatonit >/dev/null || test -x /usr/libexec/podman/catatonit || missing="$$missing catatonit"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

clean:
	rm -rf $(VENV) $(STAMPS) node_modules static/vendor test-artifacts
