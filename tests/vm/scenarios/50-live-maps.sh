# The daemon follows device-mapper while it runs: a map created later gets its node; path
# states set with dmsetup are used at once and shown by `mpath-sgd status`; a reloaded
# table takes effect for the next command; a renamed map keeps its major:minor; a map
# removed while a client holds its node open gives that client an error and leaves the
# daemon healthy; a restart keeps every major:minor.
lab_lus 2 2
read -r a0 a1 <<<"${LAB_LU_PATHS[0]}"
read -r b0 b1 <<<"${LAB_LU_PATHS[1]}"
lab_map mpatha --group "$a0" "$a1"
mpathsg_start
node_devnum() { stat -c '%Hr:%Lr' "$1"; }
status() { "$MPATH_SGD" status "$@"; }
# status_field MAP DISK FIELD: a path's field from `mpath-sgd status --json`.
status_field() {
	status --json | python3 -c '
import json, sys
m = next(m for m in json.load(sys.stdin)["maps"] if m["name"] == sys.argv[1])
print(next(p for p in m["paths"] if p["dev"] == sys.argv[2])[sys.argv[3]])' "$1" "$(lab_devt "$2")" "$3"
}

step "a map created while the daemon runs gets its node"
lab_map mpathb "$b0" "$b1" # one group: commands spread over both paths
wait_for "/dev/mpath-sg/mpathb" 5 test -c /dev/mpath-sg/mpathb
assert_ok "sg_inq through the new node" sg_inq /dev/mpath-sg/mpathb
assert_ok "the daemon logged it" mpathsg_log_has "published.*map=mpathb|map=mpathb.*published"

step "mpath-sgd status matches dmsetup status"
out=$(status)
echo "$out"
assert_match "status lists mpatha with its node and major:minor" \
	"^mpatha /dev/mpath-sg/mpatha $(node_devnum /dev/mpath-sg/mpatha) open files 0" "$out"
for d in "$a0" "$a1" "$b0" "$b1"; do
	assert_match "status shows $d with its sg node" "$(lab_devt "$d") +$d +$(lab_sg_of "$d") " "$out"
done
map_fail_path mpathb "$b0"
for m in "mpatha $a0" "mpatha $a1" "mpathb $b0" "mpathb $b1"; do
	read -r map d <<<"$m"
	want=$([ "$(map_path_state "$map" "$d")" = A ] && echo active || echo failed)
	assert_eq "$map $d: status says what dmsetup says" "$want" "$(status_field "$map" "$d" dm_state)"
done
assert_eq "the failed path is shown failed" failed "$(status_field mpathb "$b0" dm_state)"
assert_fails "status needs root (socket mode 0600)" setpriv --reuid=65534 --regid=65534 --clear-groups "$MPATH_SGD" status

step "a path failed with dmsetup is left alone at once; reinstated, it is used again"
n0=$(path_iocount "$b0") n1=$(path_iocount "$b1")
for i in 1 2 3 4 5 6; do sg_turs /dev/mpath-sg/mpathb || die "TUR $i failed"; done
assert_eq "no command went to the failed path $b0" "$n0" "$(path_iocount "$b0")"
[ "$(path_iocount "$b1")" -ge $((n1 + 6)) ] || die "the commands did not go to $b1"
map_reinstate_path mpathb "$b0"
n0=$(path_iocount "$b0")
for i in 1 2 3 4 5 6; do sg_turs /dev/mpath-sg/mpathb || die "TUR $i failed"; done
[ "$(path_iocount "$b0")" -gt "$n0" ] || die "the reinstated path $b0 was not used again"
assert_eq "status shows it active again" active "$(status_field mpathb "$b0" dm_state)"
[ "$(status_field mpathb "$b0" commands)" -gt 0 ] || die "no commands counted on $b0"

step "a reloaded table takes effect for the next command"
n=$(path_iocount "$a1")
sz=$(blockdev --getsz /dev/"$a0")
map_reload mpatha "0 $sz multipath 0 0 2 1 service-time 0 1 1 $(lab_devt "$a1") 1 service-time 0 1 1 $(lab_devt "$a0") 1"
assert_ok "TUR through mpatha after the reload" sg_turs /dev/mpath-sg/mpatha
[ "$(path_iocount "$a1")" -gt "$n" ] || die "the command did not go to $a1, now first in the table"
out=$(status)
assert_match "status shows $a1 in group 1 now" "$(lab_devt "$a1") +$a1 .* group 1 " "$out"

step "a renamed map keeps its major:minor under the new name"
devnum=$(node_devnum /dev/mpath-sg/mpathb)
dmsetup rename mpathb mpathc
wait_for "/dev/mpath-sg/mpathc" 5 test -c /dev/mpath-sg/mpathc
wait_for "/dev/mpath-sg/mpathb to go" 5 test ! -e /dev/mpath-sg/mpathb
assert_eq "same major:minor" "$devnum" "$(node_devnum /dev/mpath-sg/mpathc)"
assert_ok "sg_inq through the renamed node" sg_inq /dev/mpath-sg/mpathc

step "a map removed while a client holds its node open"
python3 -c '
import fcntl, os, struct, sys, time
fd = os.open("/dev/mpath-sg/mpathc", os.O_RDWR)
print("open", flush=True)
while os.path.exists("/run/lab-hold"):
    time.sleep(0.05)
try:
    fcntl.ioctl(fd, 0x2282, struct.pack("i", 0))  # SG_GET_VERSION_NUM
    print("ioctl ok")
except OSError as e:
    print("ioctl failed:", os.strerror(e.errno))
os.close(fd)
print("closed")
' >"$LAB_OUT/held-client.txt" 2>&1 &
client=$!
touch /run/lab-hold
wait_for "the client to open the node" 10 grep -q open "$LAB_OUT/held-client.txt"
assert_eq "status counts the open file" 1 "$(status --json | python3 -c 'import json, sys; print(next(m for m in json.load(sys.stdin)["maps"] if m["name"] == "mpathc")["open_files"])')"
dmsetup remove mpathc || die "dmsetup remove mpathc failed"
wait_for "/dev/mpath-sg/mpathc to go" 10 test ! -e /dev/mpath-sg/mpathc
rm -f /run/lab-hold
wait $client || true
cat "$LAB_OUT/held-client.txt"
assert_match "the client's next call failed cleanly" "^ioctl failed: " "$(cat "$LAB_OUT/held-client.txt")"
assert_match "and it could close its file" "^closed" "$(cat "$LAB_OUT/held-client.txt")"
kill -0 "$MPATHSG_PID" || die "the daemon died"
assert_ok "mpatha still served" sg_turs /dev/mpath-sg/mpatha
assert_fails "status no longer lists mpathc" sh -c "\"$MPATH_SGD\" status | grep -q '^mpathc '"

step "a map removed while a command is on its path: the command completes, other maps go on"
lab_map mpathq "$b1"
# mpathr's path is not scsi_debug (a loop device), so that udev's probe of the renamed map
# does not queue behind the delay below.
modprobe loop 2>/dev/null || true
truncate -s 64M /run/lab-loop.img
loopdev=$(losetup -f --show /run/lab-loop.img) || die "losetup failed"
dmsetup create mpathr --table "0 131072 multipath 0 0 1 1 service-time 0 1 1 $(lab_devt "$(basename "$loopdev")") 1" ||
	die "dmsetup create mpathr failed"
wait_for "/dev/mpath-sg/mpathq" 5 test -c /dev/mpath-sg/mpathq
wait_for "/dev/mpath-sg/mpathr" 5 test -c /dev/mpath-sg/mpathr
udevadm settle -t 30 || true # udev's probes would stall on the delay below
echo 1250 >/sys/bus/pseudo/drivers/scsi_debug/delay # every command takes 5 s (HZ 250)
sg_turs /dev/mpath-sg/mpathq >"$LAB_OUT/slow-tur.txt" 2>&1 &
slow=$!
sleep 1
timeout 30 dmsetup remove --noudevsync mpathq || die "dmsetup remove mpathq failed"
# Another map's event while mpathq's node waits for its command: handled at once.
timeout 30 dmsetup rename --noudevsync mpathr mpaths || die "dmsetup rename mpathr failed"
wait_for "/dev/mpath-sg/mpaths while mpathq's command is on its path" 3 test -c /dev/mpath-sg/mpaths
kill -0 $slow 2>/dev/null || die "the slow command had already finished: the step proves nothing"
say "ok: mpathr renamed and re-published while mpathq's removal waited for its command"
wait_for "the command to finish" 30 sh -c "! kill -0 $slow 2>/dev/null"
# scsi_debug refuses a new delay while commands are queued.
wait_for "scsi_debug to take delay=0" 30 sh -c 'echo 0 >/sys/bus/pseudo/drivers/scsi_debug/delay'
wait $slow || die "the command on the path when its map was removed failed: $(cat "$LAB_OUT/slow-tur.txt")"
say "ok: the command on the path when its map was removed completed"
wait_for "/dev/mpath-sg/mpathq to go once its command is done" 20 test ! -e /dev/mpath-sg/mpathq
assert_ok "mpatha still served" sg_turs /dev/mpath-sg/mpatha
dmsetup remove mpaths
losetup -d "$loopdev"
rm -f /run/lab-loop.img

step "a restart keeps every map's major:minor"
lab_map mpathd "$b0" "$b1"
wait_for "/dev/mpath-sg/mpathd" 5 test -c /dev/mpath-sg/mpathd
before="$(node_devnum /dev/mpath-sg/mpatha) $(node_devnum /dev/mpath-sg/mpathd)"
mpathsg_stop
mpathsg_start
assert_eq "major:minor of mpatha and mpathd after the restart" "$before" \
	"$(node_devnum /dev/mpath-sg/mpatha) $(node_devnum /dev/mpath-sg/mpathd)"

step "no CPU while idle"
t0=$(awk '{print $14 + $15}' "/proc/$MPATHSG_PID/stat")
sleep 3
t1=$(awk '{print $14 + $15}' "/proc/$MPATHSG_PID/stat")
[ $((t1 - t0)) -le 1 ] || die "the idle daemon used $((t1 - t0)) ticks of CPU in 3 s"
say "ok: $((t1 - t0)) CPU ticks (10 ms each) in 3 idle seconds"
mpathsg_stop
