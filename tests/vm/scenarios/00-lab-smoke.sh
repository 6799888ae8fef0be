# The lab itself: the kernel pieces the project talks to are there and behave as the
# notes say (CUSE, sg nodes per path, one WWID through two hosts, a multipath map).
step "kernel features"
assert_ok "/dev/cuse exists" test -c /dev/cuse
assert_match "dm multipath target loaded" "^multipath" "$(dmsetup targets)"

step "two paths to one LU"
lab_lu 2
assert_eq "two path disks" 2 "${#LAB_PATHS[@]}"
assert_eq "one LU" 1 "${#LAB_LU_PATHS[@]}"
a=${LAB_PATHS[0]} b=${LAB_PATHS[1]}
assert_eq "same WWID through both hosts" "${LAB_WWID_OF[$a]}" "${LAB_WWID_OF[$b]}"
[ "$(lab_host_of "$a")" != "$(lab_host_of "$b")" ] || die "both paths on one host"
for d in "$a" "$b"; do
	assert_ok "sg_turs on $d's sg node $(lab_sg_of "$d")" sg_turs "$(lab_sg_of "$d")"
done

step "multipath map"
lab_map mpatha "$a" "$b"
assert_ok "block read through the map" dd if=/dev/mapper/mpatha of=/dev/null bs=4k count=8 iflag=direct
assert_eq "$a active in the map" A "$(map_path_state mpatha "$a")"
map_fail_path mpatha "$a"
assert_eq "fail_path message marks $a failed" F "$(map_path_state mpatha "$a")"
map_reinstate_path mpatha "$a"
assert_eq "reinstate_path brings $a back" A "$(map_path_state mpatha "$a")"

step "several LUs, one map each"
lab_reset
lab_lus 3 2
assert_eq "three LUs" 3 "${#LAB_LU_PATHS[@]}"
lab_maps_all
assert_eq "three maps" 3 "$(dmsetup ls --target multipath | grep -c '^lab')"

step "fault helpers"
lab_reset
lab_lu 2
a=${LAB_PATHS[0]} b=${LAB_PATHS[1]}
lab_map mpatha "$a" "$b"
map_suspend mpatha
assert_match "map_suspend suspends the map" "State: +SUSPENDED" "$(dmsetup info mpatha)"
map_resume mpatha
assert_match "map_resume resumes it" "State: +ACTIVE" "$(dmsetup info mpatha)"
sz=$(blockdev --getsz /dev/"$a")
map_reload mpatha "0 $sz multipath 1 queue_if_no_path 0 1 1 round-robin 0 2 1 $(lab_devt "$b") 1 $(lab_devt "$a") 1"
assert_match "map_reload loads a new table" "queue_if_no_path .*round-robin 0 2 1 $(lab_devt "$b") 1 $(lab_devt "$a") 1" "$(dmsetup table mpatha)"
sg=$(lab_sg_of "$a")
assert_ok "READ(10) on $a's sg" sg_raw -r 512 "$sg" 28 00 00 00 00 00 00 00 01 00
sdebug_inject 1 0x10
assert_fails "scsi_debug transport error injection fails READ(10)" sg_raw -r 512 "$sg" 28 00 00 00 00 00 00 00 01 00
sdebug_inject 0 0
assert_ok "injection off: READ(10) works again" sg_raw -r 512 "$sg" 28 00 00 00 00 00 00 00 01 00
host=$(lab_host_of "$a")
dmsetup remove mpatha
path_delete "$a"
wait_for "$a to disappear" 10 sh -c "! test -e /sys/block/$a"
assert_eq "one path left" 1 "$(lab_sdebug_disks | wc -l)"
path_rescan "$host"
wait_for "the path to come back on host $host" 10 sh -c '[ "$(ls /sys/class/scsi_host/host'"$host"'/device/target*/*/block 2>/dev/null | wc -l)" -ge 1 ]'
lab_scan_paths
assert_eq "two paths again after the rescan" 2 "${#LAB_PATHS[@]}"

step "the real multipathd makes the map"
lab_reset
lab_lu 2
assert_ok "multipathd starts" lab_multipathd_start
wait_for "multipathd to make a map" 30 sh -c '[ -n "$(dmsetup ls --target multipath | grep -v "No devices")" ]'
map=$(dmsetup ls --target multipath | awk 'NR == 1 {print $1}')
out=$(multipath -ll "$map" 2>&1)
printf '%s\n' "$out"
assert_match "both paths in $map" "${LAB_PATHS[0]} .*active ready" "$out"
assert_match "both paths in $map" "${LAB_PATHS[1]} .*active ready" "$out"
if printf '%s' "$out" | grep -qi "ignoring\|missing"; then die "multipath.conf is not parsed cleanly"; fi
