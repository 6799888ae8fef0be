# The node answers malformed and well-formed calls exactly as the path's own sg node: the
# same errno and the same output fields, native and 32-bit (compat ioctl) callers, iovec
# lists, read-only fds with and without CAP_SYS_RAWIO; served in one round through the
# caller's memory, and through CUSE's retry rounds.
lab_lu 2
a=${LAB_PATHS[0]} b=${LAB_PATHS[1]}
# One group per path: every command through the node goes to $a, whose sg node is the
# reference (SG_GET_SCSI_ID names that path).
lab_map mpatha --group "$a" "$b"
sg=$(lab_sg_of "$a")
node=/dev/mpath-sg/mpatha

# Cases where the node deliberately differs (docs/sg-compat.md), checked on their own:
# read10-to-from-dev: Linux 6.1's sg fails SG_DXFER_TO_FROM_DEV with ENOMEM (an iov_iter
# regression in bio_copy_user_iov); the node performs the transfer as sg is meant to.
# v4-header, interface-id-0: sg answers ENOSYS; CUSE cannot deliver ENOSYS from an ioctl
# (fuse_send_ioctl() rewrites it to ENOTTY), so the node answers EINVAL, as SG_IO on a
# block device does and as udev's scsi_id expects for its v4 -> v3 fallback.
KNOWN_DIFFERENCES='^(read10-to-from-dev|v4-header|interface-id-0) '

compare() {
	local what=$1 f
	shift
	"$@" "$sg" ${PROBE_ARGS:-} >"$LAB_OUT/probe-$what-sg.txt" 2>&1 || die "$what: probe on $sg failed: $(tail -n 3 "$LAB_OUT/probe-$what-sg.txt")"
	"$@" "$node" ${PROBE_ARGS:-} >"$LAB_OUT/probe-$what-node.txt" 2>&1 || die "$what: probe on the node failed: $(tail -n 3 "$LAB_OUT/probe-$what-node.txt")"
	for f in sg node; do
		grep -Ev "$KNOWN_DIFFERENCES" "$LAB_OUT/probe-$what-$f.txt" >"$LAB_OUT/probe-$what-$f.cmp"
	done
	assert_match "$what: TO_FROM_DEV read works on the node and returns the data READ(10) returned" \
		"^read10-to-from-dev +ret=0 errno=0 status=0 .* data=$(sed -n 's/^read10-after-write .* data=\([0-9a-f]*\)$/\1/p' "$LAB_OUT/probe-$what-node.txt")\$" \
		"$(cat "$LAB_OUT/probe-$what-node.txt")"
	for c in v4-header interface-id-0; do
		assert_match "$what: $c: ENOSYS on sg" "^$c +ret=-1 errno=ENOSYS\$" "$(cat "$LAB_OUT/probe-$what-sg.txt")"
		assert_match "$what: $c: EINVAL on the node" "^$c +ret=-1 errno=EINVAL\$" "$(cat "$LAB_OUT/probe-$what-node.txt")"
	done
	if ! diff -u "$LAB_OUT/probe-$what-sg.cmp" "$LAB_OUT/probe-$what-node.cmp" >"$LAB_OUT/probe-$what.diff"; then
		cat "$LAB_OUT/probe-$what.diff" >&2
		die "$what: the node differs from $sg"
	fi
	say "ok: $what: $(wc -l <"$LAB_OUT/probe-$what-sg.txt") cases answered alike"
}

for mode in single-round ioctl-rounds; do
	args=()
	[ $mode = ioctl-rounds ] && args=(--ioctl-rounds)
	mpathsg_start "${args[@]}"
	step "$mode: 64-bit caller, as root"
	compare $mode-native "$SGIO_PROBE"
	step "$mode: 32-bit caller (compat ioctl)"
	compare $mode-compat "$SGIO_PROBE32"
	step "$mode: callers without CAP_SYS_RAWIO (sg's command filter on read-only fds)"
	PROBE_ARGS=--no-rawio compare $mode-native-norawio "$SGIO_PROBE"
	PROBE_ARGS=--no-rawio compare $mode-compat-norawio "$SGIO_PROBE32"
	assert_match "the filter refused WRITE(10) on a read-only fd" "^ro-write10 +ret=-1 errno=EPERM" "$(cat "$LAB_OUT/probe-$mode-native-norawio-node.txt")"
	assert_match "INQUIRY on a read-only fd passed" "^ro-inquiry +ret=0 errno=0 status=0" "$(cat "$LAB_OUT/probe-$mode-native-norawio-node.txt")"

	step "$mode: the advertised maximum transfer is honest"
	path_max=$(($(cat /sys/block/"$a"/queue/max_sectors_kb) * 1024))
	hw_max=$(($(cat /sys/block/"$a"/queue/max_hw_sectors_kb) * 1024))
	[ $hw_max -gt $((0xffff * 512)) ] && hw_max=$((0xfffe * 512)) # READ(10) says at most 0xffff blocks
	"$SGIO_PROBE" "$node" --limits $hw_max >"$LAB_OUT/limits-$mode.txt"
	cat "$LAB_OUT/limits-$mode.txt"
	max=$(sed -n 's/^blksectget=\([0-9]*\) .*/\1/p' "$LAB_OUT/limits-$mode.txt")
	assert_match "reserved size clamped to the maximum" "reserved=$max " "$(cat "$LAB_OUT/limits-$mode.txt")"
	assert_match "a read of exactly the maximum works" "^read-$max-bytes +ret=0 errno=0 status=0" "$(cat "$LAB_OUT/limits-$mode.txt")"
	if [ $mode = ioctl-rounds ]; then
		[ "$max" -gt 0 ] && [ "$max" -le $((128 * 1024)) ] || die "BLKSECTGET $max is not within one CUSE ioctl (128 KiB)"
		assert_match "one block more is refused (documented difference)" "^read-$((max + 512))-bytes +ret=-1 errno=EINVAL" "$(cat "$LAB_OUT/limits-$mode.txt")"
	else
		assert_eq "single round: BLKSECTGET is what sg reports, the paths' max_sectors" "$path_max" "$max"
		"$SGIO_PROBE" "$sg" --limits $hw_max >"$LAB_OUT/limits-sg.txt"
		cat "$LAB_OUT/limits-sg.txt"
		for n in $((max + 512)) $hw_max $((hw_max + 512)); do
			want=$(grep "^read-$n-bytes " "$LAB_OUT/limits-sg.txt" | sed 's/ sense_tail_changed=.*//')
			got=$(grep "^read-$n-bytes " "$LAB_OUT/limits-$mode.txt" | sed 's/ sense_tail_changed=.*//')
			[ -n "$want" ] || continue
			assert_eq "a read of $n bytes answers as on sg" "$want" "$got"
		done
	fi
	[ $mode = ioctl-rounds ] && assert_ok "the daemon logged the limit" mpathsg_log_has "refused: the node carries at most $max bytes"
	mpathsg_stop
done
