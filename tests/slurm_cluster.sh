#!/usr/bin/env bash
# A real one-node SLURM cluster on this machine, for the `slurm` tests (tests/test_cluster.py).
#
#   sudo tests/slurm_cluster.sh            # start (idempotent: what already runs is left running)
#   sudo tests/slurm_cluster.sh status     # daemons and the node's state
#   sudo tests/slurm_cluster.sh stop       # stop slurmd, slurmctld and munged (only those this script started)
#
# Needs Debian's packages: apt-get install -y munge slurmctld slurmd slurm-client (.ci/run does it).
# Starts munged, then slurmctld, then slurmd, as root, with DECISIONS 24's settings: one node named
# $(hostname -s) with 2 CPUs, proctrack/linuxproc, task/none, SlurmUser=root, no accounting (submitit
# warns that sacct has no accounting: harmless). Everything it writes besides /etc/slurm/slurm.conf lives
# under $STATE; it refuses to replace a slurm.conf it did not write.
set -euo pipefail

STATE=${MINIGRAD_SLURM_STATE:-/var/lib/minigrad-slurm}
CONF=/etc/slurm/slurm.conf
MARK="# written by minigrad tests/slurm_cluster.sh"
HOST=$(hostname -s)
CPUS=${MINIGRAD_SLURM_CPUS:-2}

say() { echo "slurm_cluster: $*"; }
die() { echo "slurm_cluster: error: $*" >&2; exit 1; }

alive() {  # alive PIDFILE: the process named in PIDFILE runs
    [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null
}

stop_one() {  # stop_one NAME PIDFILE
    local pid
    if alive "$2"; then
        pid=$(cat "$2")
        kill "$pid"
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
        say "stopped $1 (pid $pid)"
    fi
    rm -f "$2"
}

node_state() { sinfo -h -n "$HOST" -o %t 2>/dev/null | head -1; }

case ${1:-start} in
stop)
    scancel --full --quiet -u root 2>/dev/null || true  # jobs first, so no step outlives its daemon
    stop_one slurmd "$STATE/slurmd.pid"
    stop_one slurmctld "$STATE/slurmctld.pid"
    stop_one munged "$STATE/munged.pid"
    exit 0 ;;
status)
    for d in munged slurmctld slurmd; do
        if alive "$STATE/$d.pid"; then say "$d running (pid $(cat "$STATE/$d.pid"))"; else say "$d not running"; fi
    done
    say "node $HOST: $(node_state || true)"
    exit 0 ;;
start) ;;
*) die "usage: $0 [start|stop|status]" ;;
esac

[[ $(id -u) -eq 0 ]] || die "run as root (the daemons run as root: SlurmUser=root)"
for exe in munged slurmctld slurmd sbatch; do
    command -v "$exe" >/dev/null || die "$exe not found: apt-get install -y munge slurmctld slurmd slurm-client"
done

mkdir -p "$STATE"/{ctld,spool,log} /etc/slurm
# --- slurm.conf (the memory is the machine's, so --mem requests up to it are accepted)
mem_mb=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
conf=$(cat <<EOF
$MARK
ClusterName=minigrad
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
ReturnToService=2
SlurmdTimeout=60
InactiveLimit=0
KillWait=5
MinJobAge=300
NodeName=$HOST CPUs=$CPUS RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
)
if [[ -e $CONF ]] && ! grep -qxF "$MARK" "$CONF"; then
    die "$CONF exists and was not written by this script; move it away to use the test cluster"
fi
if [[ ! -e $CONF ]] || [[ "$(cat "$CONF")" != "$conf" ]]; then
    printf '%s\n' "$conf" > "$CONF"
    if alive "$STATE/slurmctld.pid" || alive "$STATE/slurmd.pid"; then
        say "slurm.conf changed: restarting the SLURM daemons"
        stop_one slurmd "$STATE/slurmd.pid"
        stop_one slurmctld "$STATE/slurmctld.pid"
    fi
fi

# --- munged (runs as the munge user, as Debian's service does)
if ! alive "$STATE/munged.pid"; then
    install -d -o munge -g munge -m 0755 /run/munge
    [[ -s /etc/munge/munge.key ]] || { mungekey --create --force && chown munge:munge /etc/munge/munge.key; }
    runuser -u munge -- munged --force
    for _ in $(seq 50); do [[ -s /run/munge/munged.pid ]] && break; sleep 0.1; done
    cp /run/munge/munged.pid "$STATE/munged.pid"
    say "started munged (pid $(cat "$STATE/munged.pid"))"
fi
munge -n | unmunge >/dev/null || die "munge does not work (see /var/log/munge/munged.log)"

# --- slurmctld, then slurmd
if ! alive "$STATE/slurmctld.pid"; then
    slurmctld
    for _ in $(seq 100); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.1; done
    say "started slurmctld (pid $(cat "$STATE/slurmctld.pid"))"
fi
scontrol ping | grep -q UP || die "slurmctld does not answer (see $STATE/log/slurmctld.log)"
if ! alive "$STATE/slurmd.pid"; then
    slurmd
    for _ in $(seq 50); do alive "$STATE/slurmd.pid" && break; sleep 0.1; done
    say "started slurmd (pid $(cat "$STATE/slurmd.pid"))"
fi

# --- the node must be usable before the tests submit anything
for _ in $(seq 150); do
    case $(node_state) in
        idle|mix|alloc|comp) break ;;
        down*|drain*|drng*) scontrol update NodeName="$HOST" State=RESUME 2>/dev/null || true ;;
    esac
    sleep 0.2
done
state=$(node_state)
case $state in idle|mix|alloc|comp) ;; *) die "node $HOST is '$state' (see $STATE/log/slurmd.log)" ;; esac
say "one-node cluster up: node $HOST ($CPUS CPUs, state $state), partition debug"
say "stop it with: $0 stop"
