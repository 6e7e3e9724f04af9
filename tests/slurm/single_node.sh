#!/usr/bin/env bash
# A real single-node Slurm from Debian's packages, for the `slurm` tests and CI.
#
#   tests/slurm/single_node.sh install  # apt-get install slurmctld slurmd slurm-client munge
#   tests/slurm/single_node.sh up       # (install,) write slurm.conf, start munged, slurmctld,
#                                       # slurmd; wait until the node is idle
#   tests/slurm/single_node.sh down     # stop what `up` started, nothing else
#   tests/slurm/single_node.sh status   # sinfo, or why there is no cluster
#
# The cluster: this host as its only node, with the CPU count and memory `slurmd -C` finds,
# no accounting (no slurmdbd: `sacct` does not work, as on many small sites), and two
# partitions, `batch` (the default) and `gpu` (same node; no GPUs configured). A Slurm that
# already answers (`scontrol ping`) is reused as it is, and `down` leaves it running.
#
# `up` prints `started: <daemons>` (empty when it reused a running cluster). Exit status 77
# means "cannot here" (not root, no apt-get, no packages), with the reason on stderr's last
# line; any other non-zero status is a real failure.
set -euo pipefail

STATE=/run/lipbench-slurm          # what `up` started / wrote, for `down`
CONF=/etc/slurm/slurm.conf
MARK="# Written by lipbench tests/slurm/single_node.sh"
PACKAGES=(slurmctld slurmd slurm-client munge)
HOST=$(hostname -s)

cannot() { echo "cannot start a Slurm here: $*" >&2; exit 77; }
die() { echo "error: $*" >&2; exit 1; }
log() { echo "slurm: $*" >&2; }

have_packages() {
  command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
    && command -v sbatch >/dev/null && command -v munged >/dev/null
}

cmd_install() {
  have_packages && return 0
  [ "$(id -u)" = 0 ] || cannot "the Slurm packages are missing and installing them needs root"
  command -v apt-get >/dev/null || cannot "the Slurm packages are missing and there is no apt-get"
  log "installing ${PACKAGES[*]} (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  # An apt failure (no network, no such package) is "cannot here", not a test failure.
  { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}"; } \
    >"${TMPDIR:-/tmp}/lipbench-slurm-apt.log" 2>&1 \
    || cannot "apt-get install ${PACKAGES[*]} failed (see ${TMPDIR:-/tmp}/lipbench-slurm-apt.log)"
  have_packages || cannot "apt-get ran but slurmctld/slurmd/sbatch/munged are still missing"
}

ctld_up() { scontrol ping 2>/dev/null | grep -q "is UP"; }
munge_up() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }
node_state() { sinfo -h -N -n "$HOST" -o %T 2>/dev/null | head -1; }

# A pid from a pid file, only if that process is still the daemon named.
daemon_pid() {
  local pidfile=$1 name=$2 pid
  [ -r "$pidfile" ] || return 1
  pid=$(cat "$pidfile")
  [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ] && echo "$pid"
}

write_conf() {
  local node
  # `slurmd -C` prints this host's real node line (CPUs, sockets, cores, RealMemory).
  node=$(slurmd -C | head -1)
  [[ $node == NodeName=* ]] || die "slurmd -C printed no node line: $node"
  mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm
  cat >"$CONF" <<EOF
$MARK: a single-node test cluster.
ClusterName=lipbench
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
# Slurm's default: finished jobs stay visible to squeue for 5 minutes (the workflow's
# profile polls job states with squeue when there is no accounting).
MinJobAge=300
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
$node
PartitionName=batch Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$HOST MaxTime=INFINITE State=UP
EOF
}

wait_idle() {
  local state i
  for i in $(seq 1 60); do
    state=$(node_state || true)
    case "$state" in
      idle|mixed|allocated) return 0 ;;
      down*|drain*|fail*) scontrol update NodeName="$HOST" State=RESUME >/dev/null 2>&1 || true ;;
    esac
    sleep 1
  done
  die "node $HOST is '${state:-unknown}' after 60 s, not idle (see /var/log/slurm/*.log)"
}

cmd_up() {
  if have_packages && ctld_up; then
    log "reusing the running Slurm"
    wait_idle
    echo "started:"
    return 0
  fi
  [ "$(id -u)" = 0 ] || cannot "no Slurm is running and starting one needs root"
  cmd_install
  if [ -e "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
    cannot "$CONF exists (not written by this script) but no slurmctld answers; not touching it"
  fi
  mkdir -p "$STATE"
  write_conf
  echo "$CONF" >"$STATE/conf"
  local started=()
  if ! munge_up; then
    [ -s /etc/munge/munge.key ] || { mungekey --create --keyfile /etc/munge/munge.key \
      && chown munge:munge /etc/munge/munge.key && chmod 600 /etc/munge/munge.key; }
    install -d -o munge -g munge -m 0755 /run/munge
    runuser -u munge -- /usr/sbin/munged
    for _ in $(seq 1 20); do munge_up && break; sleep 0.25; done
    munge_up || die "munged did not start (see /var/log/munge/munged.log)"
    echo "munged /run/munge/munged.pid" >>"$STATE/started"
    started+=(munged)
  fi
  # -c: a fresh controller state (no jobs or node states left from an earlier run).
  /usr/sbin/slurmctld -c
  echo "slurmctld /run/slurmctld.pid" >>"$STATE/started"
  started+=(slurmctld)
  for _ in $(seq 1 40); do ctld_up && break; sleep 0.25; done
  ctld_up || die "slurmctld did not answer (see /var/log/slurm/slurmctld.log)"
  if ! daemon_pid /run/slurmd.pid slurmd >/dev/null; then
    /usr/sbin/slurmd
    echo "slurmd /run/slurmd.pid" >>"$STATE/started"
    started+=(slurmd)
  fi
  wait_idle
  echo "started: ${started[*]}"
}

stop_daemon() {
  local name=$1 pidfile=$2 pid
  pid=$(daemon_pid "$pidfile" "$name") || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.25; done
  log "$name ($pid) ignored SIGTERM for 15 s; SIGKILL"
  kill -KILL "$pid" 2>/dev/null || true
}

cmd_down() {
  [ -s "$STATE/started" ] || { log "nothing to stop (this script started no daemon)"; return 0; }
  if grep -q '^slurmctld ' "$STATE/started" && ctld_up; then
    # Our own cluster: cancel whatever a failed test left queued or running.
    mapfile -t jobs < <(squeue -h -o %A 2>/dev/null || true)
    if [ "${#jobs[@]}" -gt 0 ]; then
      scancel "${jobs[@]}" 2>/dev/null || true
      for _ in $(seq 1 40); do [ -z "$(squeue -h -o %A 2>/dev/null)" ] && break; sleep 0.5; done
    fi
  fi
  # Stop in reverse start order: slurmd, slurmctld, munged.
  for name in slurmd slurmctld munged; do
    pidfile=$(awk -v n="$name" '$1 == n {print $2}' "$STATE/started")
    [ -n "$pidfile" ] && stop_daemon "$name" "$pidfile"
  done
  if [ -s "$STATE/conf" ] && grep -qF "$MARK" "$(cat "$STATE/conf")" 2>/dev/null; then
    rm -f "$(cat "$STATE/conf")"
  fi
  rm -rf "$STATE"
  log "stopped"
}

cmd_status() {
  have_packages || { echo "no Slurm packages"; return 0; }
  ctld_up || { echo "no slurmctld answers"; return 0; }
  sinfo
}

case "${1:-}" in
  install) cmd_install ;;
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  *) echo "usage: $0 install|up|down|status" >&2; exit 2 ;;
esac
