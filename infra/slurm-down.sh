#!/usr/bin/env bash
# Stop the cluster of infra/slurm-up.sh: cancel its jobs, then stop exactly the daemons it recorded
# (slurmd, slurmctld, munged; TERM, then KILL after 10 s).  Never kills by process name.
#   infra/slurm-down.sh           keep the state folder (logs, job state)
#   infra/slurm-down.sh --purge   delete it too
set -uo pipefail
state=${BEASTFLOW_SLURM_DIR:-${TMPDIR:-/tmp}/beastflow-slurm}
export SLURM_CONF=$state/slurm.conf

running() {
  local f=$state/pids/$1.pid pid
  [ -s "$f" ] || return 1
  pid=$(cat "$f")
  kill -0 "$pid" 2>/dev/null && [ "$(cat /proc/"$pid"/comm 2>/dev/null)" = "$1" ]
}

# Jobs first, through SLURM itself: their slurmstepd processes are not our children.
if running slurmctld && [ -f "$SLURM_CONF" ]; then
  ids=$(squeue -h -t PD,R,CG,S -o %A 2>/dev/null | sort -u)
  if [ -n "$ids" ]; then
    scancel $ids 2>/dev/null || true
    for _ in $(seq 100); do [ -z "$(squeue -h -t PD,R,CG,S -o %A 2>/dev/null)" ] && break; sleep 0.2; done
  fi
fi

for d in slurmd slurmctld munged; do
  if running $d; then
    pid=$(cat "$state/pids/$d.pid")
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null; echo "$d ($pid): killed"; else echo "$d ($pid): stopped"; fi
  fi
  rm -f "$state/pids/$d.pid"
done

if [ "${1:-}" = "--purge" ]; then rm -rf "$state"; echo "removed $state"; fi
exit 0
