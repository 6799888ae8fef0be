# ALUA on a real SCSI target (issue 11, item 3): LIO over tcm_loop, one LU seen through two
# ports in two target port groups (lib/lab.sh, lio_*). A port whose group is in standby or
# unavailable is alive: the node sends each command on to the other port (any opcode: the
# LU did not process it), never probes or fails the port in device-mapper, and tries it
# again later; when every port refuses, the caller gets the LU's answer.
# (The unit attention 06/2A/06 that LIO raises on a state change does not reach sg callers
# here: scsi_dh_alua, attached to every TPGS LU, consumes it and the midlayer retries the
# command, as seen on /dev/sgN itself. Its pass-through is unit-tested.)
lio_setup
lio_lu lu0
lio_port lu0 default_tg_pt_gp
a=$LIO_DISK
lio_port lu0 tpg_b
b=$LIO_DISK
say "LIO LU lu0: $a in default_tg_pt_gp, $b in tpg_b"
lab_map mpatha --group "$a" "$b"
mpathsg_start
node=/dev/mpath-sg/mpatha

# turs N: N TEST UNIT READYs through the node; prints each outcome (ok, or sg_turs's
# complaint), one per line.
turs() {
	local i out
	for ((i = 0; i < $1; i++)); do
		if out=$(sg_turs "$node" 2>&1); then echo ok; else printf '%s\n' "$out" | tr '\n' ' ' && echo; fi
	done
}
# turs_succeed_on N DISK: N TURs through the node all succeed, carried by DISK.
turs_succeed_on() {
	local before want
	before=$(path_iocount "$2")
	want=$(for ((i = 0; i < $1; i++)); do echo ok; done | tr '\n' ' ' | sed 's/ $//')
	assert_eq "$1 TURs succeed" "$want" "$(turs "$1" | tr '\n' ' ' | sed 's/ $//')"
	[ "$(path_iocount "$2")" -ge $((before + $1)) ] || die "the TURs did not go to $2"
}
both_active() {
	assert_eq "$a active in device-mapper" A "$(map_path_state mpatha "$a")"
	assert_eq "$b active in device-mapper" A "$(map_path_state mpatha "$b")"
}

step "both groups active/optimized: commands go to $a, the first group"
assert_ok "TUR through the node" sg_turs "$node"
na=$(path_iocount "$a") nb=$(path_iocount "$b")
assert_eq "4 TURs" "ok ok ok ok" "$(turs 4 | tr '\n' ' ' | sed 's/ $//')"
assert_eq "none went to $b" "$nb" "$(path_iocount "$b")"

step "$a's group goes standby: the commands go to $b, the caller sees no error"
lio_alua lu0 default_tg_pt_gp standby
turs_succeed_on 5 "$b"
assert_fails "through $a's own sg node the same TUR fails (what the node spares its callers)" sg_turs "$(lab_sg_of "$a")"
assert_match "with the LU's standby answer" "[Ss]tandby|not ready" "$LAB_LAST_OUTPUT"
both_active
assert_ok "the daemon saw the standby port" mpathsg_log_has "serves no I/O in its ALUA state"
mpathsg_log_has "probing the path.*$a|$a.*probing the path" && die "the daemon probed the standby port as a failed path"
say "ok: $a neither probed nor failed"

step "$a unavailable, tried again after the daemon's 5 s: a WRITE(10) moves on from it"
lio_alua lu0 default_tg_pt_gp unavailable
sleep 5.5
# A WRITE is never repeated after an unknown outcome; the port's refusal is a known one.
na=$(path_iocount "$a") nb=$(path_iocount "$b")
assert_ok "WRITE(10) of one block through the node" sg_raw -s 512 -i /dev/zero "$node" 2a 00 00 00 00 10 00 00 01 00
[ "$(path_iocount "$a")" -gt "$na" ] || die "the WRITE was not tried on $a first: the step proves nothing"
[ "$(path_iocount "$b")" -gt "$nb" ] || die "the WRITE did not move on to $b"
say "ok: refused on $a, written through $b"
turs_succeed_on 3 "$b"
both_active

step "$a optimized again, $b standby: back to $a"
lio_alua lu0 default_tg_pt_gp optimized
lio_alua lu0 tpg_b standby
turs_succeed_on 4 "$a"
both_active

step "every port inactive: the caller gets the LU's answer, no path is failed"
lio_alua lu0 default_tg_pt_gp standby
out=$(turs 1)
assert_match "NOT READY, standby (04/0B), as from the LU through one port" "[Ss]tandby|not ready" "$out"
both_active
lio_alua lu0 default_tg_pt_gp optimized
lio_alua lu0 tpg_b optimized
assert_eq "and the node is served again" "ok ok" "$(turs 2 | tr '\n' ' ' | sed 's/ $//')"
mpathsg_stop
