#!/usr/bin/env bash
# Start a real SLURM cluster (munge, MariaDB, slurmdbd, slurmctld, slurmd) for tests: one node on
# loopback, or (ABCX_SLURM_NODES=N >= 2) N compute nodes on this one machine, each slurmd in a network
# namespace of its own with its own address on a bridge (veth pairs), slurmctld on the host side.
#
#   eval "$(slurm/cluster_up.sh [STATE_DIR])"     # default STATE_DIR: /tmp/abcx-slurm
#
# Multi-node layout (SUBNET = ABCX_SLURM_SUBNET, NET = ABCX_SLURM_NET_NAME):
#   host:  bridge NETbr at SUBNET.1 (slurmctld, munge, slurmdbd stay on the host)
#   node i (n1..nN): namespace NET-ni, veth NETci at SUBNET.(10+i); its slurmd (and so every job step
#   on it) runs in that network namespace, with host name ni (a UTS namespace), and in a mount
#   namespace of its own where STATE_DIR/etc/hosts (every node's name and address) is bound over
#   /etc/hosts, so node names resolve in jobs.
# Everything created is listed in STATE_DIR/etc/network.list; cluster_down.sh removes exactly that.
# Nothing under /etc is changed (not `ip netns exec`: it remounts /sys, hiding the cgroup mounts slurmd needs).
#
# Needs root on Debian (apt-get) and no systemd: every daemon is started directly and records its
# PID under STATE_DIR/run, which slurm/cluster_down.sh uses to stop exactly what was started here.
# stdout carries only `export ...` lines (for eval); everything else goes to stderr.
# Running it again while the cluster from the same STATE_DIR answers reuses that cluster.
#
# Environment knobs:
#   ABCX_SLURM_PORT_BASE  first of 4 TCP ports on loopback (slurmctld, slurmd, slurmdbd, mariadb); 16817
#   ABCX_SLURM_ACCOUNTING 0 to skip slurmdbd/MariaDB (no sacct); default 1
#   ABCX_SLURM_TIMEOUT    seconds to wait for the node(s) to become idle; default 90
#   ABCX_SLURM_NODES      compute nodes; default 1 (loopback, no namespaces)
#   ABCX_SLURM_NET_NAME   multi-node: prefix of the namespace, bridge and veth names; default abcx<PORT_BASE>
#   ABCX_SLURM_SUBNET     multi-node: first three octets of the private /24; default from the port base,
#                         10.<PORT_BASE / 256>.<PORT_BASE % 256> (10.73.133 for 18821)
set -euo pipefail

# fd 3 is the real stdout (for the export lines); all other output goes to stderr.
exec 3>&1 1>&2

STATE_DIR="${1:-/tmp/abcx-slurm}"
mkdir -p "$STATE_DIR"
STATE_DIR="$(cd "$STATE_DIR" && pwd)"
PORT_BASE="${ABCX_SLURM_PORT_BASE:-16817}"
NODES="${ABCX_SLURM_NODES:-1}"
# Multi-node clusters skip accounting unless asked: squeue keeps finished jobs for MinJobAge anyway.
WANT_ACCOUNTING="${ABCX_SLURM_ACCOUNTING:-$([[ "$NODES" == 1 ]] && echo 1 || echo 0)}"
TIMEOUT="${ABCX_SLURM_TIMEOUT:-90}"
NET_NAME="${ABCX_SLURM_NET_NAME:-abcx$PORT_BASE}"
# The port base names the subnet too (10.<high byte>.<low byte>): clusters on other port bases never share one.
SUBNET="${ABCX_SLURM_SUBNET:-10.$(( PORT_BASE >> 8 & 255 )).$(( PORT_BASE & 255 ))}"
CLUSTER_NAME=abcx
# Exit codes: 0 up, 1 the cluster failed to start, 3 SLURM cannot be installed or run here
# (not root, no apt-get, packages unavailable) -- callers may treat 3 as "skip".

CONF="$STATE_DIR/etc/slurm.conf"
DBD_CONF="$STATE_DIR/etc/slurmdbd.conf"
RUN="$STATE_DIR/run"
LOG="$STATE_DIR/log"
MUNGE_SOCKET="$RUN/munge.socket"
CTLD_PORT=$PORT_BASE
SLURMD_PORT=$((PORT_BASE + 1))
DBD_PORT=$((PORT_BASE + 2))
DB_PORT=$((PORT_BASE + 3))

NET_LIST="$STATE_DIR/etc/network.list"

log() { echo "[cluster_up] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }
cannot() { log "CANNOT RUN SLURM HERE: $*"; exit 3; }

[[ "$NODES" =~ ^[1-9][0-9]?$ ]] || die "ABCX_SLURM_NODES=$NODES: a node count from 1 to 99"
if ((NODES > 1)); then
    # Interface names have at most 15 characters: NET + "br" / "h<i>" / "c<i>".
    [[ "$NET_NAME" =~ ^[a-z][a-z0-9]{0,11}$ ]] \
        || die "ABCX_SLURM_NET_NAME=$NET_NAME: 1-12 lower-case letters or digits, starting with a letter"
    [[ "$SUBNET" =~ ^(10\.[0-9]{1,3}\.[0-9]{1,3}|192\.168\.[0-9]{1,3}|172\.(1[6-9]|2[0-9]|3[01])\.[0-9]{1,3})$ ]] \
        || die "ABCX_SLURM_SUBNET=$SUBNET: the first three octets of a private /24, e.g. 10.218.0"
    CTLD_ADDR="$SUBNET.1"
else
    CTLD_ADDR=127.0.0.1
fi
node_name() { if ((NODES > 1)); then echo "n$1"; else hostname -s; fi; }
node_addr() { if ((NODES > 1)); then echo "$SUBNET.$((10 + $1))"; else echo 127.0.0.1; fi; }

emit_exports() {  # emit_exports ACCOUNTING(0|1) REUSED(0|1)
    local acct=$1 reused=$2
    {
        echo "export ABCX_SLURM_REUSED=$reused"
        echo "export SLURM_CONF=$CONF"
        echo "export ABCX_SLURM_STATE_DIR=$STATE_DIR"
        echo "export ABCX_SLURM_ACCOUNTING=$acct"
        echo "export ABCX_SLURM_NODES=$NODES"
        # Node i runs in the i-th namespace of this list (empty for a loopback cluster).
        echo "export ABCX_SLURM_NETNS=$(awk '$1 == "netns" {printf "%s%s", sep, $2; sep = ","}' "$NET_LIST" 2>/dev/null)"
    } >&3
}

# A cluster counts as up when slurmctld answers and every node is usable (not down/drained), with
# the node count asked for (a cluster of another size in the same STATE_DIR is restarted).
cluster_answers() {
    [[ -f "$CONF" ]] || return 1
    # (A config written before multi-node mode has no "# nodes=" line: it is a single-node cluster.)
    local conf_nodes
    conf_nodes="$(sed -n 's/^# nodes=\([0-9]*\)$/\1/p' "$CONF")"
    [[ "${conf_nodes:-1}" == "$NODES" ]] || return 1
    local states f
    # slurmctld reports a dead slurmd only after SlurmdTimeout: check our own daemons first.
    for f in "$RUN"/*.pid; do pid_alive "$f" || return 1; done
    SLURM_CONF="$CONF" timeout 10 scontrol ping 2>/dev/null | grep -q 'is UP' || return 1
    states="$(SLURM_CONF="$CONF" timeout 10 sinfo -h -N -p debug -o '%T' 2>/dev/null)"
    [[ "$(grep -cE '^(idle|mixed|allocated|completing)$' <<<"$states")" == "$NODES" ]]
}
all_nodes_idle() { [[ "$(sinfo -h -N -p debug -o '%T' | grep -cx idle)" == "$NODES" ]]; }

# Two callers starting the same STATE_DIR at once (parallel test workers) must not race.
# (A non-root caller may only reuse a root-started cluster, so it cannot and need not lock.)
if touch "$STATE_DIR/.lock" 2>/dev/null; then
    exec 8>"$STATE_DIR/.lock"
    flock -w 300 8 || die "another cluster_up.sh holds $STATE_DIR/.lock"
fi

# A killed daemon stays a zombie until PID 1 reaps it (slowly in some containers): that is dead.
alive() { local st; st="$(ps -o stat= -p "$1" 2>/dev/null)" && [[ -n "$st" && "$st" != Z* ]]; }
# An unreadable pid file (mariadbd writes its own 0660) cannot be checked by a non-root caller: skip it.
pid_alive() { [[ -f "$1" ]] && { [[ -r "$1" ]] || return 0; alive "$(cat "$1")"; }; }

# ---------------------------------------------------------------- reuse
if cluster_answers; then
    acct=0
    grep -q '^AccountingStorageType=accounting_storage/slurmdbd' "$CONF" && acct=1
    log "cluster from $STATE_DIR is already up; reusing it"
    emit_exports "$acct" 1
    exit 0
fi

[[ $(id -u) -eq 0 ]] || cannot "must run as root (daemons run as root; packages come from apt-get)"

# ---------------------------------------------------------------- packages
PKGS=(slurmctld slurmd slurm-client munge)
[[ "$WANT_ACCOUNTING" == 1 ]] && PKGS+=(slurmdbd mariadb-server)
missing=()
for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
    command -v apt-get >/dev/null || cannot "apt-get not found; cannot install ${missing[*]}"
    log "installing ${missing[*]}"
    t0=$SECONDS
    # Debian's maintainer scripts try to start services; without systemd that is only noise.
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >&2; then
        log "install failed; running apt-get update and retrying"
        apt-get update -q >&2 || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >&2 \
            || cannot "apt-get install ${missing[*]} failed"
    fi
    log "installed in $((SECONDS - t0)) s"
fi
log "$(slurmctld -V)"

# ---------------------------------------------------------------- clean up a half-started cluster
# Something from this STATE_DIR may still run (e.g. slurmctld up but slurmd dead): stop it, keep state.
if compgen -G "$RUN/*.pid" >/dev/null || [[ -s "$NET_LIST" ]]; then
    log "stale daemons or namespaces from a previous start in $STATE_DIR; stopping them first"
    "$(dirname "$0")/cluster_down.sh" "$STATE_DIR" || true
fi

mkdir -p "$STATE_DIR/etc" "$RUN" "$LOG" "$STATE_DIR/ctld" "$STATE_DIR/spool" "$STATE_DIR/munge"
chmod 700 "$STATE_DIR/munge"
# munged refuses a socket directory others can write to, and non-root clients must reach the socket.
chmod 755 "$STATE_DIR" "$RUN"

for port in $CTLD_PORT $SLURMD_PORT $DBD_PORT $DB_PORT; do
    if (exec 9<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        die "port $port on 127.0.0.1 is taken (another cluster?); set ABCX_SLURM_PORT_BASE"
    fi
done

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
    local limit=$1 what=$2; shift 2
    local t0=$SECONDS
    until "$@" >/dev/null 2>&1; do
        ((SECONDS - t0 < limit)) || return 1
        sleep 0.5
    done
    log "$what after $((SECONDS - t0)) s"
}

# ---------------------------------------------------------------- network namespaces (multi-node)
# Each step is recorded in NET_LIST before it is made, so cluster_down.sh can undo a half-built network.
netfail() { cannot "network namespace setup failed at '$*' (needs root with CAP_NET_ADMIN and ip from iproute2): $(cat "$LOG/net.err" 2>/dev/null | tail -1)"; }
net() { "$@" 2>>"$LOG/net.err" || netfail "$@"; }
net_up() {
    local tool
    for tool in ip nsenter unshare mount; do
        command -v "$tool" >/dev/null || cannot "no $tool command (iproute2 / util-linux) to run nodes in network namespaces"
    done
    local br="${NET_NAME}br" i ns addr
    # (Captured first: with pipefail, `ip ... | grep -q` can fail on SIGPIPE although grep matched.)
    local routes namespaces
    routes="$(ip route show)" namespaces="$(ip netns list)"
    if grep -q "^$SUBNET\.0/24 " <<<"$routes"; then
        die "subnet $SUBNET.0/24 is already routed here (another cluster?); set ABCX_SLURM_SUBNET"
    fi
    for i in $(seq "$NODES"); do
        ! grep -q "^$NET_NAME-n$i\b" <<<"$namespaces" \
            || die "namespace $NET_NAME-n$i exists but is not listed in $NET_LIST (another cluster?); set ABCX_SLURM_NET_NAME"
    done
    : >"$LOG/net.err"
    echo "bridge $br" >>"$NET_LIST"
    net ip link add "$br" type bridge
    net ip addr add "$CTLD_ADDR/24" dev "$br"
    net ip link set "$br" up
    local hosts="127.0.0.1 localhost"$'\n'"$CTLD_ADDR $(hostname -s)"
    for i in $(seq "$NODES"); do hosts+=$'\n'"$(node_addr "$i") $(node_name "$i")"; done
    for i in $(seq "$NODES"); do
        ns="$NET_NAME-n$i"; addr="$(node_addr "$i")"
        echo "netns $ns" >>"$NET_LIST"
        net ip netns add "$ns"
        echo "veth ${NET_NAME}h$i" >>"$NET_LIST"
        net ip link add "${NET_NAME}h$i" type veth peer name "${NET_NAME}c$i"
        net ip link set "${NET_NAME}h$i" master "$br"
        net ip link set "${NET_NAME}h$i" up
        net ip link set "${NET_NAME}c$i" netns "$ns"
        net ip netns exec "$ns" ip link set lo up
        net ip netns exec "$ns" ip addr add "$addr/24" dev "${NET_NAME}c$i"
        net ip netns exec "$ns" ip link set "${NET_NAME}c$i" up
    done
    printf '%s\n' "$hosts" >"$STATE_DIR/etc/hosts"
    log "network: bridge $br at $CTLD_ADDR, $NODES namespaces $NET_NAME-n1..n$NODES ($SUBNET.11-$((10 + NODES)))"
}
# in_node I CMD...: run CMD as node I: in its network namespace, with its own host name (a UTS
# namespace: gloo and NCCL find a node's address by resolving its host name) and the cluster's hosts file.
in_node() {
    local i=$1; shift
    nsenter --net="/run/netns/$NET_NAME-n$i" unshare --mount --uts --propagation private \
        bash -c 'hostname "$0" && mount --bind "$1" /etc/hosts && shift && exec "$@"' \
        "$(node_name "$i")" "$STATE_DIR/etc/hosts" "$@"
}
# Each node must reach the controller over the bridge (run once slurmctld listens), not only exist.
net_check() {
    local i
    for i in $(seq "$NODES"); do
        in_node "$i" bash -c "exec 9<>/dev/tcp/$CTLD_ADDR/$CTLD_PORT" 2>/dev/null \
            || die "node $(node_name "$i") cannot reach slurmctld at $CTLD_ADDR:$CTLD_PORT over ${NET_NAME}br"
    done
}
((NODES > 1)) && net_up

# ---------------------------------------------------------------- munge
KEY="$STATE_DIR/munge/munge.key"
if [[ ! -s "$KEY" ]]; then
    dd if=/dev/urandom of="$KEY" bs=1024 count=1 status=none
fi
chmod 400 "$KEY"
rm -f "$MUNGE_SOCKET"
# --force: munged objects to running as root and to /tmp-like parents; this is a throwaway test cluster.
munged --force --num-threads=10 --key-file="$KEY" --socket="$MUNGE_SOCKET" --pid-file="$RUN/munged.pid" \
    --log-file="$LOG/munged.log" --seed-file="$STATE_DIR/munge/munged.seed" \
    </dev/null >>"$LOG/munged.out" 2>&1 3>&- 8>&-
wait_for 15 "munged up" munge --socket="$MUNGE_SOCKET" -n \
    || die "munged did not start: $(tail -5 "$LOG/munged.log" "$LOG/munged.out" 2>&1)"

# ---------------------------------------------------------------- accounting (MariaDB + slurmdbd)
DB_DIR="$STATE_DIR/mysql"
DB_SOCK="$RUN/mysqld.sock"
DB_PASS=abcx-test-only

start_accounting() {
    if [[ ! -d "$DB_DIR/mysql" ]]; then
        log "initialising MariaDB in $DB_DIR"
        mariadb-install-db --user=root --datadir="$DB_DIR" --auth-root-authentication-method=socket \
            --skip-test-db </dev/null >>"$LOG/mariadb-install.log" 2>&1 3>&- 8>&- || return 1
    fi
    # mariadbd does not daemonise itself; setsid detaches it from the caller's session.
    setsid mariadbd --no-defaults --user=root --datadir="$DB_DIR" --socket="$DB_SOCK" \
        --pid-file="$RUN/mariadbd.pid" --bind-address=127.0.0.1 --port="$DB_PORT" \
        --log-error="$LOG/mariadb.log" --skip-name-resolve --innodb-buffer-pool-size=64M \
        </dev/null >>"$LOG/mariadb.out" 2>&1 3>&- 8>&- &
    local db_pid=$!
    # Give up at once if mariadbd dies, rather than waiting out the timeout.
    wait_for 60 "MariaDB started (or exited)" bash -c "mariadb --no-defaults --socket='$DB_SOCK' -u root -e 'select 1' \
        || { kill -0 $db_pid || exit 0; exit 1; }" || return 1
    alive "$db_pid" || { log "mariadbd exited: $(tail -n 5 "$LOG/mariadb.out" "$LOG/mariadb.log" 2>&1)"; return 1; }
    mariadb --no-defaults --socket="$DB_SOCK" -u root <<SQL || return 1
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
FLUSH PRIVILEGES;
SQL
    cat >"$DBD_CONF" <<EOF
# Generated by slurm/cluster_up.sh
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$DBD_PORT
SlurmUser=root
LogFile=$LOG/slurmdbd.log
PidFile=$RUN/slurmdbd.pid
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF
    chmod 600 "$DBD_CONF"
    # slurmdbd has no -f: it reads slurmdbd.conf next to $SLURM_CONF.
    SLURM_CONF="$CONF" slurmdbd </dev/null >>"$LOG/slurmdbd.out" 2>&1 3>&- 8>&- || return 1
    # slurmdbd creates its tables on first start, which takes a few seconds.
    wait_for 60 "slurmdbd up" bash -c "exec 9<>/dev/tcp/127.0.0.1/$DBD_PORT" || return 1
}

stop_accounting() {
    local f
    for f in "$RUN/slurmdbd.pid" "$RUN/mariadbd.pid"; do
        if pid_alive "$f"; then kill "$(cat "$f")" 2>/dev/null || true; fi
        rm -f "$f"
    done
}

ACCOUNTING=0
if [[ "$WANT_ACCOUNTING" == 1 ]]; then
    if command -v slurmdbd >/dev/null && command -v mariadbd >/dev/null && start_accounting; then
        ACCOUNTING=1
    else
        log "WARNING: MariaDB/slurmdbd did not start; continuing WITHOUT accounting (sacct will not work)."
        log "$(tail -n 15 "$LOG"/mariadb.log "$LOG"/mariadb.out "$LOG"/slurmdbd.log "$LOG"/slurmdbd.out 2>/dev/null || true)"
        stop_accounting
    fi
else
    log "accounting disabled by ABCX_SLURM_ACCOUNTING=$WANT_ACCOUNTING"
fi

# ---------------------------------------------------------------- slurm.conf
CTLD_HOST="$(hostname -s)"
CPUS="$(nproc)"
MEM_MB=$(( $(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024 ))
# slurmd drains a node whose RealMemory exceeds what it measures; leave headroom. Simulated nodes
# share the machine's memory (each slurmd measures all of it) and its cores (each gets all of them).
REAL_MEM=$(( MEM_MB * 9 / 10 / NODES ))
NODE_LINES="" NODE_LIST=""
for i in $(seq "$NODES"); do
    NODE_LINES+="NodeName=$(node_name "$i") NodeAddr=$(node_addr "$i") CPUs=$CPUS RealMemory=$REAL_MEM State=UNKNOWN"$'\n'
    NODE_LIST+="${NODE_LIST:+,}$(node_name "$i")"
done
# One slurmd per node: multi-node pid and log files are named per node (%n).
SLURMD_FILE=slurmd; ((NODES > 1)) && SLURMD_FILE=slurmd-%n

if ((ACCOUNTING)); then
    ACCT_LINES="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=$DBD_PORT
# For slurmdbd connections Slurm takes the munge socket from here, not from AuthInfo.
AccountingStoragePass=$MUNGE_SOCKET
JobAcctGatherType=jobacct_gather/linux
JobAcctGatherFrequency=10"
else
    ACCT_LINES="AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none"
fi

cat >"$CONF" <<EOF
# Generated by slurm/cluster_up.sh for Slurm $(slurmctld -V | awk '{print $2}'): $NODES-node test cluster.
# nodes=$NODES
ClusterName=$CLUSTER_NAME
SlurmctldHost=$CTLD_HOST($CTLD_ADDR)
SlurmctldPort=$CTLD_PORT
SlurmdPort=$SLURMD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# cred_expire also delays a requeued job's restart (default 120 s); keep requeue tests short.
AuthInfo=socket=$MUNGE_SOCKET,cred_expire=5
CredType=cred/munge

StateSaveLocation=$STATE_DIR/ctld
SlurmdSpoolDir=$STATE_DIR/spool/%n
SlurmctldPidFile=$RUN/slurmctld.pid
SlurmdPidFile=$RUN/$SLURMD_FILE.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/$SLURMD_FILE.log
SlurmctldDebug=info
SlurmdDebug=info

# No cgroups in this container: track processes by parent PID, no task binding.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
# Main loop every second (default 60): a requeued job otherwise waits up to a minute to restart.
SchedulerParameters=bf_interval=1,sched_interval=1
ReturnToService=2
MpiDefault=none
MailProg=/bin/true

# Requeue (scontrol requeue, submitit's self-requeue after checkpoint) must be allowed for batch jobs.
JobRequeue=1
# Preemption by partition priority requeues the victim; a higher-tier partition "preempt" exists to test it.
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
# Short waits keep tests fast: SIGTERM->SIGKILL gap, and how long finished jobs stay in squeue.
KillWait=5
MinJobAge=600
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=60
MessageTimeout=10

$ACCT_LINES
JobCompType=jobcomp/none

$NODE_LINES
PartitionName=debug Nodes=$NODE_LIST Default=YES MaxTime=INFINITE State=UP PriorityTier=1
PartitionName=preempt Nodes=$NODE_LIST Default=NO MaxTime=INFINITE State=UP PriorityTier=2
EOF

# ---------------------------------------------------------------- slurmctld + slurmd
export SLURM_CONF="$CONF"
slurmctld </dev/null >>"$LOG/slurmctld.out" 2>&1 3>&- 8>&- \
    || die "slurmctld failed to start: $(tail -n 20 "$LOG/slurmctld.log" "$LOG/slurmctld.out" 2>&1)"
wait_for 30 "slurmctld answers" bash -c "scontrol ping | grep -q 'is UP'" \
    || die "slurmctld does not answer: $(tail -n 20 "$LOG/slurmctld.log" 2>&1)"
if ((NODES > 1)); then
    net_check
    for i in $(seq "$NODES"); do
        in_node "$i" slurmd -N "$(node_name "$i")" </dev/null >>"$LOG/slurmd-$(node_name "$i").out" 2>&1 3>&- 8>&- \
            || die "slurmd of $(node_name "$i") failed to start: $(tail -n 20 "$LOG/slurmd-$(node_name "$i")".{log,out} 2>&1)"
    done
else
    slurmd -N "$(node_name 1)" </dev/null >>"$LOG/slurmd.out" 2>&1 3>&- 8>&- \
        || die "slurmd failed to start: $(tail -n 20 "$LOG/slurmd.log" "$LOG/slurmd.out" 2>&1)"
fi

if ! wait_for "$TIMEOUT" "$NODES node(s) idle" all_nodes_idle; then
    log "nodes did not become idle within $TIMEOUT s; sinfo says:"
    sinfo -N -l >&2 || true
    for f in "$LOG"/slurmctld.log "$LOG"/slurmd*.log "$LOG"/munged.log "$LOG"/slurmdbd.log; do
        [[ -f "$f" ]] && { log "--- tail of $f"; tail -n 20 "$f" >&2; }
    done
    die "cluster in $STATE_DIR not ready (stop it with slurm/cluster_down.sh $STATE_DIR)"
fi

if ((ACCOUNTING)); then
    # slurmctld registers the cluster with slurmdbd by itself; make sure it did, so sacct finds jobs.
    if ! wait_for 20 "cluster registered in accounting" bash -c "sacctmgr -n -P list cluster format=cluster | grep -qx $CLUSTER_NAME"; then
        sacctmgr -i add cluster "$CLUSTER_NAME" >&2 || log "WARNING: could not register cluster in slurmdbd"
    fi
fi

log "cluster up: SLURM_CONF=$CONF nodes=$NODES accounting=$ACCOUNTING"
emit_exports "$ACCOUNTING" 0
