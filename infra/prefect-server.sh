#!/usr/bin/env bash
# A local Prefect server (API + UI) on 127.0.0.1 for development and tests.
#
#   infra/prefect-server.sh start     # prints the export line for PREFECT_API_URL
#   infra/prefect-server.sh status
#   infra/prefect-server.sh stop      # TERM exactly the PID started here
#
# Environment:
#   BEASTFLOW_PREFECT_DIR   state folder: prefect.db, server.log, server.pid (default ./.prefect)
#   BEASTFLOW_PREFECT_PORT  port (default 4200)
#   PREFECT                 the prefect executable (default: .venv/bin/prefect, else prefect on PATH)
# Production: use infra/compose.yaml (PostgreSQL instead of SQLite) or Prefect Cloud.
set -m            # own process group: the server then stops on one SIGTERM (see recipes)
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
dir=${BEASTFLOW_PREFECT_DIR:-$PWD/.prefect}
port=${BEASTFLOW_PREFECT_PORT:-4200}
prefect=${PREFECT:-}
if [ -z "$prefect" ]; then
  if [ -x "$here/.venv/bin/prefect" ]; then prefect=$here/.venv/bin/prefect; else prefect=$(command -v prefect || true); fi
fi
[ -n "$prefect" ] || { echo "prefect-server: no prefect executable (pip install prefect)" >&2; exit 1; }
pidf=$dir/server.pid
url=http://127.0.0.1:$port

alive() { [ -s "$pidf" ] && kill -0 "$(cat "$pidf")" 2>/dev/null; }
healthy() { curl -sf "$url/api/health" >/dev/null 2>&1; }
# something already listens there (another user's server on a shared node?)
port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; }

case "${1:-}" in
  start)
    if alive && healthy; then echo "export PREFECT_API_URL=$url/api   # already running (pid $(cat "$pidf"))"; exit 0; fi
    if port_taken; then
      echo "prefect-server: port $port is in use by a process not started from $dir; choose another with" \
           "BEASTFLOW_PREFECT_PORT=<port> (and BEASTFLOW_PREFECT_DIR=<folder> for a separate state)" >&2
      exit 1
    fi
    mkdir -p "$dir"
    # the UI is told where its API is (it would assume port 4200)
    PREFECT_HOME=$dir PREFECT_SERVER_ANALYTICS_ENABLED=false PREFECT_API_URL= PREFECT_UI_API_URL=$url/api \
      "$prefect" server start --host 127.0.0.1 --port "$port" </dev/null >"$dir/server.log" 2>&1 &
    echo $! > "$pidf"
    for _ in $(seq 600); do healthy && break; alive || break; sleep 0.2; done
    if ! healthy; then echo "prefect-server: not up; see $dir/server.log" >&2; tail -20 "$dir/server.log" >&2; exit 1; fi
    echo "export PREFECT_API_URL=$url/api   # UI: $url  (pid $(cat "$pidf"), log $dir/server.log)"
    ;;
  stop)
    if alive; then
      pid=$(cat "$pidf"); kill -TERM "$pid"
      for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null && echo "prefect server ($pid) killed" || echo "prefect server ($pid) stopped"
    else
      echo "prefect server not running"
    fi
    rm -f "$pidf"
    ;;
  status)
    if alive && healthy; then echo "running at $url (pid $(cat "$pidf"))"; else echo "not running"; exit 1; fi
    ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
