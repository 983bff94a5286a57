# Shared by scripts/test and scripts/up (sourced, not run): makes sure Redis and RabbitMQ answer
# (and, for the tests, that Chromium and chromedriver are installed)
# on 127.0.0.1, starting them when they are installed but stopped, and installing them from the
# distribution's packages when they are missing and this user may. Sets STARTED_REDIS /
# STARTED_RABBITMQ to 1 for what it started.

say() { printf '%s: %s\n' "${0##*/}" "$*" >&2; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() { # port seconds name
  local i
  for ((i = 0; i < $2 * 4; i++)); do
    port_open "$1" && return 0
    sleep 0.25
  done
  say "$3 did not start listening on 127.0.0.1:$1 within $2 s"
  return 1
}

can_install() { command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; }

apt_updated=""
install() { # package
  if ! can_install; then
    say "$1 is not installed and cannot be installed here (needs root and apt-get); install it, or start it on 127.0.0.1"
    exit 1
  fi
  if [ -z "$apt_updated" ]; then
    say "apt-get update"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null
    apt_updated=1
  fi
  say "installing $1 from the distribution's packages"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$1" >/dev/null
}

STARTED_REDIS=""
STARTED_RABBITMQ=""

ensure_redis() {
  port_open 6379 && return 0
  command -v redis-server >/dev/null || install redis-server
  port_open 6379 && return 0 # the package may have started it
  say "starting redis-server"
  mkdir -p /tmp/coexist-redis
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir /tmp/coexist-redis --logfile /tmp/coexist-redis/redis.log || true
  wait_port 6379 30 redis-server
  STARTED_REDIS=1
}

ensure_rabbitmq() {
  port_open 5672 && return 0
  command -v rabbitmq-server >/dev/null || install rabbitmq-server
  port_open 5672 && return 0 # the package may have started it
  say "starting rabbitmq-server"
  rabbitmq-server -detached || true # "already running" is for wait_port to judge
  wait_port 5672 120 rabbitmq-server
  command -v rabbitmqctl >/dev/null && rabbitmqctl -q await_startup >/dev/null 2>&1 || true
  STARTED_RABBITMQ=1
}

# Queues that earlier test runs left behind (a run stopped midway cleans nothing): every quorum
# queue is a process group in the broker, and thousands of them slow it to a halt.
clean_test_queues() {
  command -v rabbitmqctl >/dev/null || return 0
  local q n=0
  for q in $(rabbitmqctl -q list_queues name --no-table-headers 2>/dev/null | grep -E '^(test|bench|probe)-' || true); do
    rabbitmqctl -q delete_queue "$q" >/dev/null 2>&1 || true
    n=$((n + 1))
  done
  [ "$n" -eq 0 ] || say "deleted $n queue(s) left by earlier test runs"
}

# Debian's Chromium and its WebDriver, for the console's browser tests (and an emoji font, so
# that the screenshots show the 📱 and 🤖 the pages carry).
ensure_chromium() {
  if [ ! -e /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf ] && can_install; then
    install fonts-noto-color-emoji || true
  fi
  command -v chromium >/dev/null && command -v chromedriver >/dev/null && return 0
  install chromium
  install chromium-driver
}

# promtool, from Debian's prometheus package, for the alerts' checks and unit tests.
ensure_promtool() {
  command -v promtool >/dev/null && return 0
  if ! can_install; then
    say "promtool is not installed and cannot be installed here (needs root and apt-get)"
    exit 1
  fi
  say "installing prometheus (for promtool) from the distribution's packages"
  [ -n "$apt_updated" ] || { DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null; apt_updated=1; }
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
}

# AsyncAPI's own CLI (@asyncapi/cli, from npm), kept in a cache outside the checkout; exports
# COEXIST_TEST_ASYNCAPI, the path the AsyncAPI test runs.
ensure_asyncapi() {
  local dir="${XDG_CACHE_HOME:-$HOME/.cache}/coexist/asyncapi-cli"
  if [ ! -x "$dir/node_modules/.bin/asyncapi" ]; then
    command -v npm >/dev/null || install npm
    say "installing @asyncapi/cli from npm into $dir"
    mkdir -p "$dir"
    (cd "$dir" && npm install --silent --no-audit --no-fund @asyncapi/cli@6 >/dev/null 2>&1)
  fi
  export COEXIST_TEST_ASYNCAPI="$dir/node_modules/.bin/asyncapi"
}

# An OpenAPI 3.1 validator (openapi-spec-validator, from PyPI) in a virtual environment kept in a
# cache outside the checkout; exports COEXIST_TEST_OPENAPI, the path the OpenAPI test runs.
ensure_openapi_validator() {
  local dir="${XDG_CACHE_HOME:-$HOME/.cache}/coexist/openapi-validator"
  if [ ! -x "$dir/bin/openapi-spec-validator" ]; then
    command -v python3 >/dev/null || install python3
    python3 -m venv "$dir" 2>/dev/null || { install python3-venv && python3 -m venv "$dir"; }
    say "installing openapi-spec-validator from PyPI into $dir"
    "$dir/bin/pip" install --quiet --disable-pip-version-check "openapi-spec-validator==0.9.*"
  fi
  export COEXIST_TEST_OPENAPI="$dir/bin/openapi-spec-validator"
}

# For deploy/kubernetes: kubectl (its built-in kustomize renders the base; Debian's
# kubernetes-client when none is installed) and the schemas of Kubernetes and KEDA as the npm
# packages kubernetes-models and @kubernetes-models/keda bundle them, kept in a cache outside the
# checkout; exports COEXIST_TEST_K8S_MODULES, the node_modules that deploy/kubernetes/validate.mjs
# reads.
ensure_k8s_validator() {
  command -v kubectl >/dev/null || install kubernetes-client
  local dir="${XDG_CACHE_HOME:-$HOME/.cache}/coexist/k8s-validator"
  if [ ! -d "$dir/node_modules/@kubernetes-models/keda" ]; then
    command -v npm >/dev/null || install npm
    say "installing kubernetes-models and @kubernetes-models/keda from npm into $dir"
    mkdir -p "$dir"
    (cd "$dir" && npm install --silent --no-audit --no-fund kubernetes-models@5.1.0 \
      @kubernetes-models/keda@2.0.0 yaml@2.9.1 >/dev/null 2>&1)
  fi
  export COEXIST_TEST_K8S_MODULES="$dir/node_modules"
}

# cargo-deny, from crates.io (built once, kept in ~/.cargo/bin).
ensure_cargo_deny() {
  command -v cargo-deny >/dev/null && return 0
  say "installing cargo-deny from crates.io (once; a few minutes)"
  cargo install --locked --quiet cargo-deny
}

# cargo deny check: advisories against RustSec's database (fetched; where GitHub cannot be
# reached, the copy already on this machine, its age said, checked offline), licenses, bans,
# sources (deny.toml).
deny_check() {
  local dbs="${CARGO_HOME:-$HOME/.cargo}/advisory-dbs" db fetched=""
  cargo deny fetch db >/dev/null 2>&1 && fetched=1
  db=$(ls -d "$dbs"/advisory-db-* 2>/dev/null | head -n 1 || true)
  # Offline, cargo deny reads every target's crates from the cache (Windows ones included):
  # fetch them first from crates.io, which is reachable where GitHub may not be.
  [ -n "$fetched" ] || cargo fetch --locked >/dev/null 2>&1 || true
  if [ -z "$db" ]; then
    say "cargo deny: RustSec's advisory database cannot be fetched here and no copy is on this machine: advisories NOT checked; licenses, bans and sources are"
    cargo deny --offline --log-level error check licenses bans sources
    return
  fi
  local age
  age=$(git -C "$db" log -1 --format=%cs 2>/dev/null || echo '?')
  if [ -n "$fetched" ]; then
    say "cargo deny: advisories checked against RustSec's database as of $age"
    cargo deny --log-level error check
  else
    say "cargo deny: RustSec's advisory database cannot be fetched here: advisories checked against the copy on this machine, as of $age"
    cargo deny --offline --log-level error check
  fi
}

# Stops what ensure_* started (nothing that was running before).
stop_started() {
  if [ -n "$STARTED_RABBITMQ" ]; then
    say "stopping rabbitmq-server"
    rabbitmqctl -q stop >/dev/null 2>&1 || true
  fi
  if [ -n "$STARTED_REDIS" ]; then
    say "stopping redis-server"
    redis-cli -p 6379 shutdown nosave >/dev/null 2>&1 || true
  fi
}
