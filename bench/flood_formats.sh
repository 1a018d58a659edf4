#!/usr/bin/env bash
# Interleaved flood runs of several --format values against a fresh `logsvc serve` each
# (its own schema and data dir, --listen-http on loopback), one JSON line per run.
#   bench/flood_formats.sh RECORDS REPEATS FORMAT... > bench/results/flood-formats-DATE.jsonl
# FORMAT is http (the NDJSON baseline), otlp or bulk; all go to --listen-http. LOGSVC (default
# .venv/bin/logsvc), DSN (default host=127.0.0.1 port=5432 dbname=test user=postgres) and
# SERVE_ARGS (more `serve` options, e.g. "--workers 2") may be set.
set -euo pipefail
records=$1 repeats=$2; shift 2
logsvc=${LOGSVC:-.venv/bin/logsvc}
dsn=${DSN:-host=127.0.0.1 port=5432 dbname=test user=postgres}
for ((r = 0; r < repeats; r++)); do
    for fmt in "$@"; do
        schema="ff_${fmt}_$r" work=$(mktemp -d /tmp/flood-formats.XXXXXX)
        psql -q "$dsn" -c "DROP SCHEMA IF EXISTS $schema CASCADE" 2>/dev/null
        "$logsvc" serve --listen 127.0.0.1:0 --listen-http 127.0.0.1:0 --dsn "$dsn" --schema "$schema" \
            --data-dir "$work/data" --fsync interval ${SERVE_ARGS:-} >"$work/log" 2>&1 &
        pid=$!
        port=
        for _ in $(seq 300); do  # at most 30 s
            port=$(grep -oP 'Listening on 127\.0\.0\.1:\K\d+(?= \(HTTP: POST /ingest)' "$work/log" 2>/dev/null | head -1 || true)
            [[ -n $port ]] && break
            sleep 0.1
        done
        [[ -n $port ]] || { echo "serve did not listen: $(tail -3 "$work/log")" >&2; kill "$pid"; exit 1; }
        "$logsvc" bench flood --format "$fmt" --port "$port" --dsn "$dsn" --schema "$schema" \
            --records "$records" --service-pid "$pid" --timeout 300 --json | tr -d '\n'
        echo
        kill -TERM "$pid"
        wait "$pid" || true
        psql -q "$dsn" -c "DROP SCHEMA $schema CASCADE" 2>/dev/null
        rm -rf "$work"
    done
done
