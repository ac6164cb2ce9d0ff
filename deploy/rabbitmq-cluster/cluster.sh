#!/usr/bin/env bash
# A three-node RabbitMQ cluster on this machine, for trying and testing
# Switchyard against a cluster: three nodes on their own ports, one Erlang
# cookie, joined into one cluster (quorum queues declared by Switchyard are
# then replicated over the three).
#
#   deploy/rabbitmq-cluster/cluster.sh start       # start (or finish starting) all three
#   deploy/rabbitmq-cluster/cluster.sh url         # AMQP_URL listing the three nodes
#   deploy/rabbitmq-cluster/cluster.sh stop-node 2 # stop one node (start-node 2 starts it again)
#   deploy/rabbitmq-cluster/cluster.sh status
#   deploy/rabbitmq-cluster/cluster.sh ctl 1 list_queues name leader  # rabbitmqctl on node 1
#   deploy/rabbitmq-cluster/cluster.sh stop        # stop all three and forget the cluster
#
# Node N (1-3) is rabbit-cluster-N@localhost, AMQP on 56710+N, management
# on 56720+N, Erlang distribution on 56730+N. Everything lives under
# SWITCHYARD_CLUSTER_DIR (default /tmp/switchyard-rabbitmq-cluster).
# Across hosts: one node per host on the stock ports, the same
# /var/lib/rabbitmq/.erlang.cookie on each, `rabbitmqctl join_cluster
# rabbit@first-host` on the others (see the README).
set -euo pipefail

dir=${SWITCHYARD_CLUSTER_DIR:-/tmp/switchyard-rabbitmq-cluster}
# Debian's /usr/sbin wrappers switch to the rabbitmq user; the nodes here
# run as whoever runs the script, in directories it owns.
bin=/usr/lib/rabbitmq/bin
[ -x "$bin/rabbitmq-server" ] || bin=$(dirname "$(command -v rabbitmq-server)")
server=$bin/rabbitmq-server
ctl=$bin/rabbitmqctl

node_name() { echo "rabbit-cluster-$1@localhost"; }
amqp_port() { echo $((56710 + $1)); }
management_port() { echo $((56720 + $1)); }
dist_port() { echo $((56730 + $1)); }

# rabbitmqctl aimed at node N, with the cluster's cookie.
ctl() {
  local n=$1
  shift
  HOME="$dir/home" RABBITMQ_NODENAME=$(node_name "$n") "$ctl" -n "$(node_name "$n")" "$@"
}

answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

start_node() {
  local n=$1 home="$dir/node$1"
  if answers "$(amqp_port "$n")"; then
    return 0
  fi
  mkdir -p "$home/log" "$home/mnesia" "$dir/home"
  echo "[rabbitmq_management]." > "$home/enabled_plugins"
  cat > "$home/rabbitmq.conf" <<CONF
listeners.tcp.default = $(amqp_port "$n")
management.tcp.port = $(management_port "$n")
management.tcp.ip = 127.0.0.1
CONF
  (
    cd "$home"
    HOME="$dir/home" \
      RABBITMQ_NODENAME=$(node_name "$n") \
      RABBITMQ_NODE_PORT=$(amqp_port "$n") \
      RABBITMQ_DIST_PORT=$(dist_port "$n") \
      RABBITMQ_MNESIA_BASE="$home/mnesia" \
      RABBITMQ_LOG_BASE="$home/log" \
      RABBITMQ_ENABLED_PLUGINS_FILE="$home/enabled_plugins" \
      RABBITMQ_CONFIG_FILE="$home/rabbitmq.conf" \
      RABBITMQ_PID_FILE="$home/pid" \
      setsid "$server" > "$home/console.log" 2>&1 < /dev/null &
    echo $! > "$home/server.pid"
  )
  local waited=0
  until answers "$(amqp_port "$n")" && answers "$(management_port "$n")"; do
    if ! kill -0 "$(cat "$home/server.pid")" 2>/dev/null; then
      echo "node $n exited; see $home/console.log" >&2
      return 1
    fi
    sleep 1
    waited=$((waited + 1))
    if [ "$waited" -ge 120 ]; then
      echo "node $n did not start in 120 s; see $home/console.log and $home/log" >&2
      return 1
    fi
  done
}


join_node() {
  local n=$1
  if ctl "$n" cluster_status --formatter json 2>/dev/null | grep -q "\"running_nodes\":\[[^]]*$(node_name 1)"; then
    return 0
  fi
  ctl "$n" stop_app > /dev/null
  ctl "$n" join_cluster "$(node_name 1)" > /dev/null
  ctl "$n" start_app > /dev/null
}

case "${1:-}" in
  start)
    # The first node makes the cookie the others share.
    start_node 1
    start_node 2
    start_node 3
    join_node 2
    join_node 3
    ctl 1 await_online_nodes 3 > /dev/null
    echo "cluster of 3 nodes running; AMQP_URL=$("$0" url)"
    ;;
  start-node)
    start_node "${2:?node number 1-3}"
    ctl "$2" await_startup > /dev/null
    ;;
  stop-node)
    ctl "${2:?node number 1-3}" stop > /dev/null
    ;;
  url)
    echo "amqp://guest:guest@127.0.0.1:$(amqp_port 1)/%2f,amqp://guest:guest@127.0.0.1:$(amqp_port 2)/%2f,amqp://guest:guest@127.0.0.1:$(amqp_port 3)/%2f"
    ;;
  management-url)
    echo "http://guest:guest@127.0.0.1:$(management_port "${2:-1}")"
    ;;
  status)
    ctl 1 cluster_status
    ;;
  ctl)
    # rabbitmqctl aimed at node N: ctl N list_queues name leader
    n=${2:?node number 1-3}
    shift 2
    ctl "$n" "$@"
    ;;
  stop)
    for n in 1 2 3; do ctl "$n" stop > /dev/null 2>&1 || true; done
    rm -rf "$dir"
    ;;
  *)
    echo "usage: $0 start | url | management-url [N] | start-node N | stop-node N | status | ctl N ARGS... | stop" >&2
    exit 2
    ;;
esac
