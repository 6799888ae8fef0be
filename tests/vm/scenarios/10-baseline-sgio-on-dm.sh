# The problem mpath-sg exists to solve, pinned against the stock kernel: with the current
# path offline, block I/O on /dev/mapper/X fails over, but SG_IO on /dev/mapper/X goes to
# that one path and fails; nothing retries it on the healthy path.
lab_lu 2
a=${LAB_PATHS[0]} b=${LAB_PATHS[1]}
# One priority group per path: the kernel routes both I/O and SG_IO to $a first.
lab_map mpatha --group "$a" "$b"
assert_ok "SG_IO (sg_turs) on the map with both paths up" sg_turs /dev/mapper/mpatha

step "path $a goes offline"
path_offline "$a"
assert_fails "SG_IO on the map is not failed over" sg_turs /dev/mapper/mpatha
assert_match "the error is the dead path's" "No such device|No such device or address|pass-through os error" "$LAB_LAST_OUTPUT"
assert_eq "device-mapper has not noticed the dead path" A "$(map_path_state mpatha "$a")"
assert_ok "block I/O on the map fails over" dd if=/dev/mapper/mpatha of=/dev/null bs=4k count=1 iflag=direct
assert_eq "block I/O made device-mapper fail $a" F "$(map_path_state mpatha "$a")"
assert_ok "SG_IO works only now that block I/O moved the map off $a" sg_turs /dev/mapper/mpatha
