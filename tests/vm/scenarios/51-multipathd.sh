# The daemon next to the real multipathd: it publishes the maps multipathd makes (also
# one made while it runs), follows multipathd's path checker (a path multipathd fails is
# left alone, a path it reinstates is used again), and does not fight it: multipathd's
# own view of the paths matches device-mapper's throughout.
lab_lu 2
a=${LAB_PATHS[0]} b=${LAB_PATHS[1]}
assert_ok "multipathd starts" lab_multipathd_start
wait_for "multipathd to make a map" 30 sh -c '[ -n "$(dmsetup ls --target multipath | grep -v "No devices")" ]'
map=$(dmsetup ls --target multipath | awk 'NR == 1 {print $1}')
multipath -ll "$map"
mpathsg_start
node=/dev/mpath-sg/$map
assert_ok "the node of multipathd's map $map exists" test -c "$node"
assert_ok "sg_inq through it" sg_inq "$node"
# The path multipathd prefers (ALUA: the higher priority group) carries the commands.
first=$(dmsetup status "$map" | awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^[0-9]+:[0-9]+$/) { print $i; exit } }')
say "first path in $map: $first"
[ "$(lab_devt "$a")" = "$first" ] || { t=$a; a=$b; b=$t; }

step "multipathd's checker fails $a: the node leaves it alone"
path_offline "$a"
wait_for "multipathd to fail $a" 20 sh -c "[ \"\$(dmsetup status $map | awk -v p=$(lab_devt "$a") '{ for (i = 1; i < NF; i++) if (\$i == p) print \$(i + 1) }')\" = F ]"
n=$(path_iocount "$b")
for i in 1 2 3 4; do sg_turs "$node" || die "TUR $i through the node failed"; done
[ "$(path_iocount "$b")" -ge $((n + 4)) ] || die "the commands did not go to $b"
assert_match "multipathd shows $a failed" "$a .*failed" "$(multipathd show paths)"

step "the path comes back: multipathd reinstates it, the node uses it again"
path_running "$a"
wait_for "multipathd to reinstate $a" 30 sh -c "[ \"\$(dmsetup status $map | awk -v p=$(lab_devt "$a") '{ for (i = 1; i < NF; i++) if (\$i == p) print \$(i + 1) }')\" = A ]"
# failback immediate (lab multipath.conf): multipathd switches back to $a's group.
group_of_a_active() { multipath -ll "$map" | grep -B1 " $a " | head -n 1 | grep -q 'status=active'; }
wait_for "multipathd to switch back to $a's group" 30 group_of_a_active
multipath -ll "$map"
sleep 0.5
n=$(path_iocount "$a")
for i in 1 2 3 4; do sg_turs "$node" || die "TUR $i through the node failed"; done
[ "$(path_iocount "$a")" -gt "$n" ] || die "the node did not use $a again after multipathd reinstated it"
assert_match "multipathd shows both paths active" "$a .*active ready" "$(multipathd show paths)"
assert_match "multipathd shows both paths active" "$b .*active ready" "$(multipathd show paths)"
out=$("$MPATH_SGD" status)
echo "$out"
assert_match "mpath-sgd status agrees" "$(lab_devt "$a") +$a .* active " "$out"

step "a LU added while both run: multipathd makes its map, the node follows"
echo 2 >/sys/bus/pseudo/drivers/scsi_debug/max_luns
for h in $(lab_host_of "$a") $(lab_host_of "$b"); do echo "- - -" >/sys/class/scsi_host/host"$h"/scan; done
wait_for "multipathd to make a second map" 60 sh -c '[ "$(dmsetup ls --target multipath | grep -vc "No devices")" -ge 2 ]'
map2=$(dmsetup ls --target multipath | awk '{print $1}' | grep -vx "$map" | head -n 1)
wait_for "/dev/mpath-sg/$map2" 10 test -c /dev/mpath-sg/"$map2"
assert_ok "sg_inq through the new node" sg_inq /dev/mpath-sg/"$map2"
mpathsg_stop
lab_multipathd_stop
