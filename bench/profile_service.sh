#!/usr/bin/env bash
# Profile the whole service (cProfile) under one `logsvc bench flood`, then print the top
# functions by own time.
#   bench/profile_service.sh [RECORDS] [OUT.prof]
# LOGSVC_SRC=DIR profiles another tree's src (a git worktree of an older revision).
# The service runs under `python -m cProfile -o OUT.prof -m logsvc serve` on loopback with
# its own schema and data dir (both removed afterwards); it is stopped with SIGTERM, which
# `serve` handles by returning from main, so cProfile writes its file.
set -euo pipefail
records=${1:-200000}
here=$(cd "$(dirname "$0")/.." && pwd)
out=${2:-/tmp/logsvc-profile-$$.prof}
py=$here/.venv/bin/python
dsn=${LOGSVC_TEST_DSN:-host=127.0.0.1 port=5432 dbname=test user=postgres}
work=$(mktemp -d /tmp/logsvc-prof-XXXXXX)
schema=prof_$$
trap 'rm -rf "$work"; psql -qX "$dsn" -c "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null 2>&1 || true' EXIT
PYTHONPATH=${LOGSVC_SRC:-$here/src} "$py" -m cProfile -o "$out" -m logsvc serve --listen 127.0.0.1:0 --dsn "$dsn" \
    --schema $schema --data-dir "$work/data" --stats-interval 0 --metrics 127.0.0.1:0 >"$work/log" 2>&1 &
pid=$!
port=
for _ in $(seq 1 300); do
  port=$(grep -v '(HTTP' "$work/log" | grep -oE 'Listening on 127\.0\.0\.1:[0-9]+' | head -1 | grep -oE '[0-9]+$' || true)
  [ -n "$port" ] && grep -q "Connected to PostgreSQL" "$work/log" && break
  sleep 0.1
done
[ -n "$port" ] || { cat "$work/log"; kill -TERM $pid; exit 1; }
PYTHONPATH=$here/src timeout 600 "$py" -m logsvc bench flood --port $port --records "$records" \
    --dsn "$dsn" --schema $schema --service-pid $pid --json
kill -TERM $pid; wait $pid 2>/dev/null || true
"$py" - "$out" <<'PY'
import pstats, sys
pstats.Stats(sys.argv[1]).sort_stats("tottime").print_stats(25)
PY
