# Sourced by the tests that need a Slurm cluster: slurm_start starts a one-node cluster on
# this machine (its own munged on a private socket, slurmctld and slurmd on free ports,
# every file under a scratch folder) and exports SLURM_CONF; slurm_stop cancels its jobs
# and stops the three daemons by the pids in their pid files. A test calls slurm_start and
# sets an EXIT trap that calls slurm_stop. slurm_skip_reason prints why there can be no
# cluster here (nothing when there can be one).
#
# Leftovers of an earlier test that was killed before its trap ran (daemons still running,
# stale pid files) are found by the scratch folders' owner.pid and stopped first; clusters of
# tests running at the same time do not meet (own socket, own ports, own folder).

slurm_skip_reason() {
    local c
    for c in munged mungekey slurmctld slurmd sbatch squeue scancel sinfo; do
        command -v "$c" > /dev/null 2>&1 || { echo "$c is not installed (Debian packages slurm-wlm and munge: make deps)"; return; }
    done
    [ "$(id -u)" -eq 0 ] || echo "a test cluster's slurmd must run as root, and this is $(id -un)"
}

# Stops the daemons recorded under folder $1 (only processes that are what the pid file says).
slurm_stop_dir() {
    local f pid name
    for name in slurmd slurmctld munged; do
        f="$1/run/$name.pid"
        [ -f "$f" ] || continue
        pid=$(cat "$f" 2> /dev/null)
        [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2> /dev/null)" = "$name" ] || continue
        kill "$pid" 2> /dev/null
        for _ in $(seq 50); do kill -0 "$pid" 2> /dev/null || break; sleep 0.1; done
        kill -9 "$pid" 2> /dev/null
    done
}

# Job steps (slurmstepd) of a cluster whose slurmd was killed outlive it: they are known by
# the SLURM_CONF in their environment.
slurm_stop_steps() {
    local p
    for p in /proc/[0-9]*; do
        [ "$(cat "$p/comm" 2> /dev/null)" = slurmstepd ] || continue
        tr '\0' '\n' < "$p/environ" 2> /dev/null | grep -qxF "SLURM_CONF=$1/slurm.conf" && kill -9 "${p#/proc/}" 2> /dev/null
    done
}

slurm_reap_leftovers() {
    local d owner
    for d in /tmp/lorabench-slurm.*; do
        [ -d "$d" ] || continue
        owner=$(cat "$d/owner.pid" 2> /dev/null)
        if [ -n "$owner" ] && kill -0 "$owner" 2> /dev/null; then continue; fi
        slurm_stop_dir "$d"
        slurm_stop_steps "$d"
        rm -rf "$d"
    done
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' 2> /dev/null ||
        echo $((20000 + RANDOM % 20000))
}

slurm_start() {
    slurm_reap_leftovers
    SLURM_DIR=$(mktemp -d /tmp/lorabench-slurm.XXXXXX)
    chmod 755 "$SLURM_DIR"
    echo $$ > "$SLURM_DIR/owner.pid"
    local S=$SLURM_DIR host mem
    mkdir -m 700 "$S/key" && mkdir -m 755 "$S/run" "$S/state" "$S/spool"
    mungekey -c -k "$S/key/munge.key" > /dev/null 2>&1 || { echo "mungekey failed"; return 1; }
    munged -S "$S/run/munge.sock" --key-file="$S/key/munge.key" --log-file="$S/key/munged.log" \
        --pid-file="$S/run/munged.pid" --seed-file="$S/key/munged.seed" || { echo "munged did not start: $(tail -n 2 "$S/key/munged.log")"; return 1; }
    host=$(hostname -s)
    mem=$(awk '/MemTotal/ { print int($2 / 1024 / 2) }' /proc/meminfo)
    cat > "$S/slurm.conf" <<EOF
ClusterName=lbtest
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$S/run/munge.sock
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
StateSaveLocation=$S/state
SlurmdSpoolDir=$S/spool/slurmd-%n
SlurmctldPidFile=$S/run/slurmctld.pid
SlurmdPidFile=$S/run/slurmd.pid
SlurmctldLogFile=$S/slurmctld.log
SlurmdLogFile=$S/slurmd.log
MpiDefault=none
SchedulerParameters=sched_interval=1
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
NodeName=$host NodeAddr=127.0.0.1 NodeHostname=$host CPUs=$(nproc) RealMemory=$mem State=UNKNOWN
PartitionName=lbtest Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
    export SLURM_CONF="$S/slurm.conf"
    slurmctld -f "$SLURM_CONF" || { echo "slurmctld did not start: $(tail -n 3 "$S/slurmctld.log")"; return 1; }
    slurmd -f "$SLURM_CONF" || { echo "slurmd did not start: $(tail -n 3 "$S/slurmd.log")"; return 1; }
    for _ in $(seq 100); do
        [ "$(sinfo -h -o %T 2> /dev/null)" = idle ] && return 0
        sleep 0.3
    done
    echo "the node did not become idle in 30 s: $(sinfo -h 2>&1); $(tail -n 3 "$S/slurmd.log")"
    return 1
}

slurm_stop() {
    [ -n "${SLURM_DIR:-}" ] && [ -d "$SLURM_DIR" ] || return 0
    if [ -n "${SLURM_CONF:-}" ]; then
        scancel --user=root > /dev/null 2>&1
        for _ in $(seq 30); do [ -z "$(squeue -h 2> /dev/null)" ] && break; sleep 0.2; done
    fi
    slurm_stop_dir "$SLURM_DIR"
    slurm_stop_steps "$SLURM_DIR"
    rm -rf "$SLURM_DIR"
}
