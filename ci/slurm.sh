#!/usr/bin/env bash
# A real single-node Slurm on 127.0.0.1 for the tests (Debian 12 packages: slurmctld slurmd
# slurm-client munge). `ci/slurm.sh start DIR` writes DIR/slurm.conf, starts munged, slurmctld
# and slurmd, waits until the node is idle and prints `export SLURM_CONF=…`; `ci/slurm.sh stop DIR`
# stops them. Must run as root (slurmd spawns jobs).
set -euo pipefail
cmd=${1:?start|stop}; dir=$(realpath -m "${2:?state dir}")
export SLURM_CONF="$dir/slurm.conf"
case "$cmd" in
start)
  mkdir -p "$dir"/{state,spool,log} /run/munge /var/log/munge /var/lib/munge /etc/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge /etc/munge 2>/dev/null || true
  if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
    chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key
  fi
  if ! pgrep -x munged >/dev/null; then su -s /bin/sh munge -c /usr/sbin/munged; fi
  host=$(hostname -s)
  node=$(slurmd -C | head -n 1 | sed "s/NodeName=[^ ]*/NodeName=$host/")
  cat > "$SLURM_CONF" <<CONF
ClusterName=simgan-test
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmctldPort=$((16817 + RANDOM % 500))
SlurmdPort=$((17818 + RANDOM % 500))
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ReturnToService=2
MaxArraySize=1001
$node NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=main Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
CONF
  /usr/sbin/slurmctld -f "$SLURM_CONF"
  /usr/sbin/slurmd -f "$SLURM_CONF"
  for _ in $(seq 1 100); do
    state=$(sinfo -h -o %T 2>/dev/null | head -n 1 || true)
    if [ "$state" = idle ]; then echo "export SLURM_CONF=$SLURM_CONF"; exit 0; fi
    sleep 0.3
  done
  echo "slurm did not become idle (state: ${state:-none}); logs in $dir/log" >&2; exit 1
  ;;
stop)
  scontrol shutdown >/dev/null 2>&1 || true
  for f in "$dir/slurmctld.pid" "$dir/slurmd.pid"; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true; done
  ;;
esac
