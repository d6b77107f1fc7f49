#!/usr/bin/env bash
# A local S3-compatible endpoint (moto server) on 127.0.0.1 for development and tests.
#
#   eval "$(infra/s3-endpoint.sh start)"    # exports AWS_* so that s3:// URLs reach it
#   infra/s3-endpoint.sh stop
#
# Environment: BEASTFLOW_S3_DIR (pid + log, default ${TMPDIR:-/tmp}/beastflow-s3-<uid>: one per user),
# BEASTFLOW_S3_PORT (default 9000), BEASTFLOW_S3_BUCKET (created on start, default beastflow).
# Data live in memory and vanish on stop.  Real deployments: infra/compose.yaml runs MinIO,
# or use any S3 service: set [project.storage_options.s3] endpoint_url (and credentials via
# the usual AWS_* variables) in the settings.
set -m
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
dir=${BEASTFLOW_S3_DIR:-${TMPDIR:-/tmp}/beastflow-s3-$(id -u)}
port=${BEASTFLOW_S3_PORT:-9000}
bucket=${BEASTFLOW_S3_BUCKET:-beastflow}
moto=$here/.venv/bin/moto_server; [ -x "$moto" ] || moto=$(command -v moto_server || true)
py=$here/.venv/bin/python; [ -x "$py" ] || py=python3
pidf=$dir/moto.pid
url=http://127.0.0.1:$port
alive() { [ -s "$pidf" ] && kill -0 "$(cat "$pidf")" 2>/dev/null; }
port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; }
exports() {
  echo "export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=us-east-1"
  echo "export AWS_ENDPOINT_URL_S3=$url"
}
case "${1:-}" in
  start)
    if alive; then exports; echo "# already running (pid $(cat "$pidf"))" ; exit 0; fi
    [ -n "$moto" ] || { echo "s3-endpoint: moto_server not found (pip install 'moto[server]')" >&2; exit 1; }
    if port_taken; then
      echo "s3-endpoint: port $port is in use by a process not started from $dir; choose another with" \
           "BEASTFLOW_S3_PORT=<port>" >&2
      exit 1
    fi
    mkdir -p "$dir"
    "$moto" -H 127.0.0.1 -p "$port" </dev/null >"$dir/moto.log" 2>&1 &
    echo $! > "$pidf"
    for _ in $(seq 100); do curl -sf "$url/" >/dev/null 2>&1 && break; sleep 0.1; done
    curl -sf "$url/" >/dev/null || { echo "s3-endpoint: not up; see $dir/moto.log" >&2; exit 1; }
    AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing "$py" -c \
      "import s3fs,sys; fs=s3fs.S3FileSystem(endpoint_url=sys.argv[1]); fs.exists(sys.argv[2]) or fs.mkdir(sys.argv[2])" \
      "$url" "$bucket"
    exports
    echo "# S3 endpoint $url, bucket s3://$bucket (pid $(cat "$pidf"))"
    ;;
  stop)
    if alive; then pid=$(cat "$pidf"); kill -TERM "$pid"; for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null; echo "s3 endpoint ($pid) stopped"; else echo "s3 endpoint not running"; fi
    rm -f "$pidf"
    ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
