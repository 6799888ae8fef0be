# 256 multipath maps: every one gets its node at start, every node answers, the idle
# daemon uses no CPU, and removing all the maps while it runs removes all the nodes.
# (Times and RSS are measured by `make bench`; here they are printed, not asserted.)
# The maps share two paths (see lab_many_maps).
N=256
lab_lu 2 delay=0
lab_many_maps $N "${LAB_PATHS[@]}"
assert_eq "$N multipath maps" $N "$(dmsetup ls --target multipath | grep -vc 'No devices')"

t0=$(date +%s%N)
mpathsg_start
t1=$(date +%s%N)
assert_eq "$N nodes" $N "$(find /dev/mpath-sg -type c | wc -l)"
say "all $N nodes published $(( (t1 - t0) / 1000000 )) ms after start; RSS $(awk '/VmRSS/ {print $2}' /proc/"$MPATHSG_PID"/status) KiB; $(ls /proc/"$MPATHSG_PID"/task | wc -l) threads"

step "every node answers"
bad=0
for i in $(seq 0 $((N - 1))); do
	sg_turs /dev/mpath-sg/lab$i >/dev/null 2>&1 || { bad=$((bad + 1)); say "TUR on lab$i failed"; }
done
assert_eq "nodes failing a TUR" 0 $bad
assert_match "status lists every map" "^$N\$" "$("$MPATH_SGD" status | grep -c '^lab[0-9]* /dev/mpath-sg/')"

step "idle"
t0=$(awk '{print $14 + $15}' "/proc/$MPATHSG_PID/stat")
sleep 3
t1=$(awk '{print $14 + $15}' "/proc/$MPATHSG_PID/stat")
[ $((t1 - t0)) -le 1 ] || die "the idle daemon used $((t1 - t0)) ticks of CPU in 3 s with $N maps"
say "ok: $((t1 - t0)) CPU ticks in 3 idle seconds with $N maps"

step "all maps removed while the daemon runs"
t0=$(date +%s%N)
dmsetup remove_all --noudevsync || die "dmsetup remove_all failed"
tm=$(date +%s%N)
wait_for "every node to go" 60 sh -c '[ -z "$(find /dev/mpath-sg -type c 2>/dev/null)" ]'
t1=$(date +%s%N)
say "ok: all $N nodes gone $(( (t1 - t0) / 1000000 )) ms after dmsetup remove_all began, $(( (t1 - tm) / 1000000 )) ms after it returned"
kill -0 "$MPATHSG_PID" || die "the daemon died"
assert_eq "status lists nothing" "no maps published" "$("$MPATH_SGD" status)"
mpathsg_stop
