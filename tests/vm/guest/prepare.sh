# shellcheck shell=bash
# Sourced by the guest runners: kernel modules and writable paths, then "SETUP-OK" in
# $LAB_OUT/results (the host treats its absence as a VM that did not come up).
# shellcheck source=tests/vm/lib/lab.sh
. "$LAB_ROOT/lib/lab.sh"
# BOOTED tells the host the VM came up (it boots the VM again if this never appears).
echo "BOOTED $(uname -r)" >"$LAB_OUT/results"
# The kernel's boot log went to the host (vng --verbose); from here on only its warnings
# do: printk to an emulated serial port is slow, and scenarios log a lot.
dmesg -n 4 || true
echo "lab: guest kernel $(uname -r), $(nproc) cpus, $(awk '/MemTotal/ {printf "%d MiB", $2 / 1024}' /proc/meminfo)"
for m in cuse sg sd_mod dm_mod dm_multipath dm_service_time dm_round_robin dm_queue_length scsi_dh_alua; do
	if ! modprobe "$m"; then
		echo "lab: modprobe $m failed" >&2
		echo "SETUP-FAILED modprobe $m" >>"$LAB_OUT/results"
		exit 1
	fi
done
[ -c /dev/cuse ] || mknod /dev/cuse c 10 203
# The host root is shared read-only: daemons in the lab keep their state under /run.
mkdir -p /run/mpath-sg
echo "SETUP-OK $(uname -r)" >>"$LAB_OUT/results"
