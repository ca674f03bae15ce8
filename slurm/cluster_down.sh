#!/usr/bin/env bash
# Stop the test cluster started by slurm/cluster_up.sh from the same STATE_DIR (default /tmp/abcx-slurm).
# A multi-node cluster's namespaces and bridge (listed in STATE_DIR/etc/network.list) are removed.
# Only daemons named in STATE_DIR/run/*.pid are stopped, each checked against its expected program
# name so a recycled PID is never hit. Already-dead daemons and missing pid files are fine.
# State (job ids, the accounting database) stays in STATE_DIR for the next start; delete it to reset.
set -uo pipefail
exec 3>&1 1>&2

STATE_DIR="${1:-/tmp/abcx-slurm}"
RUN="$STATE_DIR/run"
CONF="$STATE_DIR/etc/slurm.conf"
log() { echo "[cluster_down] $*" >&2; }
# A killed daemon stays a zombie until PID 1 reaps it (slowly in some containers): that is dead.
alive() { local st; st="$(ps -o stat= -p "$1" 2>/dev/null)" && [[ -n "$st" && "$st" != Z* ]]; }

[[ -d "$RUN" ]] || { log "nothing to stop in $STATE_DIR"; exit 0; }

# Running jobs would outlive slurmd (slurmstepd detaches): cancel them while the controller answers.
if [[ -f "$CONF" ]] && SLURM_CONF="$CONF" timeout 5 scontrol ping 2>/dev/null | grep -q 'is UP'; then
    jobs="$(SLURM_CONF="$CONF" timeout 10 squeue -h -t RUNNING,PENDING,SUSPENDED,REQUEUED -o %A 2>/dev/null | sort -u)"
    if [[ -n "$jobs" ]]; then
        log "cancelling jobs: ${jobs//$'\n'/ }"
        # shellcheck disable=SC2086
        SLURM_CONF="$CONF" timeout 10 scancel $jobs 2>/dev/null || true
        for _ in $(seq 20); do
            [[ -z "$(SLURM_CONF="$CONF" timeout 5 squeue -h -t RUNNING,COMPLETING -o %A 2>/dev/null)" ]] && break
            sleep 0.5
        done
    fi
fi

signal_daemon() {  # signal_daemon NAME COMM: SIGTERM the pid in RUN/NAME.pid if it is still COMM; echo it
    local name=$1 comm=$2 pidfile="$RUN/$1.pid" pid
    [[ -f "$pidfile" ]] || return 0
    pid="$(tr -dc 0-9 <"$pidfile")"
    rm -f "$pidfile"
    if [[ -z "$pid" ]] || ! alive "$pid"; then
        log "$name: not running"
    elif [[ "$(cat "/proc/$pid/comm" 2>/dev/null)" != "$comm"* ]]; then
        log "$name: pid $pid is now $(cat "/proc/$pid/comm" 2>/dev/null), not $comm; leaving it alone"
    else
        kill -TERM "$pid" 2>/dev/null && echo "$name:$pid"
    fi
}

stop_all() {  # stop_all NAME... : SIGTERM them together (each takes ~2 s to exit), SIGKILL stragglers
    local name entries=() e
    for name in "$@"; do
        e="$(signal_daemon "$name" "${name%%-*}")"  # slurmd-n1.pid belongs to a slurmd
        [[ -n "$e" ]] && entries+=("$e")
    done
    for e in "${entries[@]}"; do
        local pid=${e#*:}
        for _ in $(seq 40); do alive "$pid" || break; sleep 0.2; done
        if alive "$pid"; then
            log "${e%%:*}: pid $pid ignored SIGTERM for 8 s; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null
        fi
        log "${e%%:*}: stopped (pid $pid)"
    done
}

# Slurm daemons first, while accounting and munge still answer, then what they depended on.
# A multi-node cluster has one slurmd per node (slurmd-<node>.pid).
slurmds=()
for f in "$RUN"/slurmd.pid "$RUN"/slurmd-*.pid; do [[ -f "$f" ]] && slurmds+=("$(basename "$f" .pid)"); done
stop_all "${slurmds[@]}" slurmctld
stop_all slurmdbd mariadbd munged

# Multi-node: remove the namespaces and the bridge cluster_up.sh listed, newest first. Any
# process still inside one of these namespaces (a job step slurmd left behind) is ours: stop it first.
NET_LIST="$STATE_DIR/etc/network.list"
if [[ -s "$NET_LIST" ]]; then
    tac "$NET_LIST" | while read -r kind name; do
        case "$kind" in
            netns)
                pids="$(ip netns pids "$name" 2>/dev/null)"
                # shellcheck disable=SC2086
                [[ -n "$pids" ]] && { log "$name: killing leftover processes $(echo $pids)"; kill -KILL $pids 2>/dev/null; sleep 0.5; }
                ip netns del "$name" 2>/dev/null && log "$name: namespace removed" ;;
            bridge) ip link del "$name" 2>/dev/null && log "$name: bridge removed" ;;
            # Deleting a namespace destroys its veth end; the host end may linger a moment: delete it too.
            veth) ip link del "$name" 2>/dev/null || true ;;
        esac
    done
    rm -f "$NET_LIST"
fi
exit 0
