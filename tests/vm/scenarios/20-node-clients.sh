# Real clients through /dev/mpath-sg/X with both paths up: sg3_utils and qemu see what
# they see on the path's own sg node; data written through the node reads back.
lab_lu 2
a=${LAB_PATHS[0]} b=${LAB_PATHS[1]}
lab_map mpatha "$a" "$b"
sg=$(lab_sg_of "$a")
mpathsg_start
node=/dev/mpath-sg/mpatha
assert_ok "the node is a character device" test -c "$node"
assert_match "the daemon logged the node and its numbers" "published.*mpatha" "$(cat "$MPATHSG_LOG")"

step "sg3_utils: the node answers as the path does"
for cmd in "sg_inq -H" "sg_inq -p 0x83 -H" "sg_vpd -p sn -H" "sg_readcap" "sg_readcap -l" "sg_luns -H"; do
	assert_ok "$cmd on the path" $cmd "$sg"
	want=$LAB_LAST_OUTPUT
	assert_ok "$cmd on the node" $cmd "$node"
	assert_eq "$cmd: same answer" "$want" "$LAB_LAST_OUTPUT"
done
assert_ok "sg_turs on the node" sg_turs "$node"

step "sg_raw: write through the node, read back three ways"
head -c 8192 /dev/urandom >/tmp/pattern
assert_ok "WRITE(10) 16 blocks at LBA 256" sg_raw -s 8192 -i /tmp/pattern "$node" 2a 00 00 00 01 00 00 00 10 00
assert_ok "READ(10) through the node" sg_raw -r 8192 -o /tmp/back-node "$node" 28 00 00 00 01 00 00 00 10 00
assert_ok "read back through the node matches" cmp /tmp/pattern /tmp/back-node
assert_ok "READ(10) through the other path's sg" sg_raw -r 8192 -o /tmp/back-sg "$(lab_sg_of "$b")" 28 00 00 00 01 00 00 00 10 00
assert_ok "the other path sees the same data" cmp /tmp/pattern /tmp/back-sg
assert_ok "block read of the map" dd if=/dev/mapper/mpatha of=/tmp/back-dm bs=512 skip=256 count=16 iflag=direct
assert_ok "block I/O sees the same data" cmp /tmp/pattern /tmp/back-dm

step "qemu -device scsi-generic realizes on the node"
out=$(qemu_scsi_generic "$node")
assert_match "qemu realized scsi-generic" 'dev: scsi-generic, id "sg0"' "$out"
if printf '%s' "$out" | grep -qi "error"; then
	printf '%s\n' "$out" >&2
	die "qemu reported an error"
fi

step "restart: the node keeps its major:minor; the udev rule gives it to group disk"
numbers=$(stat -c '%t:%T' "$node")
mpathsg_stop
assert_fails "SIGTERM removed the node" test -e "$node"
lab_udevd_rules "$LAB_REPO/systemd/90-mpath-sg.rules"
mpathsg_start
assert_eq "same device numbers after a restart" "$numbers" "$(stat -c '%t:%T' "$node")"
udevadm settle -t 10
assert_eq "udev rule: group disk, mode 0660" "disk 660" "$(stat -c '%G %a' "$node")"

step "SIGTERM with a client holding the node open"
exec 7<>"$node"
mpathsg_stop
assert_fails "the node is gone" test -e "$node"
assert_fails "the open file now fails" sg_turs /proc/self/fd/7
exec 7>&-
