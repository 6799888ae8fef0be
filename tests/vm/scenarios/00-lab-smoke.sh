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
