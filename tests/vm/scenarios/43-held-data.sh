# What the daemon holds for callers is bounded and private. A hoarder writes 16 unread
# 1 MiB READs on each of 32 files: it is stopped with ENOMEM at its share of the data
# budget (32 of the default 64 MiB), the daemon's RSS stays under 64 MiB, and other
# callers, within their share, are unaffected. Buffers reused from one command to the
# next never carry one caller's data to another, through the block device or the sg node.
lab_lu 2 delay=0
read -r a b <<<"${LAB_LU_PATHS[0]}"
lab_map mpatha --group "$a" "$b"
mpathsg_start
node=/dev/mpath-sg/mpatha
HOARD=$LAB_REPO/target/clients/hoard
ISOLATION=$LAB_REPO/target/clients/sg_isolation
rss_kib() { awk '/VmRSS/ {print $2}' /proc/"$MPATHSG_PID"/status; }

step "a hoarder: 32 files x 16 unread 1 MiB completions"
rss0=$(rss_kib)
"$HOARD" "$node" 32 16 1048576 >"$LAB_OUT/hoard.txt" 2>&1 &
hoarder=$!
wait_for "the hoarder's writes" 120 grep -q accepted= "$LAB_OUT/hoard.txt"
out=$(cat "$LAB_OUT/hoard.txt")
say "$out"
assert_match "its share (32 MiB) accepted, every other write refused with ENOMEM" \
	"^accepted=32 enomem=480 other=0 first_error=ENOMEM" "$out"
sleep 1 # the last commands complete
rss1=$(rss_kib)
say "daemon RSS: $rss0 KiB before, $rss1 KiB holding 32 MiB of results"
[ "$rss1" -le $((64 * 1024)) ] || die "RSS $rss1 KiB is over 64 MiB"

step "other callers, within their share, are unaffected"
"$HOARD" "$node" 2 16 65536 >"$LAB_OUT/modest.txt" 2>&1 &
modest=$!
wait_for "the modest caller's writes" 60 grep -q accepted= "$LAB_OUT/modest.txt"
assert_match "another process's 32 x 64 KiB unread results all accepted" \
	"^accepted=32 enomem=0 other=0" "$(cat "$LAB_OUT/modest.txt")"
kill $modest
wait $modest 2>/dev/null || true
out=$("$LAB_REPO/target/clients/sgio_bench" other "$node" 2 1048576 2 seq)
say "$out"
assert_match "SG_IO of 1 MiB needs none of the budget" " errors=0 " "$out"
fio --name=ok --filename="$node" --ioengine=sg --rw=randread --bs=4k --iodepth=16 \
	--size=4m --runtime=2 --time_based --output-format=json --output="$LAB_OUT/fio-held.json" \
	>/dev/null 2>&1 || die "fio failed"
out=$(python3 -c 'import json, sys; j = json.load(open(sys.argv[1]))["jobs"][0]; print(j["error"], j["read"]["total_ios"])' "$LAB_OUT/fio-held.json")
read -r err ios <<<"$out"
assert_eq "fio's sg engine at iodepth 16: no error" 0 "$err"
[ "$ios" -gt 0 ] || die "fio did no I/O"
kill $hoarder
wait $hoarder 2>/dev/null || true
say "ok: the hoarder's files closed"

step "no caller sees another's data"
for route in "1048576 30000 block device" "4096 5000 sg node"; do
	read -r bytes timeout what <<<"$route"
	out=$("$ISOLATION" "$node" 20 "$bytes" "$timeout")
	say "$what, $bytes bytes: $out"
	assert_match "$what: B's reads all ended in CHECK CONDITION" "b_check_conditions=20 " "$out"
	copied=$(printf '%s' "$out" | sed -n 's/.*b_copied_bytes=\([0-9]*\).*/\1/p')
	[ "$copied" -gt 0 ] || die "$what: the node copied nothing back to B: the check proves nothing"
	assert_match "$what: B received none of A's bytes" " b_pattern_bytes=0 " "$out"
	assert_match "$what: nor anything but zeros or its own bytes" " b_other_bytes=0$" "$out"
done
mpathsg_stop
