#!/bin/bash
# The service's end-to-end ingest rate with and without the index on extra -> 'trace_id':
# `logsvc bench flood` (500,000 records, 8 connections), alternating, 3 repeats.
# Usage: bench/index_e2e.sh [DSN]   (from the project root, after make test or make serve)
set -u
DSN="${1:-host=127.0.0.1 port=5432 dbname=test user=postgres}"
for rep in 1 2 3; do
  for variant in none trace_id; do
    d=$(mktemp -d); s="idx_${variant}_$rep"
    args=(--index-extra=); [ "$variant" = trace_id ] && args=(--index-extra trace_id)
    .venv/bin/logsvc serve --listen 127.0.0.1:5059 --dsn "$DSN" --schema $s --data-dir $d "${args[@]}" > $d/log 2>&1 &
    pid=$!
    for i in $(seq 1 50); do grep -q "Connected to PostgreSQL" $d/log && break; sleep 0.2; done
    r=$(.venv/bin/logsvc bench flood --port 5059 --dsn "$DSN" --schema $s --records 500000 --service-pid $pid --json)
    echo "repeat $rep index=$variant records/s, lost, duplicated: $(echo "$r" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(round(d["records_per_s"]), d["lost"], d["duplicated"])')"
    kill -TERM $pid; wait $pid
    .venv/bin/python -c "import psycopg,sys; psycopg.connect(sys.argv[1], autocommit=True).execute('DROP SCHEMA $s CASCADE')" "$DSN"
    rm -rf "$d"
  done
done
