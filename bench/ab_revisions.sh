#!/usr/bin/env bash
# A/B two revisions of the service under the same flood, alternating, on loopback.
#   bench/ab_revisions.sh OLD_REV [ROUNDS] [RECORDS]
# OLD_REV is checked out as a git worktree in a temp dir; "new" is this working tree. The
# load generator is always this tree's `logsvc bench flood`. Prints: round side rec/s cpu_us lost dup
set -euo pipefail
old_rev=${1:?usage: bench/ab_revisions.sh OLD_REV [ROUNDS] [RECORDS]}
rounds=${2:-3}
records=${3:-300000}
here=$(cd "$(dirname "$0")/.." && pwd)
py=$here/.venv/bin/python
dsn=${LOGSVC_TEST_DSN:-host=127.0.0.1 port=5432 dbname=test user=postgres}
old=$(mktemp -d /tmp/logsvc-ab-XXXXXX)
git -C "$here" worktree add -q --detach "$old/tree" "$old_rev"
trap 'git -C "$here" worktree remove --force "$old/tree"; rm -rf "$old"' EXIT
for round in $(seq 1 "$rounds"); do
  for side in old new; do
    src=$old/tree/src; [ "$side" = new ] && src=$here/src
    dd=$old/data-$side; rm -rf "$dd"; mkdir -p "$dd"
    schema=ab_$side
    psql -qX "$dsn" -c "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null 2>&1 || true
    # The old side may not know --metrics; the new side must not take the default port.
    extra=(); PYTHONPATH=$src "$py" -m logsvc serve --help | grep -q -- --metrics && extra=(--metrics 127.0.0.1:0)
    PYTHONPATH=$src "$py" -m logsvc serve --listen 127.0.0.1:47200 --dsn "$dsn" --schema $schema \
        --data-dir "$dd" --stats-interval 0 "${extra[@]}" >"$dd/log" 2>&1 &
    pid=$!
    for _ in $(seq 1 300); do grep -q "Connected to PostgreSQL" "$dd/log" && break; sleep 0.1; done
    PYTHONPATH=$here/src timeout 600 "$py" -m logsvc bench flood --port 47200 --records "$records" \
        --dsn "$dsn" --schema $schema --service-pid $pid --json 2>/dev/null \
      | "$py" -c "import sys,json; r=json.load(sys.stdin); print('$round $side', round(r['records_per_s']), round(r['cpu_us_per_record'], 1), r['lost'], r['duplicated'])"
    kill -TERM $pid; wait $pid 2>/dev/null || true
    psql -qX "$dsn" -c "DROP SCHEMA IF EXISTS $schema CASCADE" >/dev/null 2>&1 || true
  done
done
