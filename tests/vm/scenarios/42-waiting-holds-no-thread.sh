# Requests that wait hold no thread of the daemon: 64 threads blocked in read() on one
# read-only fd, or 16 callers blocked in SG_IO under queue_if_no_path with no path left,
# leave the node and the other maps served at once; SIGKILL ends a waiting caller at once;
# a reinstated path completes the rest. The node runs with at most 8 threads, so a request
# that held one while waiting would show.
lab_lus 2 2 delay=0
lab_maps_all --queue
read -r a0 a1 <<<"${LAB_LU_PATHS[0]}"
mpathsg_start --threads-per-map 2 --max-threads-per-map 8
node=/dev/mpath-sg/lab0
other=/dev/mpath-sg/lab1
ms_of() { printf '%s' "$1" | sed -n 's/.*elapsed_ms=\([0-9]*\).*/\1/p'; }
threads() { ls /proc/"$MPATHSG_PID"/task | wc -l; }
# in_syscall PID NR: how many of PID's threads wait in system call NR.
in_syscall() {
	local n=0 t
	for t in /proc/"$1"/task/*; do
		[ "$(cut -d' ' -f1 "$t/syscall" 2>/dev/null)" = "$2" ] && n=$((n + 1))
	done
	echo $n
}
# killed_within_ms PID: SIGKILL, then how long until the process was gone (reaped).
killed_within_ms() {
	local t0 t1
	t0=$(date +%s%N)
	kill -9 "$1"
	wait "$1" 2>/dev/null || true
	t1=$(date +%s%N)
	echo $(((t1 - t0) / 1000000))
}

step "64 threads blocked in read() on one read-only fd"
python3 -c '
import os, sys, threading
fd = os.open(sys.argv[1], os.O_RDONLY)
def reader():
    try:
        os.read(fd, 88)
        print("a read returned", flush=True)
    except OSError as e:
        print("a read failed:", os.strerror(e.errno), flush=True)
ts = [threading.Thread(target=reader) for _ in range(64)]
for t in ts:
    t.start()
print("started", flush=True)
for t in ts:
    t.join()
' "$node" >"$LAB_OUT/readers.txt" 2>&1 &
readers=$!
readers_blocked() { [ "$(in_syscall $readers 0)" -ge 64 ]; }
wait_for "64 threads blocked in read()" 30 readers_blocked
say "ok: $(in_syscall $readers 0) threads of the reader wait in read(); the daemon has $(threads) threads"
out=$("$SGIO_PROBE" "$node" --tur 20000)
say "$out"
assert_match "SG_IO on the same node answered" "^tur +ret=0 errno=0 status=0 .* host=0 " "$out"
[ "$(ms_of "$out")" -lt 1000 ] || die "SG_IO on the same node took $(ms_of "$out") ms"
out=$("$SGIO_PROBE" "$other" --tur 20000)
assert_match "SG_IO on another map answered" "^tur +ret=0 errno=0 status=0 .* host=0 " "$out"
[ "$(ms_of "$out")" -lt 1000 ] || die "SG_IO on another map took $(ms_of "$out") ms"
say "ok: both answered in under a second while 64 reads wait"
[ "$(threads)" -le 10 ] || die "the daemon has $(threads) threads: a waiting read holds one"
ms=$(killed_within_ms $readers)
[ "$ms" -lt 1000 ] || die "the readers took $ms ms to die after SIGKILL"
say "ok: SIGKILL ended the 64 blocked readers in $ms ms"

step "16 callers blocked in SG_IO under queue_if_no_path, no path left"
path_offline "$a0"
path_offline "$a1"
pids=()
for i in $(seq 1 16); do
	"$SGIO_PROBE" "$node" --tur 60000 >"$LAB_OUT/waiter-$i.txt" 2>&1 &
	pids+=($!)
done
waiting_in_ioctl() {
	local n=0 p
	for p in "${pids[@]}"; do [ "$(in_syscall "$p" 16)" -ge 1 ] && n=$((n + 1)); done
	[ $n -eq 16 ]
}
wait_for "16 callers waiting in SG_IO" 30 waiting_in_ioctl
sleep 1
for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null || die "a waiting caller ended before any path came back"; done
say "ok: 16 callers wait for a path; the daemon has $(threads) threads"
[ "$(threads)" -le 10 ] || die "the daemon has $(threads) threads: a command waiting for a path holds one"
out=$("$SGIO_PROBE" "$other" --tur 20000)
assert_match "another map served meanwhile" "^tur +ret=0 errno=0 status=0 .* host=0 " "$out"
[ "$(ms_of "$out")" -lt 1000 ] || die "the other map took $(ms_of "$out") ms"
out=$("$SGIO_PROBE" "$node" --version)
assert_match "the waiting node answers other calls" "^version ret=0 value=30536 " "$out"
[ "$(ms_of "$out")" -lt 1000 ] || die "SG_GET_VERSION_NUM on the waiting node took $(ms_of "$out") ms"
ms=$(killed_within_ms "${pids[0]}")
[ "$ms" -lt 1000 ] || die "a waiting caller took $ms ms to die after SIGKILL"
say "ok: SIGKILL ended a waiting caller in $ms ms"
path_running "$a0"
map_reinstate_path lab0 "$a0"
for i in $(seq 2 16); do
	wait "${pids[$((i - 1))]}" || die "waiting caller $i failed: $(cat "$LAB_OUT/waiter-$i.txt")"
	assert_match "waiting TUR $i completed on the reinstated path" \
		"^tur +ret=0 errno=0 status=0 masked=0 msg=0 sb_len_wr=0 host=0 " "$(cat "$LAB_OUT/waiter-$i.txt")"
done
path_running "$a1"
mpathsg_stop
