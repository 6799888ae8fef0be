/*
 * guest_io: the workload of the guest that 80-guest boots inside the lab: real guest I/O
 * through its sd disk (virtio-scsi, scsi-generic on /dev/mpath-sg/X in the lab VM).
 * Linked statically: the guest's initramfs has busybox and nothing else.
 *
 * usage: guest_io DEVICE SECONDS MAX_BYTES
 *
 * In rounds until SECONDS have passed, writes with O_DIRECT a stamped pattern at each
 * size of 512 B, 4 KiB, 64 KiB and MAX_BYTES (the largest transfer the guest's sd issues:
 * max_sectors_kb), each at its own LBA range, reads it back and checks every byte. A block
 * is stamped with its LBA, the round and the size, so that data from another round, size
 * or place is a mismatch. Every I/O error and mismatch is printed; at the end one line:
 *   GUEST_IO rounds=N ios=N bytes=N errors=N mismatches=N max_bytes=N
 * Exit status 0 only if there was no error and no mismatch.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static uint64_t mix(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	return x;
}

/* Fills (or, with check != 0, compares) SIZE bytes for LBA, ROUND. Returns mismatches. */
static long pattern(unsigned char *buf, size_t size, uint64_t lba, uint64_t round, int check)
{
	long bad = 0;
	for (size_t off = 0; off < size; off += 8) {
		uint64_t want = mix((lba + off / 512) * 0x9e3779b97f4a7c15ULL ^ round << 40 ^ size ^ off % 512);
		if (!check)
			memcpy(buf + off, &want, 8);
		else if (memcmp(buf + off, &want, 8) != 0)
			bad++;
	}
	return bad;
}

/* One whole pwrite() or pread() of SIZE bytes at LBA; a failure is printed. */
static int transfer(int fd, int is_write, unsigned char *buf, size_t size, uint64_t lba)
{
	ssize_t n = is_write ? pwrite(fd, buf, size, lba * 512) : pread(fd, buf, size, lba * 512);
	if (n == (ssize_t)size)
		return 0;
	printf("GUEST_IO_ERROR %s lba=%llu size=%zu: %s\n", is_write ? "write" : "read", (unsigned long long)lba, size,
	       n < 0 ? strerror(errno) : "short");
	return -1;
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: %s DEVICE SECONDS MAX_BYTES\n", argv[0]);
		return 2;
	}
	const char *dev = argv[1];
	double seconds = atof(argv[2]);
	size_t max_bytes = strtoul(argv[3], NULL, 0);
	size_t sizes[] = {512, 4096, 65536, max_bytes};
	int nsizes = sizeof(sizes) / sizeof(sizes[0]);
	if (max_bytes < 512 || max_bytes % 512) {
		fprintf(stderr, "MAX_BYTES must be a multiple of 512\n");
		return 2;
	}
	int fd = open(dev, O_RDWR | O_DIRECT);
	if (fd < 0) {
		fprintf(stderr, "open %s: %s\n", dev, strerror(errno));
		return 2;
	}
	unsigned char *buf;
	if (posix_memalign((void **)&buf, 4096, max_bytes)) {
		fprintf(stderr, "no memory for %zu bytes\n", max_bytes);
		return 2;
	}
	long rounds = 0, ios = 0, errors = 0, mismatches = 0;
	unsigned long long bytes = 0;
	double end = now() + seconds;
	while (now() < end) {
		rounds++;
		for (int i = 0; i < nsizes; i++) {
			size_t size = sizes[i];
			/* Each size its own 16 MiB from the start of the disk (the lab's LUs have 64). */
			uint64_t lba = (uint64_t)i * 32768 + (rounds * (size / 512)) % (32768 - size / 512 + 1);
			pattern(buf, size, lba, rounds, 0);
			ios++;
			if (transfer(fd, 1, buf, size, lba)) {
				errors++;
				continue;
			}
			memset(buf, 0, size);
			ios++;
			if (transfer(fd, 0, buf, size, lba)) {
				errors++;
				continue;
			}
			bytes += 2 * size;
			long bad = pattern(buf, size, lba, rounds, 1);
			if (bad) {
				printf("GUEST_IO_MISMATCH lba=%llu size=%zu words=%ld\n", (unsigned long long)lba, size, bad);
				mismatches++;
			}
		}
		fflush(stdout);
	}
	printf("GUEST_IO rounds=%ld ios=%ld bytes=%llu errors=%ld mismatches=%ld max_bytes=%zu\n", rounds, ios, bytes,
	       errors, mismatches, max_bytes);
	return errors || mismatches ? 1 : 0;
}
