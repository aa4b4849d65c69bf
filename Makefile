# Two commands on a fresh machine: `make repro` (set up + run the pipeline) and
# `make test` (set up + run the tests). Everything installs into .venv from the
# exact pins in requirements.lock.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(abspath $(VENV))/bin
# Stage commands in dvc.yaml call `python`: make it the venv's.
export PATH := $(BIN):$(PATH)

HOST ?= 127.0.0.1
PORT ?= 5000
MODEL ?= cnn_bn
SERVE_PORT ?= 5001
MLFLOW_URI ?= $(or $(MLFLOW_TRACKING_URI),sqlite:///$(CURDIR)/mlflow.db)
# What `make serve` serves: the version `dvc repro` registered in this workspace
# (alias `workspace`); any other with e.g. MODEL_URI=models:/mnist-cnn_bn/latest.
MODEL_URI ?= models:/mnist-$(MODEL)@workspace
MAX_REQUEST_BYTES ?= 4194304

.PHONY: setup browser postgres repro test test-fast ui serve server sweep bench lint lock clean

# Rebuilt from scratch whenever the lock file changes, so nothing stale survives.
$(VENV)/.deps: requirements.lock
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check pip==26.3
	$(BIN)/pip install --disable-pip-version-check -r requirements.lock
	touch $@

$(VENV)/.pkg: $(VENV)/.deps pyproject.toml
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

setup: $(VENV)/.pkg

# The report test renders report/index.html in headless Chromium (Debian's package).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the report test"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium; }

# The team tests (and `make server`) start Debian's PostgreSQL server binaries in a temp
# dir as an unprivileged user; Debian puts them in /usr/lib/postgresql/<version>/bin.
postgres:
	@ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || command -v pg_ctl >/dev/null 2>&1 || { \
	  echo "installing Debian's postgresql for the team tests"; \
	  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; }

repro: setup
	$(BIN)/dvc repro

test: setup browser postgres
	$(BIN)/pytest

test-fast: setup
	$(BIN)/pytest -m "not slow"

# MLflow 3's UI opens experiments on a GenAI overview: open the URL this prints instead.
# Without MLflow's job runner (GenAI jobs, which mnistlab has none of: ~6 fewer processes).
ui: setup
	@$(BIN)/python -m ops.ui --base http://$(HOST):$(PORT) --uri $(MLFLOW_URI)
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false \
	  $(BIN)/mlflow ui --backend-store-uri $(MLFLOW_URI) --host $(HOST) --port $(PORT)

# Serve mnist-$(MODEL) over HTTP (after `make repro`): MLflow's scoring server behind
# our guard (serving/): bodies over MAX_REQUEST_BYTES get 413 unread, anything but
# (N, 1, 28, 28) finite pixels in [0, 1] gets 400 with a short message.
#   curl -X POST -H 'Content-Type: application/json' --data '{"inputs": ...}' \
#        http://127.0.0.1:$(SERVE_PORT)/invocations
serve: setup
	MLFLOW_TRACKING_URI='$(MLFLOW_URI)' $(BIN)/python -m serving --model-uri '$(MODEL_URI)' \
	  --host $(HOST) --port $(SERVE_PORT) --max-bytes $(MAX_REQUEST_BYTES)

# A team's stack on this machine, for trying the team workflow: PostgreSQL + S3 (moto) +
# `mlflow server`, all on 127.0.0.1, in SERVER_DIR (absent or empty; deleted on exit).
# Prints the variables to export and the `dvc remote` commands; Ctrl-C stops it all.
SERVER_DIR ?= $(CURDIR)/.team-server
server: setup postgres
	$(BIN)/python -m ops.team_stack $(SERVER_DIR)

# A sweep (ops/sweep.py): one DVC experiment per variant of GRID, one Ray task each, in a
# fresh clone of HEAD. Alone: an embedded Ray, this repo as the git remote, its default
# DVC remote and mlflow.db. A team: RAY_ADDRESS=<head>:6379 MLFLOW_TRACKING_URI=<server>
# make sweep GRID=... GIT_REMOTE=origin DVC_REMOTE=<an S3 remote>.
GRID ?= sweeps/lr.yaml
sweep: setup
	$(BIN)/python -m ops.sweep $(GRID) $(if $(GIT_REMOTE),--git-remote $(GIT_REMOTE)) \
	  $(if $(DVC_REMOTE),--dvc-remote $(DVC_REMOTE)) $(SWEEP_ARGS)

bench: setup
	$(BIN)/python -m bench

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

lock: setup
	{ echo "# Exact versions of every dependency (Python 3.11, x86_64); \`make\` installs them into .venv."; \
	  echo "# Regenerate after changing a pin: make lock"; \
	  $(BIN)/pip freeze --all --exclude-editable; } > requirements.lock.new
	mv requirements.lock.new requirements.lock

clean:
	rm -rf $(VENV)
