# make bench: the same workloads, in one lab boot, on a path's /dev/sgN (the physical limit
# for the node), the node (single round, and forced retry rounds) and /dev/mapper/X (the
# kernel's own SG_IO forwarding). Writes $LAB_OUT/benchmarks.md.
SECS=${BENCH_SECONDS:-5}
BENCH=$LAB_REPO/target/clients/sgio_bench
R=$LAB_OUT/bench-raw.txt
: >"$R"
lab_lu 2 delay=0
a=${LAB_PATHS[0]} b=${LAB_PATHS[1]}
sg=$(lab_sg_of "$a")
lab_map mpatha --group "$a" "$b" # one path in use, as on /dev/sgN
node=/dev/mpath-sg/mpatha

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
workloads() { # TARGET DEVICE [skip-1m]
	"$BENCH" "$1 rand4k-qd1" "$2" 1 4096 "$SECS" rand | tee -a "$R"
	"$BENCH" "$1 rand4k-qd16" "$2" 16 4096 "$SECS" rand | tee -a "$R"
	"$BENCH" "$1 seq124k" "$2" 1 126976 "$SECS" seq | tee -a "$R"
	[ "${3:-}" = skip-1m ] || "$BENCH" "$1 seq1m" "$2" 1 1048576 "$SECS" seq | tee -a "$R"
	[ "${3:-}" = skip-1m ] || fio_workload "$1" "$2"
}
# fio's sg engine, 4 KiB random reads at iodepth 16: write()/poll()/read() on character
# devices (sg, the node), SG_IO on block devices (dm).
fio_workload() { # TARGET DEVICE
	fio --name=bench --filename="$2" --ioengine=sg --rw=randread --bs=4k --iodepth=16 \
		--size=64m --runtime="$SECS" --time_based --output-format=json \
		--output="$LAB_OUT/fio-$1.json" >/dev/null 2>&1 || die "fio on $2 failed"
	python3 - "$LAB_OUT/fio-$1.json" "$1" <<'PY' | tee -a "$R"
import json, sys
j = json.load(open(sys.argv[1]))["jobs"][0]
r = j["read"]
p = r["clat_ns"]["percentile"]
print(f'{sys.argv[2]} fio-qd16 cmds={r["total_ios"]} errors={j["error"]} iops={int(r["iops"])} '
      f'mbps={r["bw_bytes"] / 1e6:.1f} p50_us={p["50.000000"] // 1000} p99_us={p["99.000000"] // 1000}')
PY
}

step "the same SG_IO in a loop and between two processes (the daemon's position)"
PP=$LAB_REPO/target/clients/sgio_pingpong
"$PP" "pp block-tur" "/dev/$a" 3000 0 | tee -a "$R"
"$PP" "pp sg-tur" "$sg" 3000 0 | tee -a "$R"
"$PP" "pp block-4k" "/dev/$a" 3000 4096 | tee -a "$R"
"$PP" "pp sg-4k" "$sg" 3000 4096 | tee -a "$R"

step "/dev/sgN ($sg)"
workloads sg "$sg"
step "/dev/mapper/mpatha (SG_IO forwarded by dm)"
workloads dm /dev/mapper/mpatha
step "node, single round"
mpathsg_start
# The floor: a bare round trip through CUSE and the daemon (an ioctl nobody implements).
"$BENCH" "bare rt-qd1" "$node" 1 0 "$SECS" bare | tee -a "$R"
"$BENCH" "bare rt-qd16" "$node" 16 0 "$SECS" bare | tee -a "$R"
t0=$(cpu_ticks "$MPATHSG_PID")
workloads node "$node"
t1=$(cpu_ticks "$MPATHSG_PID")
cmds=$(awk '$1 == "node" { sub("cmds=", "", $3); n += $3 } END { print n }' "$R")
echo "cpu node $(awk -v t=$((t1 - t0)) -v n="$cmds" 'BEGIN { printf "%.1f", t * 10000 / n }')" | tee -a "$R" # us per command (USER_HZ 100)
mpathsg_stop
step "node, forced retry rounds"
mpathsg_start --ioctl-rounds
t0=$(cpu_ticks "$MPATHSG_PID")
workloads rounds "$node" skip-1m
t1=$(cpu_ticks "$MPATHSG_PID")
cmds=$(awk '$1 == "rounds" { sub("cmds=", "", $3); n += $3 } END { print n }' "$R")
echo "cpu rounds $(awk -v t=$((t1 - t0)) -v n="$cmds" 'BEGIN { printf "%.1f", t * 10000 / n }')" | tee -a "$R"
mpathsg_stop

step "failover latency (5 rounds: path offline, first command, path back)"
mpathsg_start
for i in 1 2 3 4 5; do "$BENCH" healthy "$node" --tur-once; done | tee -a "$R"
for i in 1 2 3 4 5; do "$BENCH" healthy-direct "$(lab_sg_of "$b")" --tur-once; done | tee -a "$R"
for i in 1 2 3 4 5; do
	"$BENCH" dead-path-error "$sg" --tur-once "echo offline >/sys/block/$a/device/state" | tee -a "$R"
	"$BENCH" failover-first "$node" --tur-once | tee -a "$R"
	path_running "$a"
	map_reinstate_path mpatha "$a"
	dmsetup message mpatha 0 "switch_group 1"
	sleep 1.2 # the node re-reads the map once a second
done
mpathsg_stop

step "held data: a hoarder with 32 files x 16 unread 1 MiB completions"
mpathsg_start
"$LAB_REPO/target/clients/hoard" "$node" 32 16 1048576 >"$LAB_OUT/hoard-bench.txt" 2>&1 &
hoarder=$!
wait_for "the hoarder's writes" 120 grep -q accepted= "$LAB_OUT/hoard-bench.txt"
sleep 1
"$LAB_REPO/target/clients/hoard" "$node" 2 16 65536 >"$LAB_OUT/hoard-modest.txt" 2>&1 &
modest=$!
wait_for "the modest caller's writes" 60 grep -q accepted= "$LAB_OUT/hoard-modest.txt"
echo "hoard $(cat "$LAB_OUT/hoard-bench.txt") rss_kib=$(awk '/VmRSS/ {print $2}' "/proc/$MPATHSG_PID/status") modest_$(cat "$LAB_OUT/hoard-modest.txt")" | tee -a "$R"
kill $hoarder $modest
wait $hoarder $modest 2>/dev/null || true
mpathsg_stop

step "RSS with 64 maps"
lab_reset
lab_lus 64 1 delay=0
lab_maps_all
mpathsg_start
sleep 1
echo "rss64 $(awk '/VmRSS/ {print $2}' "/proc/$MPATHSG_PID/status") $(ls /dev/mpath-sg | wc -l)" | tee -a "$R"
mpathsg_stop

step "256 maps: time to publish, RSS, idle CPU"
lab_reset
lab_lu 2 delay=0
lab_many_maps 256 "${LAB_PATHS[@]}"
t0=$(date +%s%N)
mpathsg_start # returns once the daemon logs that it serves (polled every 0.1 s)
t1=$(date +%s%N)
[ "$(find /dev/mpath-sg -type c | wc -l)" -eq 256 ] || die "not all 256 nodes were published"
c0=$(cpu_ticks "$MPATHSG_PID")
sleep 5
c1=$(cpu_ticks "$MPATHSG_PID")
echo "scale256 publish_ms=$(((t1 - t0) / 1000000)) rss_kib=$(awk '/VmRSS/ {print $2}' "/proc/$MPATHSG_PID/status") idle_ticks_5s=$((c1 - c0)) threads=$(ls /proc/"$MPATHSG_PID"/task | wc -l)" | tee -a "$R"
mpathsg_stop

# ---------------------------------------------------------------- report
get() { awk -v t="$1" -v w="$2" -v f="$3" '$1 == t && $2 == w { for (i = 3; i <= NF; i++) { split($i, kv, "="); if (kv[1] == f) print kv[2] } }' "$R"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b == 0) print "-"; else printf "%.2f", a / b }'; }
{
	echo "# Benchmarks"
	echo
	echo "Measured by \`make bench\` on $(date -u +%Y-%m-%d) in the lab: Linux $(uname -r) under $(grep -q hypervisor /proc/cpuinfo && echo 'a VM') (the lab says which accelerator), scsi_debug with delay=0, ${SECS} s per workload, $(nproc) vCPUs."
	echo "The lab usually runs under software emulation (TCG), so absolute figures mean little;"
	echo "only ratios between rows of the same run do. Ratios are to /dev/sgN, the physical limit for the node."
	echo
	echo "| workload | target | IOPS | MB/s | p50 us | p99 us | IOPS / sg | p50 / sg | IOPS / floor | p50 - floor p50 (us) |"
	echo "|---|---|---|---|---|---|---|---|---|---|"
	bq1=$(get bare rt-qd1 iops)
	bq16=$(get bare rt-qd16 iops)
	echo "| rt-qd1 | bare round trip (floor) | $bq1 | | $(get bare rt-qd1 p50_us) | $(get bare rt-qd1 p99_us) | | | 1.00 | 0 |"
	echo "| rt-qd16 | bare round trip (floor) | $bq16 | | $(get bare rt-qd16 p50_us) | $(get bare rt-qd16 p99_us) | | | 1.00 | 0 |"
	for w in rand4k-qd1 rand4k-qd16 seq124k seq1m fio-qd16; do
		# The floor for a workload: bare round trips at its queue depth; fio's sg engine
		# needs three per command (write, poll, read).
		case $w in
		rand4k-qd16) floor_iops=$bq16 floor_p50=$(get bare rt-qd16 p50_us) ;;
		fio-qd16) floor_iops=$(awk -v b="$bq16" 'BEGIN { printf "%.0f", b / 3 }') floor_p50=$(get bare rt-qd16 p50_us) ;;
		*) floor_iops=$bq1 floor_p50=$(get bare rt-qd1 p50_us) ;;
		esac
		for t in sg node rounds dm; do
			iops=$(get $t $w iops)
			if [ -z "$iops" ]; then
				[ $w = fio-qd16 ] || echo "| $w | $t | n/a (over 124 KiB) | | | | | | | |"
				continue
			fi
			p50=$(get $t $w p50_us)
			vs_floor="" over_floor=""
			if [ $t = node ] || [ $t = rounds ]; then
				vs_floor=$(ratio "$iops" "$floor_iops")
				over_floor=$((p50 - floor_p50))
			fi
			echo "| $w | $t | $iops | $(get $t $w mbps) | $p50 | $(get $t $w p99_us) | $(ratio "$iops" "$(get sg $w iops)") | $(ratio "$p50" "$(get sg $w p50_us)") | $vs_floor | $over_floor |"
		done
	done
	echo
	echo "Targets: node = /dev/mpath-sg/X single round, rounds = the same node with --ioctl-rounds, dm = SG_IO on /dev/mapper/X;"
	echo "bare round trip = an ioctl nobody implements (0x22ff) on the node: CUSE and the daemon with no work, the floor of the design."
	echo "Workloads: sgio_bench threads issuing SG_IO (rand4k at queue depth 1 and 16, sequential 124 KiB and 1 MiB);"
	echo "fio-qd16 is fio's sg engine, 4 KiB random reads at iodepth 16 (write()/poll()/read() on sg and the node, SG_IO on dm)."
	echo "IOPS / floor: against bare round trips at the same queue depth (a third of them for fio: write, poll, read per command);"
	echo "p50 - floor p50: the daemon's own cost and the path's, above the bare round trip."
	echo
	q1=$(awk -v n="$(get node rand4k-qd1 p50_us)" -v s="$(get sg rand4k-qd1 p50_us)" -v b="$(get bare rt-qd1 p50_us)" 'BEGIN { if (n == "" || s + b == 0) print "-"; else printf "%.2f", n / (s + b) }')
	q16=$(ratio "$(get node rand4k-qd16 iops)" "$bq16")
	m1=$(ratio "$(get node seq1m mbps)" "$(get sg seq1m mbps)")
	f16=$(awk -v n="$(get node fio-qd16 iops)" -v b="$bq16" 'BEGIN { if (n == "" || b == 0) print "-"; else printf "%.2f", n / (b / 3) }')
	verdict() { awk -v v="$1" -v t="$2" -v dir="$3" 'BEGIN { if (v == "-") print "not measured"; else if ((dir == ">=" && v >= t) || (dir == "<=" && v <= t)) print "met"; else print "**not met**" }'; }
	hoard=$(awk '$1 == "hoard"' "$R")
	hrss=$(printf '%s' "$hoard" | sed -n 's/.* rss_kib=\([0-9]*\).*/\1/p')
	hacc=$(printf '%s' "$hoard" | sed -n 's/^hoard accepted=\([0-9]*\).*/\1/p')
	macc=$(printf '%s' "$hoard" | sed -n 's/.*modest_accepted=\([0-9]*\) enomem=\([0-9]*\).*/\1 of 32, \2 ENOMEM/p')
	echo "| target | measured | verdict |"
	echo "|---|---|---|"
	echo "| 4 KiB SG_IO QD1 p50: node / (sg + bare round trip) <= 1.3 | $q1 ($(get node rand4k-qd1 p50_us) us / ($(get sg rand4k-qd1 p50_us) + $(get bare rt-qd1 p50_us)) us) | $(verdict "$q1" 1.3 '<=') |"
	echo "| 4 KiB SG_IO QD16 IOPS: node / bare round trips per second at QD16 >= 0.8 | $q16 ($(get node rand4k-qd16 iops) / $bq16) | $(verdict "$q16" 0.8 '>=') |"
	echo "| 1 MiB SG_IO read MB/s: node / sg >= 1.0 | $m1 ($(get node seq1m mbps) / $(get sg seq1m mbps)) | $(verdict "$m1" 1.0 '>=') |"
	echo "| fio sg engine iodepth 16 randread IOPS: node / (bare round trips per second at QD16 / 3) >= 0.7 | $f16 ($(get node fio-qd16 iops) / ($bq16 / 3)) | $(verdict "$f16" 0.7 '>=') |"
	echo "| daemon RSS, a hoarder with 32 files x 16 unread 1 MiB completions <= 64 MiB, no errors for callers within their share | $(awk -v v="$hrss" 'BEGIN { printf "%.1f MiB", v / 1024 }'); hoarder: $hacc accepted (its share, 32 of the default 64 MiB), the rest ENOMEM; another process: $macc | $(awk -v v="$hrss" -v m="$macc" 'BEGIN { print (v <= 65536 && m ~ /^32 of 32, 0 ENOMEM/) ? "met" : "**not met**" }') |"
	med() { awk -v n="$1" '$1 == n { sub("us=", "", $6); print $6 }' "$R" | sort -n | sed -n 3p; }
	h=$(med healthy)
	f=$(med failover-first)
	d=$(med dead-path-error)
	hd=$(med healthy-direct)
	extra=$(awk -v f="$f" -v h="$hd" -v d="$d" 'BEGIN { printf "%d", f - h - d }')
	echo "| failover: first command after a path fails <= 1 ms later than the same command on the healthy path's sg node, less the dead path's own error time (issue 4) | medians of 5: first through the node $f us, on the healthy path's sg $hd us, dead path's error $d us: extra $extra us | $(awk -v e="$extra" 'BEGIN { print (e <= 1000) ? "met" : "**not met**" }') |"
	echo
	echo "Daemon CPU per command (utime+stime over the node's workloads): single round $(awk '$1 == "cpu" && $2 == "node" {print $3}' "$R") us, retry rounds $(awk '$1 == "cpu" && $2 == "rounds" {print $3}' "$R") us."
	echo "TUR through the node with both paths up (median of 5): $h us."
	echo "Medians of 5 under emulation are still noisy: read the failover row as an order of magnitude."
	echo "RSS with 64 maps ($(awk '$1 == "rss64" {print $3}' "$R") nodes): $(awk '$1 == "rss64" {printf "%.1f MiB", $2 / 1024}' "$R")."
	echo
	sc() { awk -v f="$1" '$1 == "scale256" { for (i = 2; i <= NF; i++) { split($i, kv, "="); if (kv[1] == f) print kv[2] } }' "$R"; }
	echo "| 256 maps (sharing two paths) | measured | target | verdict |"
	echo "|---|---|---|---|"
	echo "| all nodes published after start | $(sc publish_ms) ms (to within 0.1 s) | 2 s | $(awk -v v="$(sc publish_ms)" 'BEGIN { print (v <= 2000) ? "met" : "**not met** (under emulation)" }') |"
	echo "| RSS | $(awk -v v="$(sc rss_kib)" 'BEGIN { printf "%.1f MiB", v / 1024 }') | 64 MiB | $(awk -v v="$(sc rss_kib)" 'BEGIN { print (v <= 65536) ? "met" : "**not met**" }') |"
	echo "| CPU while idle, 5 s | $(sc idle_ticks_5s) ticks of 10 ms | none | $(awk -v v="$(sc idle_ticks_5s)" 'BEGIN { print (v == 0) ? "met" : "**not met**" }') |"
	echo "| threads | $(sc threads) | - | 2 per node, more while busy |"
	echo
	pp() { awk -v t="$1" -v f="$2" '$1 == "pp" && $2 == t { for (i = 3; i <= NF; i++) { split($i, kv, "="); if (kv[1] == f) print kv[2] } }' "$R"; }
	echo "The same SG_IO on a path, in a loop and when each call follows a switch from another process (where the daemon's calls run):"
	echo
	echo "| command | device | in a loop (us) | between two processes (us) |"
	echo "|---|---|---|---|"
	for c in tur 4k; do
		for d in block sg; do
			echo "| $([ $c = tur ] && echo 'TEST UNIT READY' || echo '4 KiB READ') | $([ $d = block ] && echo 'block device' || echo 'sg node') | $(pp $d-$c loop_us) | $(pp $d-$c pingpong_us) |"
		done
	done
	echo
	echo "What stands in the way of the targets: docs/performance.md."
	echo
	echo "Raw figures:"
	echo
	echo '```'
	cat "$R"
	echo '```'
} >"$LAB_OUT/benchmarks.md"
cat "$LAB_OUT/benchmarks.md"
