# Nothing lost under faults: a writer stamps every block it writes (LU, LBA, thread,
# sequence number, checksum) through two nodes, from 8 threads (SG_IO and sg's write()/read()
# interface), and proves every block it reads and, every 16th command, that the LU answering
# is the node's own (INQUIRY VPD 0x83), while a fault driver cycles through the
# faults paths suffer. Then every block is read back and proven once more.
#
# Faults, one after another, each followed by a healthy pause (a cycle; at least one, then
# more while LAB_SOAK_SECONDS last; `make soak` runs a long one):
#   offline    one path's device offline for 3 s, then running and reinstated
#   transport  scsi_debug reports a transport error (ABORTED COMMAND 4B/03, after running the
#              command) on every 50th command, for 4 s
#   timeout    scsi_debug ignores every 300th command (it times out), for 3 s
#   suspend    a map suspended for 1 s
#   reload     a map's table reloaded with its paths in the other order
#   delete     both LUs' paths on one SCSI host hot-unplugged, then rescanned LUN 1 first,
#              so that the sd names and sg minors of the two LUs trade places; the maps
#              are reloaded with the new devices
#   alldown    both paths of one map offline for 2 s, without queue_if_no_path
#   queued     the same with queue_if_no_path: commands wait and then complete
#   restart    the daemon restarted as `systemctl restart` does (SIGTERM; the successor
#              takes the nodes, open files, waiting reads and unread write() results
#              from the fd store; lib/fdstore-supervisor): no error may show
#
# Verdict: no mismatch (nothing lost, corrupted, or misdirected to another LU or block;
# scsi_debug's LUs share one store, so each node writes its own LBA range and another LU's
# answer shows in its identity),
# every block read back at the end, and every error the writer saw explained: while no
# path was up (alldown) only the documented DID_TRANSPORT_DISRUPTED; within an injection
# window only the injected answer (scsi_debug injects per LU, on every path alike:
# DID_TIME_OUT for an ignored command, whose caller's timeout is then spent; ABORTED
# COMMAND 4B/03 when every path tried drew one); anything else fails the scenario.
# tests/vm/out/reliability-soak.md gets the figures (docs/reliability.md).
secs=${LAB_SOAK_SECONDS:-60}
lab_lus 2 2
lab_map soak0 ${LAB_LU_PATHS[0]}
lab_map soak1 ${LAB_LU_PATHS[1]}
mpathsg_start_supervised
faults=$LAB_OUT/70-soak-faults.log
errors=$LAB_OUT/70-soak-errors.log
summary=$LAB_OUT/70-soak-summary.log
: >"$faults"
: >"$errors"
now() { date +%s.%N; }

paths_of() { printf '%s\n' ${LAB_LU_PATHS[$1]}; }
# on_host K: LU 0's and LU 1's paths through the K-th SCSI host (paths are in host order).
on_host() { paths_of 0 | sed -n "$(($1 + 1))p"; paths_of 1 | sed -n "$(($1 + 1))p"; }
# DISK=dev_t,sgN for each DISK: what a path is, to see names and minors trade places.
describe() {
	local d
	for d in "$@"; do printf '%s=%s,%s ' "$d" "$(lab_devt "$d")" "$(basename "$(lab_sg_of "$d")")"; done
}
# all_paths_down MAP DISK...: every path of MAP offline for 2 s, then running and
# reinstated.
all_paths_down() {
	local m=$1 d
	shift
	for d in "$@"; do path_offline "$d"; done
	sleep 2
	for d in "$@"; do path_running "$d"; done
	for d in "$@"; do map_reinstate_path "$m" "$d"; done
}
# fault KIND MAP START END: one line in the fault log.
fault() { printf '%s %s %s %s\n' "$1" "$2" "$3" "$(now)" >>"$faults"; }

step "the writer starts: 2 maps x 4 threads (2 SG_IO, 2 write()/read())"
"$LAB_REPO/target/clients/soak" 100000 4 "$errors" /dev/mpath-sg/soak0 /dev/mpath-sg/soak1 >"$summary" 2>&1 &
writer=$!
sleep 3
kill -0 "$writer" || die "the writer exited at once: $(cat "$summary")"

start=$(date +%s)
cycle=0
while [ "$cycle" -eq 0 ] || [ $(($(date +%s) - start)) -lt "$secs" ]; do
	k=$((cycle % 2))
	m=soak$k
	mapfile -t p < <(paths_of "$k")
	step "cycle $cycle on $m (paths ${p[*]})"

	t=$(now)
	path_offline "${p[0]}"
	sleep 3
	path_running "${p[0]}"
	map_reinstate_path "$m" "${p[0]}"
	fault offline "$m" "$t"
	say "offline: ${p[0]} for 3 s"
	sleep 2

	t=$(now)
	sdebug_inject 50 0x10
	sleep 4
	sdebug_inject 0 0
	fault transport all "$t"
	say "transport: every 50th command for 4 s"
	sleep 2

	t=$(now)
	sdebug_inject 300 4
	sleep 3
	sdebug_inject 0 0
	fault timeout all "$t"
	say "timeout: every 300th command ignored for 3 s"
	sleep 2

	t=$(now)
	map_suspend "$m"
	sleep 1
	map_resume "$m"
	fault suspend "$m" "$t"
	say "suspend: $m for 1 s"
	sleep 2

	t=$(now)
	map_reload "$m" "$(lab_table "${p[1]}" "${p[0]}")"
	fault reload "$m" "$t"
	say "reload: $m with its paths as ${p[1]} ${p[0]}"
	sleep 2

	# Both LUs' paths on one host go; the host is rescanned LUN 1 first.
	t=$(now)
	mapfile -t gone < <(on_host "$k")
	h=$(lab_host_of "${gone[0]}")
	before=$(describe "${gone[@]}")
	for d in "${gone[@]}"; do path_delete "$d"; done
	sleep 2
	echo "0 0 1" >/sys/class/scsi_host/host"$h"/scan
	echo "0 0 0" >/sys/class/scsi_host/host"$h"/scan
	wait_for "4 scsi_debug disks after the rescan of host$h" 60 lab_count_disks_is 4
	udevadm settle -t 30 || true
	lab_scan_paths
	for lu in 0 1; do
		# shellcheck disable=SC2046 # the LU's paths, one word each
		map_reload soak$lu "$(lab_table $(paths_of "$lu"))"
	done
	fault delete all "$t"
	# shellcheck disable=SC2046 # one word per path
	after=$(describe $(on_host "$k"))
	say "delete: host$h's paths [$before] came back as [$after] (LU 0 first)"
	sleep 2

	mapfile -t p < <(paths_of "$k")
	t=$(now)
	all_paths_down "$m" "${p[@]}"
	fault alldown "$m" "$t"
	say "alldown: both paths of $m for 2 s"
	sleep 2

	dmsetup message "$m" 0 queue_if_no_path
	t=$(now)
	all_paths_down "$m" "${p[@]}"
	fault queued "$m" "$t"
	sleep 1
	dmsetup message "$m" 0 fail_if_no_path
	say "queued: both paths of $m for 2 s under queue_if_no_path"
	sleep 2

	t=$(now)
	mpathsg_restart
	fault restart all "$t"
	say "restart: the successor serves after $(awk -v t="$t" -v n="$(now)" 'BEGIN { printf "%.1f", n - t }') s"
	# What multipathd's checker would do: any path the daemon failed in device-mapper
	# (an injected LU timeout can make its probe time out too) is reinstated.
	for lu in 0 1; do
		for d in $(paths_of "$lu"); do
			if [ "$(map_path_state soak$lu "$d")" = F ]; then
				say "reinstating $d in soak$lu (failed in device-mapper during the cycle)"
				map_reinstate_path soak$lu "$d"
			fi
		done
	done
	sleep 2
	cycle=$((cycle + 1))
done

step "the writer stops and reads back every block"
kill -USR1 "$writer"
for ((i = 0; i < 1200; i++)); do
	kill -0 "$writer" 2>/dev/null || break
	sleep 0.1
done
kill -0 "$writer" 2>/dev/null && die "the writer did not finish its verification within 120 s"
rc=0
wait "$writer" || rc=$?
cat "$summary"
grep -q '^SUMMARY' "$summary" || die "the writer printed no summary"
awk '/^MISMATCH/ && n++ < 20 { print "   | " $0 }' "$errors"

# Each error against the fault windows: (kind, map, start, end) from the fault log.
verdicts=$(awk -v timeout_s=10 '
	FNR == NR { kind[NR] = $1; map[NR] = $2; from[NR] = $3; to[NR] = $4; n = NR; next }
	$1 == "ERR" {
		t = $2; node = ""; host = ""; status = ""; sense = ""
		for (i = 3; i <= NF; i++) {
			split($i, kv, "=")
			if (kv[1] == "node") node = "soak" kv[2]
			if (kv[1] == "host") host = kv[2]
			if (kv[1] == "status") status = kv[2]
			if (kv[1] == "sense") sense = kv[2]
		}
		v = "unexplained"
		for (f = 1; f <= n; f++) {
			# A command sent during the window ends up to its timeout later.
			if (t < from[f] || t > to[f] + timeout_s + 3) continue
			if (map[f] != "all" && map[f] != node) continue
			if (kind[f] == "alldown" && host == "0xe") { v = "alldown"; break }
			if (kind[f] == "timeout" && host == "0x3") { v = "timeout"; break }
			if (kind[f] == "transport" && status == "0x2" && sense == "b/4b/03") { v = "transport"; break }
		}
		count[v]++
		if (v == "unexplained") print "unexplained: " $0 > "/dev/stderr"
	}
	END { printf "alldown=%d timeout=%d transport=%d unexplained=%d\n", count["alldown"], count["timeout"], count["transport"], count["unexplained"] }
' "$faults" "$errors")
say "errors by cause: $verdicts"

# The report.
# SUMMARY seconds= threads= commands= writes= reads= inquiries= errors= mismatches=
#         blocks_verified= blocks_unread=
mapfile -t v < <(sed -n 's/^SUMMARY //p' "$summary" | tr ' ' '\n' | cut -d= -f2)
[ "${#v[@]}" -eq 10 ] || die "cannot read the writer's summary: $(cat "$summary")"
s_secs=${v[0]} threads=${v[1]} commands=${v[2]} writes=${v[3]} reads=${v[4]} inquiries=${v[5]}
errs=${v[6]} mism=${v[7]} verified=${v[8]} unread=${v[9]}
{
	printf '| figure | value |\n|---|---|\n'
	printf '| writing time | %s s, %s threads on 2 maps (2 paths each) |\n' "$s_secs" "$threads"
	printf '| commands | %s (%s writes, %s reads with the final read-back, %s INQUIRY) |\n' "$commands" "$writes" "$reads" "$inquiries"
	printf '| fault cycles | %s |\n' "$cycle"
	printf '| faults | %s |\n' "$(awk '{ c[$1]++ } END { for (k in c) printf "%s %d, ", k, c[k] }' "$faults" | sed 's/, $//')"
	printf '| mismatches (lost, stale, corrupted or misdirected blocks) | %s |\n' "$mism"
	printf '| blocks proven at the end | %s of %s |\n' "$verified" "$((verified + unread))"
	printf '| errors seen by the application | %s: %s |\n' "$errs" "$verdicts"
	printf '| path errors the daemon probed / failed in device-mapper / probe answered | %s / %s / %s |\n' \
		"$(grep -c 'probing the path before failing it' "$MPATHSG_LOG" || true)" \
		"$(grep -c 'the probe confirms the path error' "$MPATHSG_LOG" || true)" \
		"$(grep -c 'the path answers its probe' "$MPATHSG_LOG" || true)"
} >"$LAB_OUT/reliability-soak.md"
cat "$LAB_OUT/reliability-soak.md"

[ "$mism" = 0 ] || die "$mism mismatches (see $errors)"
[ "$unread" = 0 ] || die "$unread blocks could not be read back at the end"
[ "$rc" = 0 ] || die "the writer exited $rc"
case $verdicts in *unexplained=0) ;; *) die "errors the faults do not explain (listed above)" ;; esac
say "ok: nothing lost or misdirected; every error explained ($verdicts)"
mpathsg_stop_supervised
