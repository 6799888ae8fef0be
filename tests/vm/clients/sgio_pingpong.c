/*
 * sgio_pingpong: what one SG_IO costs in a tight loop, and what the same SG_IO costs when
 * every call follows a switch to another process (as the daemon's do: each runs between
 * its caller's request and its reply). Prints one line:
 *   NAME loop_us=.. pingpong_us=.. cycle_us=..
 * loop_us: mean SG_IO time, COUNT calls in a row; pingpong_us: mean SG_IO time when each
 * call follows a wake-up by another process through a pipe; cycle_us: one whole exchange.
 *
 * usage: sgio_pingpong NAME DEVICE COUNT BYTES   (BYTES 0: TEST UNIT READY, else READ(10))
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <scsi/sg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static unsigned len;
static unsigned char *buf;

static uint64_t now_ns(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1000000000ull + t.tv_nsec;
}

static int sgio(int fd)
{
	unsigned char cdb[10] = { 0x28, 0, 0, 0, 0, 0, 0, 0, (unsigned char)(len / 512), 0 }, sense[32];
	sg_io_hdr_t h;
	memset(&h, 0, sizeof h);
	h.interface_id = 'S';
	h.dxfer_direction = len ? SG_DXFER_FROM_DEV : SG_DXFER_NONE;
	h.cmd_len = len ? 10 : 6;
	if (!len)
		cdb[0] = 0; /* TEST UNIT READY */
	h.cmdp = cdb;
	h.mx_sb_len = sizeof sense;
	h.sbp = sense;
	h.dxferp = buf;
	h.dxfer_len = len;
	h.timeout = 30000;
	return ioctl(fd, SG_IO, &h) || h.status || h.host_status;
}

int main(int argc, char **argv)
{
	if (argc != 5) {
		fprintf(stderr, "usage: %s NAME DEVICE COUNT BYTES\n", argv[0]);
		return 2;
	}
	int fd = open(argv[2], O_RDONLY), n = atoi(argv[3]);
	len = (unsigned)atoi(argv[4]);
	buf = aligned_alloc(4096, len ? len : 4096);
	if (fd < 0 || len > 127 * 512) {
		perror(argv[2]);
		return 2;
	}
	uint64_t loop = 0;
	for (int i = 0; i < n; i++) {
		uint64_t t0 = now_ns();
		if (sgio(fd))
			return 1;
		loop += now_ns() - t0;
	}
	int a[2], b[2];
	if (pipe(a) || pipe(b))
		return 2;
	pid_t p = fork();
	if (p == 0) {
		char c;
		for (int i = 0; i < n; i++)
			if (write(a[1], "x", 1) != 1 || read(b[0], &c, 1) != 1)
				_exit(1);
		_exit(0);
	}
	char c;
	uint64_t pp = 0, c0 = now_ns();
	for (int i = 0; i < n; i++) {
		if (read(a[0], &c, 1) != 1)
			return 1;
		uint64_t t0 = now_ns();
		if (sgio(fd))
			return 1;
		pp += now_ns() - t0;
		if (write(b[1], "y", 1) != 1)
			return 1;
	}
	uint64_t cycle = now_ns() - c0;
	waitpid(p, NULL, 0);
	printf("%s loop_us=%.1f pingpong_us=%.1f cycle_us=%.1f\n", argv[1], loop / 1e3 / n, pp / 1e3 / n,
	       cycle / 1e3 / n);
	return 0;
}
