#!/usr/bin/env bash
# bench/profile_service.sh for any stream format: the whole service under cProfile while one
# `logsvc bench flood --format FORMAT` runs, then its top functions by own time and its stages
# (bench/profile_stages.py) (issue 13).
#   bench/profile_formats_i13.sh FORMAT [RECORDS] [OUT.prof]
# FORMAT is pickle, json or syslog. LOGSVC_SRC=DIR profiles another tree's src. The service runs
# on loopback (ports chosen by the kernel) with its own schema bench_i13_prof_<pid> and data
# dir, both removed afterwards; SIGTERM makes `serve` return from main, so cProfile writes its file.
set -euo pipefail
fmt=$1 records=${2:-100000}
here=$(cd "$(dirname "$0")/.." && pwd)
out=${3:-/tmp/logsvc-profile-$fmt-$$.prof}
py=$here/.venv/bin/python
dsn=${LOGSVC_TEST_DSN:-host=127.0.0.1 port=5432 dbname=test user=postgres}
work=$(mktemp -d /tmp/bench-i13-prof-XXXXXX)
schema=bench_i13_prof_$$
declare -A what=([pickle]='SocketHandler pickle frames' [json]='JSON lines' [syslog]='syslog over TCP')
trap 'rm -rf "$work"; psql -qX "$dsn" -c "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null 2>&1 || true' EXIT
PYTHONPATH=${LOGSVC_SRC:-$here/src} "$py" -m cProfile -o "$out" -m logsvc serve --listen 127.0.0.1:0 \
    --listen-json 127.0.0.1:0 --listen-syslog 127.0.0.1:0 --dsn "$dsn" --schema "$schema" \
    --data-dir "$work/data" --stats-interval 0 --metrics 127.0.0.1:0 >"$work/log" 2>&1 &
pid=$!
port=
for _ in $(seq 1 300); do  # at most 30 s
    if grep -q "Connected to PostgreSQL" "$work/log" 2>/dev/null; then
        port=$(grep -oP "Listening on 127\.0\.0\.1:\K\d+(?= \(${what[$fmt]})" "$work/log" 2>/dev/null || true)
        break
    fi
    kill -0 $pid 2>/dev/null || break
    sleep 0.1
done
[ -n "$port" ] || { cat "$work/log"; kill -TERM $pid 2>/dev/null || true; wait $pid || true; exit 1; }
PYTHONPATH=$here/src timeout 600 "$py" -m logsvc bench flood --format "$fmt" --port "$port" \
    --records "$records" --dsn "$dsn" --schema "$schema" --service-pid $pid --json
echo
kill -TERM $pid; wait $pid 2>/dev/null || true
"$py" - "$out" <<'PY'
import pstats, sys
pstats.Stats(sys.argv[1]).sort_stats("tottime").print_stats(25)
PY
"$py" "$here/bench/profile_stages.py" "$out"
