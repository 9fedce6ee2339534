#!/usr/bin/env bash
# Start the whole portal on embedded defaults: SQLite, the sandbox AWS, Celery worker
# and beat on a filesystem broker, and the web server. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY="$VENV/bin/python"

export DJANGO_DEBUG=${DJANGO_DEBUG:-true}
export BYOK_SANDBOX=${BYOK_SANDBOX:-true}
export BYOK_SANDBOX_PORT=${BYOK_SANDBOX_PORT:-4566}
export BYOK_SANDBOX_URL=${BYOK_SANDBOX_URL:-http://127.0.0.1:$BYOK_SANDBOX_PORT}
export BYOK_AWS_PRINCIPAL_ARN=${BYOK_AWS_PRINCIPAL_ARN:-arn:aws:iam::000000000000:role/byok-portal}
PORT=${PORT:-8000}
# The sandbox keeps its KMS keys (with their material), roles and sessions here across
# restarts; `--reset-sandbox` (or `make sandbox-reset`) forgets them.
SANDBOX_STATE=${BYOK_SANDBOX_STATE:-var/sandbox/state.json}
sandbox_args=(--state "$SANDBOX_STATE")
for arg in "$@"; do
  case "$arg" in
    --reset-sandbox) sandbox_args+=(--reset) ;;
    *) echo "usage: $0 [--reset-sandbox]" >&2; exit 2 ;;
  esac
done
mkdir -p var/celery/queue var/celery/processed var/celery/control var/log

pids=()
cleanup() {
  trap - EXIT INT TERM
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

"$PY" -m sandbox_aws --host 127.0.0.1 --port "$BYOK_SANDBOX_PORT" "${sandbox_args[@]}" >var/log/sandbox.log 2>&1 &
pids+=($!)

"$PY" manage.py migrate --noinput >var/log/migrate.log
"$PY" manage.py byok_bootstrap
# So that `.venv/bin/python manage.py byok_users ...` in another shell uses these settings too.
"$PY" -m byok_portal.devenv write >/dev/null

"$PY" -m celery -A byok_portal worker --beat --concurrency 1 --schedule var/celery/beat-schedule \
  --loglevel INFO >var/log/celery.log 2>&1 &
pids+=($!)

for _ in $(seq 50); do
  grep -q "listening" var/log/sandbox.log 2>/dev/null && break
  sleep 0.2
done
if ! grep -q "listening" var/log/sandbox.log 2>/dev/null; then
  # e.g. an unreadable state file: the sandbox refuses to start rather than forget it.
  echo "The sandbox AWS did not start:" >&2
  cat var/log/sandbox.log >&2
  exit 1
fi

echo
echo "BYOK Portal: http://127.0.0.1:$PORT/"
echo "  sandbox AWS: $BYOK_SANDBOX_URL (state in $SANDBOX_STATE)   logs: var/log/"
echo "  Ctrl-C stops the portal, the sandbox and Celery."
echo
"$PY" manage.py runserver "127.0.0.1:$PORT" &
pids+=($!)
wait -n "${pids[@]}"
