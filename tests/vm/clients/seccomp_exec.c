/*
 * seccomp_exec ALLOWLIST -- PROGRAM [ARGS...]
 *
 * Runs PROGRAM under a seccomp filter like the one systemd builds for a unit with
 * SystemCallFilter= (an allow-list) and SystemCallArchitectures=native: every system call
 * named in ALLOWLIST (one name per line) is allowed, any other one, and any call through
 * another ABI (i386, x32), kills the process (SCMP_ACT_KILL_PROCESS, systemd's default
 * when SystemCallErrorNumber= is unset). The lab uses it to run mpath-sgd as the unit
 * would, without systemd as PID 1 (tests/vm/lib/unit-sandbox builds the list).
 *
 * Names are resolved with the x86-64 numbers of the kernel headers
 * (/usr/include/x86_64-linux-gnu/asm/unistd_64.h, parsed at run time); names without a
 * number on x86-64 (other architectures' calls) are skipped, as systemd skips them.
 * The caller must have set no_new_privs (setpriv --no-new-privs) or hold CAP_SYS_ADMIN.
 */
#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#define UNISTD "/usr/include/x86_64-linux-gnu/asm/unistd_64.h"
#define MAX_CALLS 1024
#define X32_SYSCALL_BIT 0x40000000u

static const char *names[MAX_CALLS];
static long numbers[MAX_CALLS];
static int ncalls;

static void load_numbers(void)
{
	FILE *f = fopen(UNISTD, "r");
	char line[256], name[128];
	long nr;
	if (!f) {
		fprintf(stderr, "seccomp_exec: %s: %s\n", UNISTD, strerror(errno));
		exit(125);
	}
	while (fgets(line, sizeof line, f) && ncalls < MAX_CALLS) {
		if (sscanf(line, "#define __NR_%127s %ld", name, &nr) == 2) {
			names[ncalls] = strdup(name);
			numbers[ncalls++] = nr;
		}
	}
	fclose(f);
	if (ncalls < 300) {
		fprintf(stderr, "seccomp_exec: only %d system calls in %s\n", ncalls, UNISTD);
		exit(125);
	}
}

static long number_of(const char *name)
{
	for (int i = 0; i < ncalls; i++)
		if (strcmp(names[i], name) == 0)
			return numbers[i];
	return -1;
}

int main(int argc, char **argv)
{
	if (argc < 4 || strcmp(argv[2], "--") != 0) {
		fprintf(stderr, "usage: seccomp_exec ALLOWLIST -- PROGRAM [ARGS...]\n");
		return 125;
	}
	load_numbers();
	FILE *list = fopen(argv[1], "r");
	if (!list) {
		fprintf(stderr, "seccomp_exec: %s: %s\n", argv[1], strerror(errno));
		return 125;
	}
	/* arch check (3), nr load and x32 check (3), two per allowed call, the kill. */
	static struct sock_filter prog[6 + 2 * MAX_CALLS + 1];
	int n = 0, allowed = 0;
	prog[n++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch));
	prog[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0);
	prog[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS);
	prog[n++] = (struct sock_filter)BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr));
	/* x32 calls have the x86-64 arch and the x32 bit: another ABI, killed. */
	prog[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JGE | BPF_K, X32_SYSCALL_BIT, 0, 1);
	prog[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS);
	char line[128];
	while (fgets(line, sizeof line, list)) {
		line[strcspn(line, " \t\r\n")] = 0;
		if (!line[0])
			continue;
		long nr = number_of(line);
		if (nr < 0)
			continue;
		prog[n++] = (struct sock_filter)BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, (unsigned)nr, 0, 1);
		prog[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW);
		if (++allowed >= MAX_CALLS)
			break;
	}
	fclose(list);
	prog[n++] = (struct sock_filter)BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_KILL_PROCESS);
	if (allowed < 100) {
		fprintf(stderr, "seccomp_exec: only %d allowed system calls in %s\n", allowed, argv[1]);
		return 125;
	}
	struct sock_fprog fprog = {.len = (unsigned short)n, .filter = prog};
	if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, 0, &fprog) != 0) {
		fprintf(stderr, "seccomp_exec: seccomp: %s\n", strerror(errno));
		return 125;
	}
	execvp(argv[3], argv + 3);
	fprintf(stderr, "seccomp_exec: %s: %s\n", argv[3], strerror(errno));
	return 127;
}
