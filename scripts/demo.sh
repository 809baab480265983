#!/usr/bin/env bash
# `make demo`: the quick gc-tail-latency experiment on this machine, end to end:
# provision -> deploy -> run -> report, metrics into InfluxDB. Starts a local InfluxDB
# (Debian's influxdb, own data directory and port) unless LABCTL_INFLUX_URL is set.
set -euo pipefail
cd "$(dirname "$0")/.."
LAB=.venv/bin/labctl
DEMO=.demo
mkdir -p "$DEMO"

free_port() { .venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

if [ -z "${LABCTL_INFLUX_URL:-}" ]; then
  if [ -f "$DEMO/influxd.pid" ] && kill -0 "$(cat "$DEMO/influxd.pid")" 2>/dev/null; then
    port=$(cat "$DEMO/influxd.port")
  else
    port=$(free_port); bport=$(free_port)
    cat > "$DEMO/influxdb.conf" <<CONF
reporting-disabled = true
bind-address = "127.0.0.1:$bport"
[meta]
  dir = "$PWD/$DEMO/influxdb/meta"
[data]
  dir = "$PWD/$DEMO/influxdb/data"
  wal-dir = "$PWD/$DEMO/influxdb/wal"
[http]
  bind-address = "127.0.0.1:$port"
  log-enabled = false
CONF
    nohup influxd -config "$DEMO/influxdb.conf" >"$DEMO/influxd.log" 2>&1 &
    echo $! > "$DEMO/influxd.pid"; echo "$port" > "$DEMO/influxd.port"
    for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/ping" >/dev/null && break; sleep 0.2; done
    curl -sf -XPOST "http://127.0.0.1:$port/query" --data-urlencode "q=CREATE DATABASE labctl" >/dev/null
  fi
  export LABCTL_INFLUX_URL="http://127.0.0.1:$port" LABCTL_INFLUX_API=v1 LABCTL_INFLUX_DB=labctl
  echo "InfluxDB 1.x for the demo at $LABCTL_INFLUX_URL (pid $(cat "$DEMO/influxd.pid"); stop it with: kill $(cat "$DEMO/influxd.pid"))" >&2
fi

SECONDS=0
"$LAB" up experiments/gc-tail-latency.yaml -i inventories/local.yml --quick
echo
echo "demo finished in ${SECONDS}s. Next: labctl runs · labctl report RUN_ID · dashboards/ for Grafana (docs/grafana.md)"
