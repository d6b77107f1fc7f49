#!/usr/bin/env bash
# A one-node SLURM cluster on 127.0.0.1 for development and CI (munged + slurmctld + slurmd, as root).
#
#   eval "$(infra/slurm-up.sh --env)"   # start (or find running) and export SLURM_CONF / PATH
#   sbatch --array=0-3 job.sh           # ... or beastflow with [execution] executor = "slurm"
#   infra/slurm-down.sh [--purge]       # stop exactly the daemons started here
#
# Environment:
#   BEASTFLOW_SLURM_DIR          state folder (default ${TMPDIR:-/tmp}/beastflow-slurm): slurm.conf,
#                                munge key + socket, spool, logs, pids/, bin/sacct
#   BEASTFLOW_SLURM_CTLD_PORT    slurmctld port (default 6817)
#   BEASTFLOW_SLURM_SLURMD_PORT  slurmd port (default 6818)
#   BEASTFLOW_SLURM_CPUS         CPUs the node offers (default: nproc)
#   BEASTFLOW_SLURM_NO_INSTALL=1 fail instead of apt-get installing missing packages
#
# Why the configuration looks like this (containers, laptops, CI runners):
#   - no cgroup hierarchy is guaranteed, so process tracking is proctrack/linuxproc and
#     task/none: with the cgroup plugins every batch step fails while the job looks COMPLETED;
#   - there is no accounting database, so a small `sacct` stand-in (answering from squeue,
#     with finished jobs kept MinJobAge seconds) goes first on PATH: submitit asks sacct for
#     job states and would otherwise wait forever for a job that died without a result;
#   - nothing is written to /etc and no system service is touched; the node is called
#     "localhost" whatever the machine's host name, so the same config works everywhere.
set -euo pipefail

want_env=0
[ "${1:-}" = "--env" ] && want_env=1
say() { if [ $want_env = 1 ]; then echo "# $*" >&2; else echo "$*"; fi; }

state=${BEASTFLOW_SLURM_DIR:-${TMPDIR:-/tmp}/beastflow-slurm}
ctld_port=${BEASTFLOW_SLURM_CTLD_PORT:-6817}
slurmd_port=${BEASTFLOW_SLURM_SLURMD_PORT:-6818}
cpus=${BEASTFLOW_SLURM_CPUS:-$(nproc)}
mem_mb=$(awk '/^MemTotal/ {printf "%d", $2 / 1024 - 1024}' /proc/meminfo)
conf=$state/slurm.conf
sock=$state/munge/socket
started=$(date +%s.%N)

emit_env() {
  printf 'export SLURM_CONF=%q\nexport PATH=%q:"$PATH"\n' "$conf" "$state/bin" > "$state/env.sh"
  if [ $want_env = 1 ]; then cat "$state/env.sh"; else say "environment: source $state/env.sh"; fi
}

# running NAME: the PID we recorded is alive and still that program (PIDs get reused)
running() {
  local f=$state/pids/$1.pid pid
  [ -s "$f" ] || return 1
  pid=$(cat "$f")
  kill -0 "$pid" 2>/dev/null && [ "$(cat /proc/"$pid"/comm 2>/dev/null)" = "$1" ]
}

node_state() { SLURM_CONF=$conf timeout 5 sinfo -h -n localhost -o %t 2>/dev/null || true; }

if running munged && running slurmctld && running slurmd; then
  case "$(node_state)" in idle*|mix*|alloc*) say "SLURM already running (state in $state)"; emit_env; exit 0 ;; esac
fi

# ---- packages (Debian / Ubuntu) -------------------------------------------------------------
missing=()
for prog in munged slurmctld slurmd sbatch; do command -v $prog >/dev/null || missing+=("$prog"); done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "${BEASTFLOW_SLURM_NO_INSTALL:-0}" = 1 ] || ! command -v apt-get >/dev/null || [ "$(id -u)" != 0 ]; then
    echo "slurm-up: missing ${missing[*]}; install: apt-get install slurmctld slurmd slurm-client munge" >&2
    exit 1
  fi
  say "installing slurmctld slurmd slurm-client munge"
  # the minimal set: the slurm-wlm meta-package would pull ~20 unused plugin packages
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    slurmctld slurmd slurm-client munge >&2
fi

# ---- stop leftovers of an earlier, half-started attempt (only PIDs we recorded) ---------------
stop_recorded() {
  local d pid
  for d in slurmd slurmctld munged; do
    if running $d; then
      pid=$(cat "$state/pids/$d.pid"); kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$state/pids/$d.pid"
  done
}
stop_recorded

mkdir -p "$state"/{pids,log,spool,ctld,bin,munge}
chmod 0755 "$state" "$state/munge"   # munged insists that every user can traverse the socket's folder

# ---- munge: own key and socket ----------------------------------------------------------------
key=$state/munge/munge.key
if [ ! -s "$key" ]; then
  head -c 1024 /dev/urandom > "$key"
fi
chmod 0400 "$key"
rm -f "$sock" "$sock.lock"
setsid munged --foreground --socket="$sock" --key-file="$key" --pid-file="$state/munge/munged.pid" \
  --log-file="$state/log/munged.log" --seed-file="$state/munge/seed" </dev/null >>"$state/log/munged.out" 2>&1 &
echo $! > "$state/pids/munged.pid"
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.1; done
if ! munge -n -S "$sock" | unmunge -S "$sock" >/dev/null 2>&1; then
  echo "slurm-up: munged did not come up; see $state/log/munged.log" >&2; exit 1
fi

# ---- slurm.conf ------------------------------------------------------------------------------
cat > "$conf" <<CONF
# written by infra/slurm-up.sh: one node on 127.0.0.1, no cgroups, no accounting database
ClusterName=beastflow
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$sock
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/spool
SlurmctldPidFile=$state/slurmctld.pid
SlurmdPidFile=$state/slurmd.pid
SlurmctldLogFile=$state/log/slurmctld.log
SlurmdLogFile=$state/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$state/log/jobcomp.txt
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
MinJobAge=3600
KillWait=5
InactiveLimit=0
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF

# ---- sacct stand-in ---------------------------------------------------------------------------
# submitit runs `sacct -o JobID,State,NodeList --parsable2 -j ID ...`; answer from slurmctld's memory.
cat > "$state/bin/sacct" <<'SACCT'
#!/usr/bin/env python3
"""sacct stand-in for a cluster without slurmdbd: job states from `squeue -t all`."""
import subprocess, sys
codes = {"JobID": "%i", "JobIDRaw": "%i", "State": "%T", "NodeList": "%N", "JobName": "%j",
         "Partition": "%P", "Elapsed": "%M", "User": "%u", "ExitCode": "%i"}
jobs, fields, args = [], ["JobID", "State", "NodeList"], sys.argv[1:]
while args:
    a = args.pop(0)
    if a in ("-j", "--jobs") and args: jobs += args.pop(0).split(",")
    elif a.startswith("--jobs="): jobs += a.split("=", 1)[1].split(",")
    elif a.startswith("-j") and len(a) > 2: jobs += a[2:].split(",")
    elif a in ("-o", "--format") and args: fields = args.pop(0).split(",")
    elif a.startswith("--format="): fields = a.split("=", 1)[1].split(",")
names = [f.split("%")[0] for f in fields]
cmd = ["squeue", "-h", "-t", "all", "-o", "|".join(codes.get(n, "%i") for n in names)]
if jobs:
    cmd += ["-j", ",".join(j for j in jobs if j)]
out = subprocess.run(cmd, capture_output=True, text=True).stdout
print("|".join(names))
sys.stdout.write(out)
SACCT
chmod +x "$state/bin/sacct"

# ---- daemons ----------------------------------------------------------------------------------
export SLURM_CONF=$conf
setsid slurmctld -D -f "$conf" </dev/null >>"$state/log/slurmctld.out" 2>&1 &
echo $! > "$state/pids/slurmctld.pid"
for _ in $(seq 150); do scontrol ping 2>/dev/null | grep -q "is UP" && break; sleep 0.2; done
scontrol ping 2>/dev/null | grep -q "is UP" || { echo "slurm-up: slurmctld not up; see $state/log/slurmctld.log" >&2; exit 1; }

setsid slurmd -D -N localhost -f "$conf" </dev/null >>"$state/log/slurmd.out" 2>&1 &
echo $! > "$state/pids/slurmd.pid"
ns=""
for _ in $(seq 150); do
  ns=$(node_state)
  case "$ns" in
    idle*|mix*|alloc*) break ;;
    drain*|down*) scontrol update nodename=localhost state=resume >/dev/null 2>&1 || true ;;
  esac
  sleep 0.2
done
case "$ns" in idle*|mix*|alloc*) ;; *) echo "slurm-up: node not ready ('$ns'); see $state/log/slurmd.log" >&2; exit 1 ;; esac

say "SLURM up in $(awk -v a="$started" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}') s: node localhost, $cpus CPUs, partition debug, ports $ctld_port/$slurmd_port, state in $state"
emit_env
