# A map renamed, and a new map (another LU) made under its old name, while one of the
# renamed map's commands is between two paths (issue 10, "Identity"): the command's retry
# must run on its own LU or fail cleanly, never on the new map's LU.
#
# The window is the time between the rename and the daemon's handling of it (its main
# thread reads device-mapper's event, and removes the old node, which ends the old map's
# commands). The scenario holds that thread still with ptrace (PTRACE_INTERRUPT stops one
# thread, the command's worker runs on), so the command is sure to retry inside the window:
#   with a uuid, the daemon addresses the map by it: the retry re-reads the renamed map's
#   table and runs on its second path (the command succeeds, on LU 0);
#   without one, it addresses the map by name and checks the device number of the answer:
#   the name now belongs to another device, so the command fails cleanly.
lab_lus 2 2
read -r a0 a1 <<<"${LAB_LU_PATHS[0]}"
read -r b0 b1 <<<"${LAB_LU_PATHS[1]}"
mpathsg_start

# The LU a device answers for: the designators of its Device Identification VPD page that
# name the logical unit (the page names the port too, which differs between paths).
lu_id() { sg_vpd -p di_lu "$1" | tr -s ' \n' ' '; }
lu0=$(lu_id "$(lab_sg_of "$a0")")
lu1=$(lu_id "$(lab_sg_of "$b0")")
[ -n "$lu0" ] && [ "$lu0" != "$lu1" ] || die "the two LUs do not tell themselves apart by VPD 0x83"

# freeze_main_thread: stops the daemon's main thread (the one that follows device-mapper)
# until thaw_main_thread; the others run on. If the tracer dies, the thread runs again.
freeze_main_thread() {
	rm -f "$LAB_OUT/freeze.txt"
	touch /run/lab-frozen
	python3 -c '
import ctypes, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
PTRACE_SEIZE, PTRACE_INTERRUPT, PTRACE_DETACH, WALL = 0x4206, 0x4207, 17, 0x40000000
tid = int(sys.argv[1])
for req in (PTRACE_SEIZE, PTRACE_INTERRUPT):
    if libc.ptrace(req, tid, None, None) != 0:
        sys.exit("ptrace %#x: %s" % (req, os.strerror(ctypes.get_errno())))
os.waitpid(tid, WALL)
print("frozen", flush=True)
while os.path.exists("/run/lab-frozen"):
    time.sleep(0.05)
libc.ptrace(PTRACE_DETACH, tid, None, None)
print("thawed", flush=True)
' "$MPATHSG_PID" >"$LAB_OUT/freeze.txt" 2>&1 &
	FREEZER=$!
	wait_for "the daemon's main thread to stop" 10 grep -q frozen "$LAB_OUT/freeze.txt"
	assert_match "it is stopped (tracing stop)" "^t" "$(awk '{print $3}' /proc/"$MPATHSG_PID"/task/"$MPATHSG_PID"/stat)"
}
thaw_main_thread() {
	rm -f /run/lab-frozen
	wait "$FREEZER" || die "the tracer failed: $(cat "$LAB_OUT/freeze.txt")"
}

for variant in uuid name; do
	step "by $variant: mpathx renamed, a new mpathx on another LU, a command of the old one retried"
	uuid_old=() uuid_new=()
	# Not "mpath-...": multipath-tools' udev rules act on maps with such uuids (in the lab
	# they failed both paths of a fresh map).
	[ "$variant" = uuid ] && uuid_old=(--uuid lab-race-lu0) uuid_new=(--uuid lab-race-lu1)
	# queue_if_no_path: a command that finds no usable path waits for one (for a path
	# being opened, say) rather than failing; it must not wait its way onto another LU.
	dmsetup create mpathx "${uuid_old[@]}" --table "$(lab_table --queue --group "$a0" "$a1")" ||
		die "dmsetup create mpathx failed"
	wait_for "/dev/mpath-sg/mpathx" 10 test -c /dev/mpath-sg/mpathx
	assert_eq "mpathx's node answers for LU 0" "$lu0" "$(lu_id /dev/mpath-sg/mpathx)"
	# The command will find its first path gone (offline: ENXIO) and its second failed in
	# the daemon's view of the map; the second is reinstated inside the window, so only a
	# re-read of the map can find it.
	map_fail_path mpathx "$a1"
	"$MPATH_SGD" status >/dev/null # re-reads every map: the daemon has seen a1 failed
	path_offline "$a0"
	before=$(grep -c "its name now belongs to device" "$MPATHSG_LOG" || true)

	freeze_main_thread
	dmsetup rename --noudevsync mpathx mpathx-old || die "dmsetup rename failed"
	dmsetup create --noudevsync mpathx "${uuid_new[@]}" --table "$(lab_table --queue "$b0" "$b1")" ||
		die "dmsetup create of the new mpathx failed"
	map_reinstate_path mpathx-old "$a1"
	rc=0
	out=$(timeout 60 sg_vpd -p di_lu /dev/mpath-sg/mpathx 2>"$LAB_OUT/race-err.txt" | tr -s ' \n' ' ') ||
		rc=$?
	err=$(cat "$LAB_OUT/race-err.txt")
	# The window was open all along: the old node still stands for the renamed map.
	test ! -e /dev/mpath-sg/mpathx-old || die "the daemon handled the rename during the command: the step proves nothing"
	thaw_main_thread

	if [ "$out" = "$lu1" ]; then
		die "the command of the renamed map ran on the new map's LU"
	fi
	case $variant in
	uuid)
		[ "$rc" -eq 0 ] || die "by uuid, the retry should have found the renamed map's second path: $err"
		assert_eq "the command ran on its own LU" "$lu0" "$out"
		;;
	name)
		[ "$rc" -ne 0 ] || die "by name, the command should have failed (its map's name is another's)"
		say "the command failed cleanly: $(printf '%s' "$err" | tr '\n' ' ' | cut -c1-160)"
		[ "$(grep -c "its name now belongs to device" "$MPATHSG_LOG")" -gt "${before:-0}" ] ||
			die "the daemon did not see that the name belongs to another device now"
		say "ok: the daemon saw that mpathx is another device now"
		;;
	esac

	step "by $variant: once the daemon follows, each node answers for its own LU"
	wait_for "/dev/mpath-sg/mpathx-old" 10 test -c /dev/mpath-sg/mpathx-old
	# (the old node is removed first, the new map's node made after it.)
	wait_for "the new mpathx's node" 10 bash -c "$(declare -f lu_id); [ \"\$(lu_id /dev/mpath-sg/mpathx 2>/dev/null)\" = '$lu1' ]"
	say "ok: the new mpathx answers for LU 1"
	assert_eq "mpathx-old answers for LU 0" "$lu0" "$(lu_id /dev/mpath-sg/mpathx-old)"
	path_running "$a0"
	# udev probes the maps after the rename and the reinstatement (seen on 6.12: EBUSY).
	udevadm settle -t 30 || true
	dmsetup remove --retry mpathx-old && dmsetup remove --retry mpathx || die "dmsetup remove failed"
	wait_for "both nodes to go" 10 sh -c 'test ! -e /dev/mpath-sg/mpathx && test ! -e /dev/mpath-sg/mpathx-old'
done
kill -0 "$MPATHSG_PID" || die "the daemon died"
mpathsg_stop
