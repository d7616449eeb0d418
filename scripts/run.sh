#!/usr/bin/env bash
# Runs the whole service in the foreground: web + worker + beat (and the sandbox upstream when
# no NOVITA_API_KEY is set). Called by `make run` after the virtualenv is ready.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
var_dir="${VAR_DIR:-var}"
mkdir -p "$var_dir"

if [ -z "${DJANGO_SECRET_KEY:-}" ] && [ ! -s "$var_dir/secret_key" ]; then
  # The same key file `make install` writes and settings read when DJANGO_SECRET_KEY is unset;
  # kept across runs so admin sessions survive a restart.
  (umask 077 && python -c 'import secrets; print(secrets.token_urlsafe(50))' > "$var_dir/secret_key")
fi
# The local run serves plain http on localhost; secure cookies would lock the admin out.
export SECURE_COOKIES="${SECURE_COOKIES:-false}"
export PORT="${PORT:-3000}"
# A local run listens on this machine only; BIND_HOST=0.0.0.0 exposes it (the Procfile's default).
export BIND_HOST="${BIND_HOST:-127.0.0.1}"

procfile=Procfile
if [ -z "${NOVITA_API_KEY:-}" ]; then
  export SANDBOX_PORT="${SANDBOX_PORT:-8900}"
  export NOVITA_API_KEY=sandbox-key
  export NOVITA_API_BASE_URL="http://127.0.0.1:${SANDBOX_PORT}/gpu-instance/openapi"
  procfile=Procfile.sandbox
  cat <<MSG
======================================================================
  NO NOVITA_API_KEY SET: running against the built-in SANDBOX upstream
  (simulated GPU instances at ${NOVITA_API_BASE_URL}). Nothing is billed.
  Set NOVITA_API_KEY to talk to the real Novita.ai API.
======================================================================
MSG
  if [ -z "${GATEWAY_API_KEYS:-}" ] && [ -z "${ALLOW_OPEN_API:-}" ]; then
    # The sandbox bills nothing and listens on ${BIND_HOST}: an open API is the convenient
    # default here, and only here (a production start without keys answers 401).
    export ALLOW_OPEN_API=true
    echo "OPEN API: ALLOW_OPEN_API=true for this local sandbox run (no GATEWAY_API_KEYS set)."
    echo "          Any client that reaches ${BIND_HOST}:${PORT} may call /api/ without a key."
  fi
fi
if [ -z "${GATEWAY_API_KEYS:-}" ] && [ "${ALLOW_OPEN_API:-false}" != "true" ]; then
  echo "NOTE: no GATEWAY_API_KEYS set: /api/ answers 401 until a key is issued with"
  echo "      python manage.py issue_api_key NAME   (or set ALLOW_OPEN_API=true to serve it open)"
fi

python manage.py migrate --noinput
python manage.py collectstatic --noinput >/dev/null
echo "Gateway on http://${BIND_HOST}:${PORT}  (API docs: /api/docs/, admin: /admin/, health: /health)"
# honcho gives each process PORT = base + 100 x its line number; web is the first line.
exec honcho start -f "$procfile" -p "$PORT"
