# Shared by the bench scripts (sourced; not run on its own). Needs $bin,
# the directory of the `consumers` binary, and the namespace's settings
# in the environment; $GROUP, when set, limits the backlog to one group.

# The local PostgreSQL: on its stock port, else the private cluster the
# main job and the tests start when none runs there (README, "On a fresh
# machine"). psql reads PGPORT; the binaries find the private broker alone.
if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  export PGPORT=5432
else
  export PGPORT=55432
fi

# The backlog (ready, unacked when known, retrying) of the namespace's
# groups, or of $GROUP only.
queued() {
  "$bin/consumers" stats 2>/dev/null | awk -v group="${GROUP:-}" '
    /^[a-z]+ / && $2 ~ /^[0-9]+$/ && (group == "" || $1 == group) { total += $5 }
    END { print total + 0 }'
}

# Waits until the backlog is gone for good, and prints when it first read
# empty (seconds since the epoch). The management API's figures lag a
# few seconds: the backlog is seen first (it could otherwise read 0 before
# the loaded messages are counted), and empty only counts when it stays
# so for longer than the API's sampling (5 s): a retry scheduled just
# before a sample is not in it yet.
until_drained() {
  local finished stable
  for _ in $(seq 150); do [ "$(queued)" != 0 ] && break; sleep 0.2; done
  while :; do
    while [ "$(queued)" != 0 ]; do sleep 0.2; done
    finished=$(date +%s.%N)
    stable=yes
    for _ in $(seq 30); do
      sleep 0.2
      [ "$(queued)" = 0 ] || { stable=no; break; }
    done
    [ "$stable" = yes ] && break
  done
  echo "$finished"
}
