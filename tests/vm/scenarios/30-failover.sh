# One of two paths goes offline: every client command still succeeds through the node
# while SG_IO on /dev/mapper/X fails; the daemon fails the path in device-mapper and logs
# the failover; once the path is back and reinstated, the node uses it again.
lab_lu 2
a=${LAB_PATHS[0]} b=${LAB_PATHS[1]}
lab_map mpatha --group "$a" "$b" # $a is the path dm (and the node) prefer
mpathsg_start
node=/dev/mpath-sg/mpatha

step "both paths up: commands go to $a"
n=$(path_iocount "$a")
assert_ok "sg_turs through the node" sg_turs "$node"
[ "$(path_iocount "$a")" -gt "$n" ] || die "the command did not go to $a"
head -c 4096 /dev/urandom >/tmp/pattern
assert_ok "write a pattern at LBA 512" sg_raw -s 4096 -i /tmp/pattern "$node" 2a 00 00 00 02 00 00 00 08 00

step "$a goes offline"
path_offline "$a"
assert_fails "sg_turs on /dev/mapper/mpatha fails (the kernel does not fail over SG_IO)" sg_turs /dev/mapper/mpatha
assert_ok "sg_turs through the node" sg_turs "$node"
assert_eq "the daemon failed $a in device-mapper" F "$(map_path_state mpatha "$a")"
assert_ok "the daemon logged the failover (map, path, command, reason)" \
	mpathsg_log_has "failover.*map=mpatha.*path=$(lab_devt "$a") \\($a.*command=0x00.*reason="
for cmd in "sg_inq -H" "sg_inq -p 0x83 -H" "sg_readcap -l" "sg_luns -H"; do
	assert_ok "$cmd through the node" $cmd "$node"
done
assert_ok "READ(10) through the node" sg_raw -r 4096 -o /tmp/back "$node" 28 00 00 00 02 00 00 00 08 00
assert_ok "the data read back is the pattern" cmp /tmp/pattern /tmp/back
head -c 4096 /dev/urandom >/tmp/pattern2
assert_ok "WRITE(10) through the node" sg_raw -s 4096 -i /tmp/pattern2 "$node" 2a 00 00 00 02 00 00 00 08 00
assert_ok "READ(10) through $b's sg node" sg_raw -r 4096 -o /tmp/back2 "$(lab_sg_of "$b")" 28 00 00 00 02 00 00 00 08 00
assert_ok "the write landed" cmp /tmp/pattern2 /tmp/back2
out=$(qemu_scsi_generic "$node")
assert_match "qemu realizes scsi-generic on the node with $a offline" 'dev: scsi-generic, id "sg0"' "$out"

step "$a comes back and is reinstated"
path_running "$a"
map_reinstate_path mpatha "$a"
assert_eq "$a active again in device-mapper" A "$(map_path_state mpatha "$a")"
sleep 1.2 # the node re-reads the map at least once a second
# dm-multipath does not fail back by itself: the second group stays current until someone
# (multipathd's failback) switches groups; the node follows device-mapper's choice.
n=$(path_iocount "$b")
assert_ok "sg_turs through the node" sg_turs "$node"
[ "$(path_iocount "$b")" -gt "$n" ] || die "the node left $b although dm still uses it"
say "ok: commands stay on $b, as dm's current group"
dmsetup message mpatha 0 "switch_group 1"
sleep 1.2
n=$(path_iocount "$a")
assert_ok "sg_turs through the node after switch_group 1" sg_turs "$node"
[ "$(path_iocount "$a")" -gt "$n" ] || die "the node did not go back to $a"
say "ok: commands go to $a again"

step "one group with both paths: a reinstated path takes its share at once"
mpathsg_stop
dmsetup remove mpatha
lab_map mpathb "$a" "$b"
mpathsg_start
node=/dev/mpath-sg/mpathb
path_offline "$a"
for i in 1 2 3 4; do assert_ok "sg_turs $i through the node, $a offline" sg_turs "$node"; done
assert_eq "$a failed" F "$(map_path_state mpathb "$a")"
path_running "$a"
map_reinstate_path mpathb "$a"
sleep 1.2
n=$(path_iocount "$a")
for i in 1 2 3 4; do assert_ok "sg_turs $i through the node, $a back" sg_turs "$node"; done
[ "$(path_iocount "$a")" -ge $((n + 2)) ] || die "$a got $(($(path_iocount "$a") - n)) of 4 commands after its reinstatement"
say "ok: $a carries its share again ($(($(path_iocount "$a") - n)) of 4)"

step "$a hot-unplugged: the other path carries on, the daemon lets go of the gone sg device"
sg_a=$(lab_sg_of "$a") devt_a=$(lab_devt "$a")
path_delete "$a"
for i in 1 2 3 4; do assert_ok "sg_turs $i through the node, $a deleted" sg_turs "$node"; done
assert_match "$a ($devt_a) failed in device-mapper" " $devt_a F " "$(dmsetup status mpathb)"
held=$(find /proc/"$MPATHSG_PID"/fd -lname "$sg_a*" | wc -l)
assert_eq "fds the daemon holds on $sg_a (its device is gone)" 0 "$held"
mpathsg_stop
