# No path left: without queue_if_no_path the command completes at once with
# DID_TRANSPORT_DISRUPTED (never DID_NO_CONNECT); with queue_if_no_path it waits, bounded
# by its timeout, and uses a path reinstated meanwhile at once.
lab_lu 2
a=${LAB_PATHS[0]} b=${LAB_PATHS[1]}
lab_map mpatha "$a" "$b"
mpathsg_start
node=/dev/mpath-sg/mpatha
tur() { "$SGIO_PROBE" "$node" --tur "$1"; }
elapsed() { printf '%s' "$1" | sed -n 's/^elapsed_ms=//p'; }

step "both paths offline, no queue_if_no_path"
path_offline "$a"
path_offline "$b"
out=$(tur 20000)
say "$out"
assert_match "TUR completes with host status DID_TRANSPORT_DISRUPTED (0xe)" "^tur +ret=0 errno=0 status=0 .* host=0xe " "$out"
[ "$(elapsed "$out")" -lt 3000 ] || die "without queue_if_no_path the answer must come at once, took $(elapsed "$out") ms"
say "ok: answered in $(elapsed "$out") ms"
assert_eq "$a failed in dm" F "$(map_path_state mpatha "$a")"
assert_eq "$b failed in dm" F "$(map_path_state mpatha "$b")"

step "queue_if_no_path: the command waits for its timeout"
dmsetup message mpatha 0 queue_if_no_path
out=$(tur 2000)
say "$out"
assert_match "TUR completes with DID_TRANSPORT_DISRUPTED after waiting" "^tur +ret=0 errno=0 status=0 .* host=0xe " "$out"
e=$(elapsed "$out")
[ "$e" -ge 2000 ] && [ "$e" -lt 5000 ] || die "waited $e ms, expected the 2000 ms timeout"
say "ok: waited $e ms"

step "queue_if_no_path: a path reinstated during the wait is used at once"
"$SGIO_PROBE" "$node" --tur 30000 >/tmp/tur-wait &
waiter=$!
sleep 2
path_running "$b"
map_reinstate_path mpatha "$b"
wait "$waiter" || die "the waiting TUR client failed"
out=$(cat /tmp/tur-wait)
say "$out"
assert_match "TUR succeeded on the reinstated path" "^tur +ret=0 errno=0 status=0 masked=0 msg=0 sb_len_wr=0 host=0 " "$out"
e=$(elapsed "$out")
[ "$e" -ge 1500 ] && [ "$e" -lt 6000 ] || die "took $e ms: expected about 2 s (the reinstate), well before the 30 s timeout"
say "ok: completed $e ms after it was sent, ~2 s after which $b came back"

step "many callers waiting for a path do not block other callers, open or close"
path_offline "$b"
map_fail_path mpatha "$b"
for i in $(seq 1 8); do
	"$SGIO_PROBE" "$node" --tur 30000 >"/tmp/tur-wait-$i" &
	waiters[$i]=$!
done
sleep 1
out=$("$SGIO_PROBE" "$node" --version)
say "$out"
assert_match "open + SG_GET_VERSION_NUM + close answered while 8 SG_IOs wait" "^version ret=0 value=30536 " "$out"
e=$(printf '%s' "$out" | sed -n 's/.*elapsed_ms=//p')
[ "$e" -lt 2000 ] || die "took $e ms: the waiting SG_IOs held it up"
path_running "$b"
map_reinstate_path mpatha "$b"
for i in $(seq 1 8); do
	wait "${waiters[$i]}" || die "waiting client $i failed"
	assert_match "waiting TUR $i completed once $b came back" "^tur +ret=0 errno=0 status=0 masked=0 msg=0 sb_len_wr=0 host=0 " "$(cat "/tmp/tur-wait-$i")"
done

step "SIGTERM while a command waits for a path: it completes at once, the daemon exits"
path_offline "$a"
path_offline "$b"
"$SGIO_PROBE" "$node" --tur 60000 >/tmp/tur-term &
waiter=$!
sleep 1
mpathsg_stop
wait "$waiter" || die "the waiting client failed"
out=$(cat /tmp/tur-term)
say "$out"
assert_match "the waiting TUR completed with DID_TRANSPORT_DISRUPTED" "^tur +ret=0 errno=0 status=0 .* host=0xe " "$out"
e=$(elapsed "$out")
[ "$e" -lt 10000 ] || die "the waiting command took $e ms to end after SIGTERM"
