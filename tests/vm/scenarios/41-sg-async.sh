# sg's asynchronous interface on the node: write() a header, poll(), read() the
# completion, pack_ids and SG_SET_FORCE_PACK_ID, O_NONBLOCK, the 16-request limit, the
# request table, a blocking read ended by a signal; answered exactly as the path's own sg
# node answers, 64-bit and 32-bit callers. Then fio's sg engine (which uses this interface
# on character devices) reads and writes with verification, and keeps going while the path
# it uses goes offline.
lab_lu 2
a=${LAB_PATHS[0]} b=${LAB_PATHS[1]}
lab_map mpatha --group "$a" "$b" # every command goes to $a while it is up
sg=$(lab_sg_of "$a")
node=/dev/mpath-sg/mpatha
mpathsg_start

# probe WHAT COMMAND...: COMMAND DEVICE on the path's sg node and on the node, compared.
probe() {
	local what=$1
	shift
	timeout 120 "$@" "$sg" >"$LAB_OUT/async-$what-sg.txt" 2>&1 || die "$what: probe on $sg failed: $(tail -n 3 "$LAB_OUT/async-$what-sg.txt")"
	timeout 120 "$@" "$node" >"$LAB_OUT/async-$what-node.txt" 2>&1 || die "$what: probe on the node failed: $(tail -n 3 "$LAB_OUT/async-$what-node.txt")"
	if ! diff -u "$LAB_OUT/async-$what-sg.txt" "$LAB_OUT/async-$what-node.txt" >"$LAB_OUT/async-$what.diff"; then
		cat "$LAB_OUT/async-$what.diff" >&2
		die "$what: the node differs from $sg"
	fi
	say "ok: $what: $(wc -l <"$LAB_OUT/async-$what-sg.txt") steps answered alike"
}

step "the asynchronous interface, 64-bit caller"
probe native "$SG_ASYNC_PROBE"
out=$(cat "$LAB_OUT/async-native-node.txt")
# The differential test is only worth something if the steps did what they claim.
assert_match "INQUIRY completed through write()/read()" "^read-inquiry +ret=88 errno=0 pack_id=101 status=0 " "$out"
assert_match "data written with write() reads back" "^read-back-equals-written +yes" "$out"
assert_match "sense came back through read()" "^read-beyond-end +ret=88 errno=0 pack_id=203 status=0x2 .* sense=70" "$out"
assert_match "FORCE_PACK_ID picked pack_id 30 first" "^read-pack-30 +ret=88 errno=0 pack_id=30 " "$out"
assert_match "the 17th outstanding request was refused" "^write-17th +ret=-1 errno=EDOM" "$out"
assert_match "so was an SG_IO" "^sg-io-when-full +ret=-1 errno=EDOM" "$out"
assert_match "O_NONBLOCK read with nothing done" "^read-nonblock-empty +ret=-1 errno=EAGAIN" "$out"
assert_match "a blocking read was ended by the signal" "^read-blocking-interrupted +ret=-1 errno=EINTR" "$out"
assert_match "read() with a larger count returns count, buffer tail untouched" \
	"^read-read10-count-400 +ret=400 errno=0 .* buf_tail_changed=0" "$out"

step "the asynchronous interface, 32-bit caller"
probe compat "$SG_ASYNC_PROBE32"
out=$(cat "$LAB_OUT/async-compat-node.txt")
assert_match "32-bit: a write() of the 64-byte header is refused, as by sg in 6.1" "^write-sizeof-header +ret=-1 errno=EINVAL" "$out"
assert_match "32-bit: INQUIRY completed through write()/read()" "^read-inquiry +ret=64 errno=0 pack_id=101 status=0 " "$out"

step "the asynchronous interface, 32-bit caller that is not root"
# The daemon runs under the unit's capabilities (lib/unit-sandbox): what it learns from
# /proc/<tid>/syscall (the caller's layout, its read buffer under FORCE_PACK_ID) must still
# be readable for a caller of another uid.
owners=$(stat -c %u:%g "$sg" "$node")
chown 65534:65534 "$sg" "$node"
probe compat-nobody setpriv --reuid=65534 --regid=65534 --clear-groups -- "$SG_ASYNC_PROBE32"
chown "$(sed -n 1p <<<"$owners")" "$sg"
chown "$(sed -n 2p <<<"$owners")" "$node"
out=$(cat "$LAB_OUT/async-compat-nobody-node.txt")
assert_match "32-bit, uid 65534: INQUIRY completed through write()/read()" "^read-inquiry +ret=64 errno=0 pack_id=101 status=0 " "$out"
assert_match "32-bit, uid 65534: FORCE_PACK_ID picked pack_id 30 first" "^read-pack-30 +ret=64 errno=0 pack_id=30 " "$out"
assert_match "32-bit, uid 65534: data written with write() reads back" "^read-back-equals-written +yes" "$out"

step "fio's sg engine on the node: random reads at iodepth 16"
# fio --ioengine=sg on a character device queues with write() and reaps with read()
# (it prints a note about capping the depth of synchronous engines, which does not apply).
fio_sg() {
	local out=$1
	shift
	fio --filename="$node" --ioengine=sg --iodepth=16 --bs=4k --size=4m \
		--output-format=json --output="$LAB_OUT/$out.json" "$@" >/dev/null 2>&1
}
# fio_field JSON EXPR: a value from fio's JSON report (j = the first job).
fio_field() {
	python3 -c 'import json, sys; j = json.load(open(sys.argv[1]))["jobs"][0]; print(eval(sys.argv[2]))' "$LAB_OUT/$1.json" "$2"
}
fio_sg fio-randread --name=randread --rw=randread --runtime=3 --time_based || die "fio randread failed"
assert_eq "fio randread: no error" 0 "$(fio_field fio-randread 'j["error"]')"
iops=$(fio_field fio-randread 'int(j["read"]["iops"])')
[ "$iops" -gt 0 ] || die "fio randread did no I/O"
depth16=$(fio_field fio-randread 'j["iodepth_level"]["16"]')
say "ok: fio randread iodepth 16: $iops IOPS, ${depth16}% of the time 16 in flight"
python3 -c 'import sys; sys.exit(0 if float(sys.argv[1]) > 50 else 1)' "$depth16" ||
	die "fio did not keep 16 commands in flight through the node (${depth16}%)"

step "fio's sg engine: sequential writes, verified by reading back"
fio_sg fio-verify --name=verify --rw=write --verify=crc32c --do_verify=1 --verify_fatal=1 || die "fio verify failed"
assert_eq "fio write+verify: no error" 0 "$(fio_field fio-verify 'j["error"]')"
assert_eq "fio wrote 4 MiB" 4096 "$(fio_field fio-verify 'j["write"]["io_kbytes"]')"
assert_eq "and read all of it back to verify" 4096 "$(fio_field fio-verify 'j["read"]["io_kbytes"]')"

step "fio keeps going while $a goes offline under it"
n=$(path_iocount "$b")
fio_sg fio-failover --name=failover --rw=randread --runtime=6 --time_based &
fio_pid=$!
sleep 2
path_offline "$a"
wait $fio_pid || die "fio failed while $a went offline"
assert_eq "fio: no error across the failover" 0 "$(fio_field fio-failover 'j["error"]')"
[ "$(path_iocount "$b")" -gt $((n + 100)) ] || die "the reads did not move to $b"
assert_eq "the daemon failed $a in device-mapper" F "$(map_path_state mpatha "$a")"
path_running "$a"
map_reinstate_path mpatha "$a"

step "SIGTERM while a reader blocks in read() on the node"
python3 -c '
import os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
try:
    os.read(fd, 88)
    print("read returned")
except OSError as e:
    print("read failed:", os.strerror(e.errno))
' "$node" >"$LAB_OUT/blocked-read.txt" 2>&1 &
reader=$!
sleep 1
kill -0 $reader 2>/dev/null || die "the reader did not block: $(cat "$LAB_OUT/blocked-read.txt")"
mpathsg_stop
wait $reader || true
assert_match "the blocked read ended with ENODEV" "^read failed: No such device" "$(cat "$LAB_OUT/blocked-read.txt")"
