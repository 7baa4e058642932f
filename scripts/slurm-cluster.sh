#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for scripts/slurm-demo.sh and for trying
# examples/distributed/slurm-array.sbatch by hand. Needs root (apt-get, /etc/slurm, the daemons).
#
#   scripts/slurm-cluster.sh start    installs slurm-wlm and munge if missing, writes the config,
#                                     starts munged, slurmctld and slurmd, waits for the node to be idle
#   scripts/slurm-cluster.sh stop     stops exactly the daemons `start` started (by their pids)
#   scripts/slurm-cluster.sh status   which daemons run, and sinfo
#
# The cluster: slurmctld and slurmd on this host, no cgroups (ProctrackType=proctrack/linuxproc,
# TaskPlugin=task/none: works in containers), no accounting, one partition `debug`. The node
# declares at least 4 CPUs even on a 2-core machine (SLURM_CLUSTER_CPUS overrides), so the four
# tasks of `--array=0-3` run at once; they mostly wait on the LLM, so oversubscribing is fine.
#
# Environment: SLURM_CLUSTER_DIR (state, logs, pid files; default /var/lib/improve-slurm),
# SLURM_CLUSTER_CPUS (default: the larger of nproc and 4).
set -euo pipefail

DIR=${SLURM_CLUSTER_DIR:-/var/lib/improve-slurm}
CONF=/etc/slurm/slurm.conf
MARKER="# written by improve's scripts/slurm-cluster.sh"
HOST=$(hostname -s)

die() { echo "slurm-cluster: $*" >&2; exit 1; }

alive() { # pidfile -> true when the pid it names runs
  [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null
}

install_missing() {
  local missing=()
  command -v slurmctld >/dev/null || missing+=(slurm-wlm)
  command -v munged >/dev/null || missing+=(munge)
  ((${#missing[@]} == 0)) && return 0
  [[ $(id -u) == 0 ]] || die "needs root to install ${missing[*]} (apt-get install -y ${missing[*]})"
  echo "slurm-cluster: installing ${missing[*]}"
  apt-get update -qq
  # The packages' own start-up (systemd units) does not apply here: this script starts the daemons.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

write_config() {
  if [[ -e $CONF ]] && ! grep -qF "$MARKER" "$CONF"; then
    die "$CONF exists and was not written by this script; not overwriting it (a real cluster?)"
  fi
  local cpus=${SLURM_CLUSTER_CPUS:-}
  if [[ -z $cpus ]]; then
    cpus=$(nproc)
    ((cpus < 4)) && cpus=4
  fi
  # Memory as the node has it, less a tenth, so a job's --mem is checked against something real.
  local mem_mb
  mem_mb=$(awk '/^MemTotal:/ { print int($2 / 1024 * 0.9) }' /proc/meminfo)
  mkdir -p /etc/slurm "$DIR"/{state,spool,log}
  cat >"$CONF" <<EOF
$MARKER: a one-node cluster
# (slurmctld and slurmd on $HOST). Delete this file, or run \`scripts/slurm-cluster.sh stop\`, to undo.
ClusterName=improve-demo
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.slurm.pid
SlurmdPidFile=$DIR/slurmd.slurm.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
# No cgroups: plain process tracking and no task binding, so it runs in a container too.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
# Consumable CPUs: one CPU a task, several tasks on the node at once.
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
# The node reports the CPUs written here rather than the ones it counts.
SlurmdParameters=config_overrides
ReturnToService=2
MpiDefault=none
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
MinJobAge=300
KillWait=10
Waittime=0
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
}

start_munge() {
  # A munged that already answers (the system's, or ours from before) is used as it is.
  if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then return 0; fi
  if [[ ! -s /etc/munge/munge.key ]]; then
    echo "slurm-cluster: making a munge key"
    mungekey --create --keyfile=/etc/munge/munge.key
    chown munge:munge /etc/munge/munge.key
    chmod 400 /etc/munge/munge.key
  fi
  mkdir -p /run/munge
  chown munge:munge /run/munge
  chmod 755 /run/munge
  # munged runs as its own user and daemonizes; its pid file says which process to stop.
  rm -f /run/munge/munged.pid
  runuser -u munge -- munged >"$DIR/log/munged.out" 2>&1 </dev/null
  for _ in $(seq 50); do
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
      cp /run/munge/munged.pid "$DIR/munged.pid"
      return 0
    fi
    sleep 0.1
  done
  die "munged did not start: $(tail -n 5 "$DIR/log/munged.out")"
}

start_daemon() { # name -> starts /usr/sbin/<name> in the foreground mode, in the background
  local name=$1
  alive "$DIR/$name.pid" && return 0
  if pgrep -x "$name" >/dev/null; then
    die "a $name this script did not start is running (pid $(pgrep -x "$name" | head -n1)); stop it first"
  fi
  # slurmctld -c: ignore saved jobs and node states from an earlier cluster of this script.
  local flags=(-D)
  [[ $name == slurmctld ]] && flags+=(-c -i)
  setsid "/usr/sbin/$name" "${flags[@]}" -f "$CONF" >"$DIR/log/$name.out" 2>&1 </dev/null &
  echo $! >"$DIR/$name.pid"
}

start() {
  install_missing
  [[ $(id -u) == 0 ]] || die "needs root (it writes $CONF and starts the daemons)"
  local t0=$SECONDS
  write_config
  start_munge
  start_daemon slurmctld
  for _ in $(seq 100); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.2; done
  scontrol ping 2>/dev/null | grep -q UP || die "slurmctld does not answer; see $DIR/log/slurmctld.log"
  start_daemon slurmd
  local state=
  for _ in $(seq 150); do
    state=$(sinfo -h -N -n "$HOST" -o %t 2>/dev/null || true)
    [[ $state == idle || $state == mix || $state == alloc ]] && break
    # A node left down or drained by an earlier cluster comes back.
    if [[ $state == down* || $state == drain* ]]; then
      scontrol update nodename="$HOST" state=resume 2>/dev/null || true
    fi
    sleep 0.2
  done
  [[ $state == idle || $state == mix || $state == alloc ]] \
    || die "node $HOST is '${state:-unknown}', not idle; see $DIR/log/slurmd.log"
  echo "slurm-cluster: up in $((SECONDS - t0)) s: node $HOST, $(sinfo -h -N -o '%c CPUs, %t')"
}

stop() {
  local name pidfile pid stopped=()
  # slurmd before slurmctld before munged: the reverse of start.
  for name in slurmd slurmctld munged; do
    pidfile=$DIR/$name.pid
    if alive "$pidfile"; then
      pid=$(cat "$pidfile")
      kill "$pid"
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
      stopped+=("$name ($pid)")
    fi
    rm -f "$pidfile"
  done
  if ((${#stopped[@]})); then
    echo "slurm-cluster: stopped ${stopped[*]}"
  else
    echo "slurm-cluster: nothing of ours was running"
  fi
}

status() {
  local name rc=0
  for name in munged slurmctld slurmd; do
    if alive "$DIR/$name.pid"; then
      echo "$name: running (pid $(cat "$DIR/$name.pid"))"
    else
      echo "$name: not started by this script"
      [[ $name == munged ]] || rc=3
    fi
  done
  sinfo 2>/dev/null || true
  return $rc
}

case ${1:-} in
  start) start ;;
  stop) stop ;;
  status) status ;;
  *) echo "usage: $0 {start|stop|status}" >&2; exit 2 ;;
esac
