# A virtual machine on the node (issue 12): qemu (TCG, q35) inside the lab boots the lab's
# own kernel with a busybox initramfs whose disk is `-device virtio-scsi-pci -device
# scsi-generic` on /dev/mpath-sg/mpatha. The guest writes stamped blocks with O_DIRECT at
# 512 B, 4 KiB, 64 KiB and the largest transfer its sd issues, reads each back and checks
# it (tests/vm/clients/guest_io.c), while the scenario takes each path offline and back
# (the second time with queue_if_no_path off), then both for some seconds
# (queue_if_no_path): the guest must see no I/O error and no mismatch. Its view of the
# disk is checked too: the LU's WWID (VPD 0x83), the capacity, and the Block Limits page's
# maximum transfer, which qemu rewrites from the node's BLKSECTGET. Then the daemon is
# restarted twice under the guest's I/O, as `systemctl restart` does it
# (lib/fdstore-supervisor): the node stays (same inode, same major:minor) and the guest
# sees no error.
lab_lu 2
a=${LAB_PATHS[0]} b=${LAB_PATHS[1]}
lab_map mpatha --queue --group "$a" "$b"
mpathsg_start_supervised
node=/dev/mpath-sg/mpatha
seconds=${LAB_GUEST_SECONDS:-50}
console=$LAB_OUT/guest-console.txt
# guest_line PREFIX: the guest's console lines starting with PREFIX (the serial console
# ends lines with CR LF).
guest_line() { grep -a "^$1" "$console" | tr -d '\r'; }

step "the guest boots with the node as its disk"
t0=$SECONDS
guest_start "$node" "$seconds" "$console"
guest_wait "$console" GUEST_READY 300
say "ok: the guest reached its workload $((SECONDS - t0)) s after qemu started"
guest_line GUEST_ | grep -v '^GUEST_READY'
[ -z "$(guest_line GUEST_FAIL)" ] || die "the guest failed: $(guest_line GUEST_FAIL)"

step "the guest's view of the disk is the LU's"
disk=$(guest_line 'GUEST_DISK ')
assert_match "WWID (VPD 0x83) as the host's path sees it" " wwid=$(tr -d '\0' </sys/block/"$a"/device/wwid | tr ' ' _) " "$disk "
assert_match "capacity in 512 B sectors" " sectors=$(blockdev --getsz /dev/"$a") " "$disk "
b0=$(guest_line 'GUEST_VPD_B0 ' | awk '{print $2}')
[ -n "$b0" ] || die "the guest has no Block Limits page in sysfs"
node_max=$(python3 -c '
import fcntl, os, struct, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
print(struct.unpack("i", fcntl.ioctl(fd, 0x1267, struct.pack("i", 0)))[0])  # BLKSECTGET
' "$node")
assert_eq "Block Limits maximum transfer (blocks) = the node's BLKSECTGET / 512" \
	$((node_max / 512)) $((16#${b0:16:8}))
max_kb=$(sed -n 's/.* max_sectors_kb=\([0-9]*\).*/\1/p' <<<"$disk")
[ "$((max_kb * 2))" -le $((node_max / 512)) ] || die "the guest's sd issues ${max_kb} KiB, above what the node takes"
say "ok: the guest's largest transfer is $max_kb KiB (the node takes $((node_max / 1024)) KiB)"

step "paths fail and come back under the guest's I/O"
# one_path_down DOWN UP: DOWN offline for 5 s, UP must carry the guest's commands
# meanwhile; then DOWN runs again and is reinstated.
one_path_down() {
	local n
	sleep 2
	n=$(path_iocount "$2")
	path_offline "$1"
	sleep 5
	[ "$(path_iocount "$2")" -gt "$n" ] || die "no I/O went to $2 while $1 was offline: the step proves nothing"
	say "ok: $(($(path_iocount "$2") - n)) commands on $2 while $1 was offline"
	path_running "$1"
	map_reinstate_path mpatha "$1"
}
one_path_down "$a" "$b"
# The second without queue_if_no_path: one path left must be enough, nothing queues.
dmsetup message mpatha 0 fail_if_no_path
one_path_down "$b" "$a"
dmsetup message mpatha 0 queue_if_no_path
sleep 2
step "every path down for 6 s (queue_if_no_path): the guest's I/O waits, then resumes"
path_offline "$a"
path_offline "$b"
sleep 6
path_running "$a"
path_running "$b"
map_reinstate_path mpatha "$a"
map_reinstate_path mpatha "$b"
kill -0 "$GUEST_PID" 2>/dev/null || die "the guest stopped before the paths came back"
n=$(path_iocount "$a")
sleep 3
[ "$(path_iocount "$a")" -gt "$n" ] || die "the guest's I/O did not resume"
say "ok: the guest's I/O resumed ($(($(path_iocount "$a") - n)) commands on $a in 3 s)"

step "the daemon restarts twice under the guest's I/O"
before=$(stat -c '%i %t:%T' "$node")
for _ in 1 2; do
	t0=$SECONDS
	mpathsg_restart
	say "ok: the successor serves $((SECONDS - t0)) s after SIGTERM"
	sleep 1
done
[ "$(stat -c '%i %t:%T' "$node")" = "$before" ] || die "the node changed: $before -> $(stat -c '%i %t:%T' "$node")"
kill -0 "$GUEST_PID" 2>/dev/null || die "the guest stopped during the restarts"
n=$(($(path_iocount "$a") + $(path_iocount "$b")))
sleep 2
m=$(($(path_iocount "$a") + $(path_iocount "$b")))
[ "$m" -gt "$n" ] || die "the guest's I/O did not go on after the restarts"
say "ok: same node (inode, major:minor: $before); $((m - n)) commands in 2 s after the restarts"

step "the guest's verdict"
guest_wait "$console" '^GUEST_EXIT' $((seconds + 120))
wait "$GUEST_PID" || true
guest_line GUEST_IO
assert_eq "guest_io's exit status" "GUEST_EXIT 0" "$(guest_line GUEST_EXIT)"
result=$(guest_line 'GUEST_IO ')
assert_match "no I/O error, no mismatch in the guest" " errors=0 mismatches=0 " "$result"
ios=$(sed -n 's/.* ios=\([0-9]*\) .*/\1/p' <<<"$result")
bytes=$(sed -n 's/.* bytes=\([0-9]*\) .*/\1/p' <<<"$result")
[ "$ios" -gt 0 ] || die "the guest did no I/O"
say "ok: $ios I/Os, $((bytes / 1048576)) MiB verified in ${seconds} s ($((bytes / seconds / 1024)) KiB/s under nested emulation)"
echo "guest $node+faults $seconds $ios $bytes" >>"$LAB_OUT/guest-throughput.txt"

mpathsg_stop_supervised
if [ "${LAB_GUEST_REFERENCE:-0}" = 1 ]; then
	# Throughput without faults, through the node and through the path's own sg node.
	mpathsg_start
	for target in "$node" "$(lab_sg_of "$a")"; do
		step "reference: the same guest and workload on $target, no faults"
		guest_start "$target" "$seconds" "$console"
		guest_wait "$console" GUEST_READY 300
		guest_wait "$console" '^GUEST_EXIT' $((seconds + 120))
		wait "$GUEST_PID" || true
		result=$(guest_line 'GUEST_IO ')
		assert_match "no I/O error, no mismatch" " errors=0 mismatches=0 " "$result"
		ios=$(sed -n 's/.* ios=\([0-9]*\) .*/\1/p' <<<"$result")
		bytes=$(sed -n 's/.* bytes=\([0-9]*\) .*/\1/p' <<<"$result")
		say "ok: $target: $ios I/Os, $((bytes / seconds / 1024)) KiB/s"
		echo "guest $target $seconds $ios $bytes" >>"$LAB_OUT/guest-throughput.txt"
	done
	mpathsg_stop
fi
