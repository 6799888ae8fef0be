/*
 * sgio_bench: READ(10) through SG_IO from N threads (queue depth N, one command in flight
 * per thread, each thread its own fd), for a fixed time. Prints one line:
 *   NAME cmds=.. iops=.. mbps=.. p50_us=.. p99_us=..
 *
 * usage: sgio_bench NAME DEVICE THREADS BLOCK_BYTES SECONDS rand|seq|bare
 *        sgio_bench NAME DEVICE --tur-once [CMD]  (one TEST UNIT READY: its latency in us
 *                                                  and host_status; CMD runs first, with
 *                                                  DEVICE already open)
 * rand: random 4 KiB-aligned LBAs over the first 64 MiB; seq: each thread reads
 * consecutive blocks from its own region; bare: no SCSI command at all, an ioctl nobody
 * implements (0x22ff) instead: on /dev/mpath-sg/X one bare round trip through CUSE and the
 * daemon (answered EINVAL, as sg answers an unknown ioctl), the floor of the design.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <scsi/sg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>
#include <unistd.h>

static const char *dev;
static unsigned block_bytes, seconds;
static int sequential, bare;

/* An ioctl number no driver implements: nothing but the round trip. */
#define BARE_IOCTL 0x22ff

struct worker {
	pthread_t t;
	int id;
	uint64_t cmds, errors;
	uint32_t *lat_us;
	size_t nlat, cap;
};

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static void *run(void *arg)
{
	struct worker *w = arg;
	int fd = open(dev, O_RDWR);
	if (fd < 0) {
		perror(dev);
		exit(2);
	}
	unsigned char *buf = aligned_alloc(4096, block_bytes);
	unsigned char sense[32];
	unsigned blocks = block_bytes / 512;
	uint32_t lba = w->id * 16384u; /* seq: 8 MiB apart */
	unsigned seed = 12345 + w->id;
	uint64_t end = now_ns() + (uint64_t)seconds * 1000000000ull;
	while (now_ns() < end) {
		if (!sequential)
			lba = (rand_r(&seed) % (131072 / 8)) * 8; /* 64 MiB, 4 KiB aligned */
		unsigned char cdb[10] = { 0x28, 0, lba >> 24, lba >> 16, lba >> 8, lba, 0,
					  blocks >> 8, blocks & 0xff, 0 };
		sg_io_hdr_t h;
		memset(&h, 0, sizeof h);
		h.interface_id = 'S';
		h.dxfer_direction = SG_DXFER_FROM_DEV;
		h.cmd_len = 10;
		h.cmdp = cdb;
		h.mx_sb_len = sizeof sense;
		h.sbp = sense;
		h.dxferp = buf;
		h.dxfer_len = block_bytes;
		h.timeout = 30000;
		uint64_t t0 = now_ns();
		int r = bare ? (ioctl(fd, BARE_IOCTL, 0) < 0 && errno == EINVAL ? 0 : -1)
			     : ioctl(fd, SG_IO, &h);
		uint64_t t1 = now_ns();
		if (r < 0 || h.status || h.host_status) {
			w->errors++;
			if (w->errors == 1)
				fprintf(stderr, "%s: SG_IO: r=%d errno=%d status=%#x host=%#x\n", dev, r,
					r < 0 ? errno : 0, h.status, h.host_status);
			continue;
		}
		if (w->nlat == w->cap) {
			w->cap = w->cap ? w->cap * 2 : 65536;
			w->lat_us = realloc(w->lat_us, w->cap * sizeof *w->lat_us);
		}
		w->lat_us[w->nlat++] = (t1 - t0) / 1000;
		w->cmds++;
		if (sequential)
			lba = (lba + blocks) % (131072 - blocks); /* stay inside 64 MiB */
	}
	close(fd);
	return NULL;
}

static int cmp32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	if (argc >= 4 && !strcmp(argv[3], "--tur-once")) {
		int fd = open(argv[2], O_RDWR);
		if (fd < 0) {
			perror(argv[2]);
			return 2;
		}
		/* --tur-once CMD: run CMD (say, take a path offline) with the device open */
		if (argc == 5 && system(argv[4]) != 0) {
			fprintf(stderr, "%s failed\n", argv[4]);
			return 2;
		}
		unsigned char cdb[6] = { 0 }, sense[32];
		sg_io_hdr_t h;
		memset(&h, 0, sizeof h);
		h.interface_id = 'S';
		h.dxfer_direction = SG_DXFER_NONE;
		h.cmd_len = 6;
		h.cmdp = cdb;
		h.mx_sb_len = sizeof sense;
		h.sbp = sense;
		h.timeout = 30000;
		uint64_t t0 = now_ns();
		int r = ioctl(fd, SG_IO, &h);
		uint64_t t1 = now_ns();
		printf("%s ret=%d errno=%d status=%#x host=%#x us=%llu\n", argv[1], r, r < 0 ? errno : 0,
		       h.status, h.host_status, (unsigned long long)(t1 - t0) / 1000);
		return 0;
	}
	if (argc != 7) {
		fprintf(stderr, "usage: %s NAME DEVICE THREADS BLOCK_BYTES SECONDS rand|seq|bare\n", argv[0]);
		return 2;
	}
	const char *name = argv[1];
	dev = argv[2];
	int n = atoi(argv[3]);
	block_bytes = atoi(argv[4]);
	seconds = atoi(argv[5]);
	sequential = !strcmp(argv[6], "seq");
	bare = !strcmp(argv[6], "bare");
	struct worker *w = calloc(n, sizeof *w);
	uint64_t t0 = now_ns();
	for (int i = 0; i < n; i++) {
		w[i].id = i;
		pthread_create(&w[i].t, NULL, run, &w[i]);
	}
	uint64_t cmds = 0, errors = 0;
	size_t nlat = 0;
	for (int i = 0; i < n; i++) {
		pthread_join(w[i].t, NULL);
		cmds += w[i].cmds;
		errors += w[i].errors;
		nlat += w[i].nlat;
	}
	double secs = (now_ns() - t0) / 1e9;
	uint32_t *all = malloc((nlat ? nlat : 1) * sizeof *all);
	size_t k = 0;
	for (int i = 0; i < n; i++) {
		memcpy(all + k, w[i].lat_us, w[i].nlat * sizeof *all);
		k += w[i].nlat;
	}
	qsort(all, nlat, sizeof *all, cmp32);
	printf("%s cmds=%llu errors=%llu iops=%.0f mbps=%.1f p50_us=%u p99_us=%u\n", name,
	       (unsigned long long)cmds, (unsigned long long)errors, cmds / secs,
	       cmds * (double)block_bytes / secs / 1e6, nlat ? all[nlat / 2] : 0,
	       nlat ? all[nlat * 99 / 100] : 0);
	return errors ? 1 : 0;
}
