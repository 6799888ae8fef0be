# The node refuses what sg refuses, for the same caller (issue 10, first part):
# - capabilities are judged in the initial user namespace: a root process that entered a
#   user namespace of its own (`unshare -Ur`, every capability *there*) may not send a
#   WRITE through a read-only fd, on sg or on the node; the same process outside may;
# - sg_check_file_access(): write() and read() on an fd are for its opener's credentials:
#   a thread of the opener may, a forked child holding the same fd may not (EPERM).
lab_lu 2
a=${LAB_PATHS[0]} b=${LAB_PATHS[1]}
lab_map mpatha --group "$a" "$b"
sg=$(lab_sg_of "$a")
node=/dev/mpath-sg/mpatha
mpathsg_start
CREDS=$LAB_REPO/target/clients/sg_creds

# WRITE(10) of one block at LBA 8, from /dev/zero, through an fd opened O_RDONLY.
write_ro() { sg_raw -R -s 512 -i /dev/zero "$1" 2a 00 00 00 00 08 00 00 01 00; }

step "CAP_SYS_RAWIO, as the kernel's capable() judges it"
unshare -Ur grep CapEff /proc/self/status | grep -q 'CapEff:.*[1-9a-f]' ||
	die "unshare -Ur gave no capabilities in the new namespace: the check below proves nothing"
for dev in "$sg" "$node"; do
	assert_ok "$dev: root in the initial namespace writes through a read-only fd" write_ro "$dev"
	assert_fails "$dev: root in a user namespace of its own may not" unshare -Ur sh -c "$(declare -f write_ro); write_ro $dev"
	assert_match "$dev: refused with EPERM" "Operation not permitted|not permitted" "$LAB_LAST_OUTPUT"
	assert_ok "$dev: a READ(10) is fine there (needs no capability)" \
		unshare -Ur sg_raw -R -r 512 "$dev" 28 00 00 00 00 08 00 00 01 00
done

step "write() and read() are for the opener's credentials"
want="opener=ok thread=ok child_write=EPERM child_read=EPERM"
for dev in "$sg" "$node"; do
	out=$("$CREDS" "$dev")
	assert_eq "$dev: the opener and its threads may, a forked child may not" "$want" "$out"
done

step "a caller's own short timeout fails no path in device-mapper"
# Every command takes 5 s (scsi_debug delay, in jiffies of CONFIG_HZ=250); the caller's
# READ allows 1 s, so it times out on the path it is sent to (DID_TIME_OUT). (Not 2 s: the
# block layer's timeout timer is rounded up to a whole second, so a 1 s timeout fires
# between 1 and 2 s after the start, and a 2 s delay raced it.) The daemon's probe of that
# path (a TEST UNIT READY at 10 s) answers: both paths stay active. Before the probe, the
# daemon failed the path in device-mapper on the caller's say-so.
hz_delay=1250
echo "$hz_delay" >/sys/bus/pseudo/drivers/scsi_debug/delay
out=$(sg_raw -t 1 -R -r 512 "$node" 28 00 00 00 00 08 00 00 01 00 2>&1) || true
say "the caller's READ: $(printf '%s' "$out" | tr '\n' ' ' | cut -c1-160)"
assert_match "the caller's READ timed out, as it does on sg" "DID_TIME_OUT" "$out"
sleep 8 # the probe (5 s) answers
echo 0 >/sys/bus/pseudo/drivers/scsi_debug/delay
mpathsg_log_has "probing the path before failing it" || die "no path error was seen: the check proves nothing"
mpathsg_log_has "the path answers its probe" || die "the probe did not answer"
for p in "$a" "$b"; do
	assert_eq "$p still active in device-mapper" A "$(map_path_state mpatha "$p")"
done
assert_ok "the node serves the next caller" sg_turs "$node"
