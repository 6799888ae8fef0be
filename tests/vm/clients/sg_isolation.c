/*
 * sg_isolation: one caller must never see another's data through the node, whatever the
 * daemon's buffers held before. Two processes, each with its own file on DEVICE:
 *   A writes a pattern (0x5A) over the first BYTES of the LU, then reads it back, twice
 *     per round (its data passes through the node's buffers);
 *   B, once per round, sends a TEST UNIT READY (no data: a command that must not make the
 *     daemon forget whose data its buffers hold), then reads BYTES beyond the end of the
 *     LU into a buffer filled with 0x11: the LU answers CHECK CONDITION and transfers
 *     nothing, yet may report no residual (scsi_debug does), so whatever the node's
 *     buffer holds comes back to B.
 * B counts the bytes of A's pattern it received. The processes take turns through pipes,
 * so that B's command runs on a thread whose buffer just held A's data.
 * Prints: rounds=N b_check_conditions=N b_copied_bytes=N b_pattern_bytes=N b_other_bytes=N
 * (b_copied_bytes: bytes of B's buffer the node overwrote: without any, the check proves
 * nothing)
 *
 * usage: sg_isolation DEVICE ROUNDS BYTES TIMEOUT_MS
 *   (a timeout under 7 s sends the commands to the path's sg node instead of its block
 *   device)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <scsi/sg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <unistd.h>

static int sgio(int fd, unsigned char op, uint32_t lba, unsigned char *buf, unsigned bytes,
		unsigned timeout, int *status)
{
	unsigned blocks = bytes / 512;
	unsigned char cdb[10] = { op, 0, lba >> 24, lba >> 16, lba >> 8, lba, 0, blocks >> 8,
				  blocks & 0xff, 0 };
	unsigned char sense[32];
	sg_io_hdr_t h;
	memset(&h, 0, sizeof h);
	h.interface_id = 'S';
	h.dxfer_direction = op == 0x2a ? SG_DXFER_TO_DEV : SG_DXFER_FROM_DEV;
	h.cmd_len = sizeof cdb;
	h.cmdp = cdb;
	h.mx_sb_len = sizeof sense;
	h.sbp = sense;
	h.dxferp = buf;
	h.dxfer_len = bytes;
	h.timeout = timeout;
	int r = ioctl(fd, SG_IO, &h);
	*status = h.status;
	return r;
}

static int tur(int fd, unsigned timeout)
{
	unsigned char cdb[6] = { 0 }, sense[32];
	sg_io_hdr_t h;
	memset(&h, 0, sizeof h);
	h.interface_id = 'S';
	h.dxfer_direction = SG_DXFER_NONE;
	h.cmd_len = sizeof cdb;
	h.cmdp = cdb;
	h.mx_sb_len = sizeof sense;
	h.sbp = sense;
	h.timeout = timeout;
	return ioctl(fd, SG_IO, &h) == 0 && h.status == 0 ? 0 : -1;
}

static void step(int fd)
{
	char c = 1;
	if (write(fd, &c, 1) != 1)
		exit(3);
}

static void await(int fd)
{
	char c;
	if (read(fd, &c, 1) != 1)
		exit(3);
}

int main(int argc, char **argv)
{
	if (argc != 5) {
		fprintf(stderr, "usage: %s DEVICE ROUNDS BYTES TIMEOUT_MS\n", argv[0]);
		return 2;
	}
	const char *dev = argv[1];
	int rounds = atoi(argv[2]);
	unsigned bytes = (unsigned)atoi(argv[3]), timeout = (unsigned)atoi(argv[4]);
	int a_to_b[2], b_to_a[2], res[2];
	if (pipe(a_to_b) || pipe(b_to_a) || pipe(res))
		return 2;
	unsigned char *buf = aligned_alloc(4096, bytes);
	int status;
	pid_t b = fork();
	if (b == 0) {
		int fd = open(dev, O_RDWR);
		long checks = 0, pattern = 0, other = 0, copied = 0;
		for (int r = 0; r < rounds; r++) {
			await(a_to_b[0]);
			if (tur(fd, timeout))
				fprintf(stderr, "B's TEST UNIT READY failed\n");
			memset(buf, 0x11, bytes);
			/* 64 MiB LU: LBA 2^20 is past its end. */
			if (sgio(fd, 0x28, 1u << 20, buf, bytes, timeout, &status) == 0 && status == 2)
				checks++;
			for (unsigned i = 0; i < bytes; i++) {
				copied += buf[i] != 0x11;
				pattern += buf[i] == 0x5A;
				other += buf[i] != 0x5A && buf[i] != 0x11 && buf[i] != 0;
			}
			step(b_to_a[1]);
		}
		long out[4] = { checks, copied, pattern, other };
		if (write(res[1], out, sizeof out) != sizeof out)
			return 3;
		return 0;
	}
	int fd = open(dev, O_RDWR);
	if (fd < 0) {
		perror(dev);
		return 1;
	}
	memset(buf, 0x5A, bytes);
	if (sgio(fd, 0x2a, 0, buf, bytes, timeout, &status) || status) {
		fprintf(stderr, "the pattern write failed\n");
		return 1;
	}
	for (int r = 0; r < rounds; r++) {
		for (int k = 0; k < 2; k++)
			if (sgio(fd, 0x28, 0, buf, bytes, timeout, &status) || status || buf[bytes - 1] != 0x5A) {
				fprintf(stderr, "A's read back failed\n");
				return 1;
			}
		step(a_to_b[1]);
		await(b_to_a[0]);
	}
	long out[4];
	if (read(res[0], out, sizeof out) != sizeof out)
		return 3;
	waitpid(b, NULL, 0);
	printf("rounds=%d b_check_conditions=%ld b_copied_bytes=%ld b_pattern_bytes=%ld b_other_bytes=%ld\n",
	       rounds, out[0], out[1], out[2], out[3]);
	return 0;
}
