#!/usr/bin/env bash
# Start a one-node SLURM cluster on this machine (Debian/Ubuntu, root, no systemd needed):
# munged + a private MariaDB on loopback + slurmdbd (accounting: submitit needs sacct) + slurmctld + slurmd.
# Everything lives under one state folder; daemons are stopped by PID (stop-local-cluster.sh).
# Idempotent: running daemons are left alone; a second call only prints the environment line.
#
#   slurm/start-local-cluster.sh            # state in $BJEXP_SLURM_STATE (default ~/.local/state/bjexp-slurm)
#   source "$BJEXP_SLURM_STATE/env.sh"      # sets SLURM_CONF for sbatch/squeue/sacct/submitit
#
# Env: BJEXP_SLURM_STATE (state folder), BJEXP_SLURM_PORT_BASE (default 6817: ctld, +1 slurmd, +2 dbd, +3 MariaDB),
#      BJEXP_SLURM_NO_INSTALL=1 (fail instead of apt-get installing missing packages).
set -euo pipefail

STATE="${BJEXP_SLURM_STATE:-${XDG_STATE_HOME:-$HOME/.local/state}/bjexp-slurm}"
PORT="${BJEXP_SLURM_PORT_BASE:-6817}"
CLUSTER=bjexp-local
PARTITION=local
CRED_EXPIRE=30   # a requeued job waits this long before it may start again (Slurm default 120)

die() { echo "start-local-cluster: $*" >&2; exit 1; }
log() { echo "start-local-cluster: $*"; }
[[ $(id -u) == 0 ]] || die "must run as root (slurmd starts jobs as their submitting user)"
[[ "$STATE" == /* ]] || STATE="$PWD/$STATE"
[[ "$STATE" != *[[:space:]]* ]] || die "state folder must not contain spaces: $STATE"

# --- packages ------------------------------------------------------------------------------------------------
PKGS=(slurm-wlm slurmdbd munge mariadb-server)
need=()
for p in "${PKGS[@]}"; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p"); done
if ((${#need[@]})); then
  [[ "${BJEXP_SLURM_NO_INSTALL:-0}" == 1 ]] && die "missing packages: ${need[*]} (apt-get install ${need[*]})"
  log "installing ${need[*]} (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # policy-rc.d keeps the packages' own services from starting (we run private instances below).
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

mkdir -p "$STATE"/{munge,db,log,ctld,slurmd,run}
chmod 700 "$STATE/munge"
CONF="$STATE/slurm.conf"
DBD_CONF="$STATE/slurmdbd.conf"
MUNGE_SOCKET="$STATE/munge/munge.socket"
DB_SOCKET="$STATE/run/mariadb.sock"
export SLURM_CONF="$CONF"

alive() { [[ -s "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }
port_free() {  # refuse to start a daemon on a port someone else (e.g. another cluster's state folder) listens on
  if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
    die "port $1 ($2) is in use: another cluster running from a different state folder? Stop it, or set BJEXP_SLURM_PORT_BASE"
  fi
}
wait_for() {  # wait_for <seconds> <what> <command...>
  local t=$1 what=$2; shift 2
  for ((i = 0; i < t * 10; i++)); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
  die "$what did not come up within ${t}s; see $STATE/log/"
}

# --- munge ---------------------------------------------------------------------------------------------------
if [[ ! -s "$STATE/munge/munge.key" ]]; then
  dd if=/dev/urandom of="$STATE/munge/munge.key" bs=1024 count=1 status=none
  chmod 400 "$STATE/munge/munge.key"
fi
if ! alive "$STATE/run/munged.pid"; then
  munged --force --key-file="$STATE/munge/munge.key" --socket="$MUNGE_SOCKET" --pid-file="$STATE/run/munged.pid" \
    --log-file="$STATE/log/munged.log" --seed-file="$STATE/munge/munged.seed"
  wait_for 10 munged bash -c "munge -S '$MUNGE_SOCKET' -n | unmunge -S '$MUNGE_SOCKET'"
  log "munged up"
fi

# --- MariaDB (private datadir, loopback only) ------------------------------------------------------------------
DB_PORT=$((PORT + 3))
if [[ ! -d "$STATE/db/mysql" ]]; then
  mariadb-install-db --user=root --datadir="$STATE/db" --auth-root-authentication-method=socket \
    --skip-test-db >"$STATE/log/mariadb-install.log" 2>&1 || die "mariadb-install-db failed; see $STATE/log/mariadb-install.log"
fi
if ! alive "$STATE/run/mariadb.pid"; then
  port_free "$DB_PORT" MariaDB
  mariadbd --no-defaults --user=root --datadir="$STATE/db" --socket="$DB_SOCKET" --pid-file="$STATE/run/mariadb.pid" \
    --bind-address=127.0.0.1 --port="$DB_PORT" --log-error="$STATE/log/mariadb.log" \
    --innodb-buffer-pool-size=64M --skip-name-resolve >/dev/null 2>&1 &
  wait_for 30 MariaDB mariadb --no-defaults -S "$DB_SOCKET" -u root -e "select 1"
  log "MariaDB up on 127.0.0.1:$DB_PORT"
fi
if [[ ! -s "$STATE/db.password" ]]; then
  (umask 077; head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$STATE/db.password")
fi
DB_PASS=$(cat "$STATE/db.password")
mariadb --no-defaults -S "$DB_SOCKET" -u root <<SQL
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
SQL

# --- configs (rewritten each start so they always match this machine) -------------------------------------------
HOST=$(hostname -s)
# slurmd -C reports this machine's real shape; keep some memory back for the OS and the daemons.
read -r NODE_SHAPE < <(slurmd -C | head -1 | sed -E 's/^NodeName=[^ ]+ //; s/RealMemory=[0-9]+//')
MEM_MB=$(($(awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo) * 9 / 10))
CPUS=$(nproc --all)
DEF_MEM=$((MEM_MB / CPUS))
((DEF_MEM > 4096)) && DEF_MEM=4096
AUTH="AuthInfo=socket=$MUNGE_SOCKET,cred_expire=$CRED_EXPIRE"

cat >"$CONF.tmp" <<EOF
# Written by slurm/start-local-cluster.sh; edits are overwritten on the next start.
ClusterName=$CLUSTER
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmctldPort=$PORT
SlurmdPort=$((PORT + 1))
AuthType=auth/munge
CredType=cred/munge
$AUTH
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/slurmd/%n
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
# No cgroups without systemd: plain process tracking, no task confinement.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/linux
MpiDefault=none
SwitchType=switch/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$DEF_MEM
# Reject impossible requests (too many CPUs, GPUs on a CPU node) at submission instead of pending forever.
EnforcePartLimits=ALL
ReturnToService=2
KillWait=10
MinJobAge=600
# Short scheduler cycles: a requeued job starts soon after cred_expire instead of at the next 60 s pass.
SchedulerParameters=sched_interval=5,bf_interval=5
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort=$((PORT + 2))
# The slurmdbd connection takes its MUNGE socket from here, not from AuthInfo.
AccountingStoragePass=$MUNGE_SOCKET
JobCompType=jobcomp/none
NodeName=$HOST NodeAddr=127.0.0.1 $NODE_SHAPE RealMemory=$MEM_MB State=UNKNOWN
PartitionName=$PARTITION Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
mv "$CONF.tmp" "$CONF"

(umask 077; cat >"$DBD_CONF" <<EOF
AuthType=auth/munge
$AUTH
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=$((PORT + 2))
SlurmUser=root
PidFile=$STATE/run/slurmdbd.pid
LogFile=$STATE/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF
)

cat >"$STATE/env.sh" <<EOF
export SLURM_CONF=$CONF
export BJEXP_SLURM_STATE=$STATE
EOF

# --- slurm daemons ------------------------------------------------------------------------------------------------
if ! alive "$STATE/run/slurmdbd.pid"; then
  port_free $((PORT + 2)) slurmdbd
  SLURM_CONF="$CONF" slurmdbd  # reads slurmdbd.conf beside $SLURM_CONF
  wait_for 30 slurmdbd sacctmgr -n list cluster
  log "slurmdbd up"
fi
sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER" || sacctmgr -i add cluster "$CLUSTER" >/dev/null
if ! alive "$STATE/run/slurmctld.pid"; then
  port_free "$PORT" slurmctld
  slurmctld -f "$CONF"
  wait_for 30 slurmctld scontrol ping
  log "slurmctld up"
fi
if ! alive "$STATE/run/slurmd.pid"; then
  port_free $((PORT + 1)) slurmd
  slurmd -f "$CONF"
  wait_for 30 slurmd bash -c "sinfo -h -N -o %T | grep -Eq '^(idle|mixed|allocated)'"
  log "slurmd up"
fi
log "cluster '$CLUSTER' ready: partition '$PARTITION', node $HOST ($CPUS CPUs, ${MEM_MB} MB, no GPUs), state $STATE"
echo "export SLURM_CONF=$CONF   # or: source $STATE/env.sh"
