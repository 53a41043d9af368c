// SPDX-License-Identifier: MIT
/*
 * bind_table: the bind-conflict table of scenarios/test_bind_table.py, in C.
 *
 * For each mode and each ordered pair (first, second) of seven endpoints, a first TCP
 * socket binds its address on an ephemeral port and a second binds its address on the
 * same port; the second bind's errno is compared with the table. Each case runs in a
 * forked child, as the kselftest harness runs each test; with --netns the child also
 * unshares a fresh network namespace (lo up), the isolation a bindlab test has.
 * Without it, the whole program runs in one namespace of its own (never the host's).
 *
 * Prints one line per case ("ok N mode first second" or "not ok ..."), then
 * "# cases N failed F us_per_case U". Exit status 1 if any case failed.
 * Build: cc -O2 -o bind_table bind_table.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

struct endpoint {
	const char *name;
	int family;
	const char *ip;
	int v6only;
};

static const struct endpoint EP[] = {
	{"v4_any", AF_INET, "0.0.0.0", 0},
	{"v4_local", AF_INET, "127.0.0.1", 0},
	{"v6_any", AF_INET6, "::", 0},
	{"v6_any_v6only", AF_INET6, "::", 1},
	{"v6_local", AF_INET6, "::1", 0},
	{"v4mapped_any", AF_INET6, "::ffff:0.0.0.0", 0},
	{"v4mapped_local", AF_INET6, "::ffff:127.0.0.1", 0},
};
#define NEP 7

enum mode { PLAIN, REUSEADDR, REUSEADDR_LISTEN, NMODES };
static const char *MODE[] = {"plain", "reuseaddr", "reuseaddr_listen"};

/* Expected errno of the second bind: 1 = EADDRINUSE, 0 = success; rows first, columns
 * second, in EP order. SO_REUSEADDR on both sockets lets them share any address while the
 * first does not listen; once it listens, the plain conflicts are back. */
static const char CONFLICT[NEP][NEP + 1] = {
	/* second: 4a 4l 6a 6o 6l ma ml */
	"1110011", /* first v4_any */
	"1110011", /* first v4_local */
	"1111111", /* first v6_any */
	"0011100", /* first v6_any_v6only */
	"0011100", /* first v6_local */
	"1110011", /* first v4mapped_any */
	"1110011", /* first v4mapped_local */
};

static int expected(enum mode m, int a, int b)
{
	if (m == REUSEADDR)
		return 0;
	return CONFLICT[a][b] == '1' ? EADDRINUSE : 0;
}

static int lo_up(void)
{
	struct ifreq ifr;
	int fd = socket(AF_INET, SOCK_DGRAM, 0);

	if (fd < 0)
		return -1;
	memset(&ifr, 0, sizeof(ifr));
	strcpy(ifr.ifr_name, "lo");
	if (ioctl(fd, SIOCGIFFLAGS, &ifr) < 0)
		goto fail;
	ifr.ifr_flags |= IFF_UP;
	if (ioctl(fd, SIOCSIFFLAGS, &ifr) < 0)
		goto fail;
	close(fd);
	return 0;
fail:
	close(fd);
	return -1;
}

static int make(const struct endpoint *e, int reuse, unsigned short port,
		struct sockaddr_storage *ss, socklen_t *len)
{
	int fd = socket(e->family, SOCK_STREAM, 0), one = 1;

	if (fd < 0)
		return -1;
	memset(ss, 0, sizeof(*ss));
	if (e->family == AF_INET) {
		struct sockaddr_in *a = (struct sockaddr_in *)ss;

		a->sin_family = AF_INET;
		a->sin_port = htons(port);
		inet_pton(AF_INET, e->ip, &a->sin_addr);
		*len = sizeof(*a);
	} else {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;

		a->sin6_family = AF_INET6;
		a->sin6_port = htons(port);
		inet_pton(AF_INET6, e->ip, &a->sin6_addr);
		*len = sizeof(*a);
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &e->v6only, sizeof(int));
	}
	if (reuse)
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	return fd;
}

/* One case, in the calling (child) process: the second bind's errno, or -1 on a setup error. */
static int one_case(enum mode m, int a, int b, int netns)
{
	struct sockaddr_storage ss;
	socklen_t len;
	int fd1, fd2, err;

	if (netns && (unshare(CLONE_NEWNET) < 0 || lo_up() < 0))
		return -1;
	fd1 = make(&EP[a], m != PLAIN, 0, &ss, &len);
	if (fd1 < 0 || bind(fd1, (struct sockaddr *)&ss, len) < 0)
		return -1;
	if (getsockname(fd1, (struct sockaddr *)&ss, &len) < 0)
		return -1;
	if (m == REUSEADDR_LISTEN && listen(fd1, 1) < 0)
		return -1;
	fd2 = make(&EP[b], m != PLAIN, ntohs(((struct sockaddr_in *)&ss)->sin_port), &ss, &len);
	if (fd2 < 0)
		return -1;
	err = bind(fd2, (struct sockaddr *)&ss, len) < 0 ? errno : 0;
	close(fd2);
	close(fd1);
	return err;
}

int main(int argc, char **argv)
{
	int netns = argc > 1 && !strcmp(argv[1], "--netns");
	int n = 0, failed = 0;
	struct timespec t0, t1;

	if (!netns && (unshare(CLONE_NEWNET) < 0 || lo_up() < 0)) {
		perror("unshare(CLONE_NEWNET) or lo up (run as root)");
		return 2;
	}
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (int m = 0; m < NMODES; m++) {
		for (int a = 0; a < NEP; a++) {
			for (int b = 0; b < NEP; b++) {
				int status, got, want = expected(m, a, b);
				pid_t pid = fork();

				if (pid == 0)
					_exit(one_case(m, a, b, netns) & 0xff);
				if (pid < 0 || waitpid(pid, &status, 0) < 0 || !WIFEXITED(status)) {
					perror("fork/waitpid");
					return 2;
				}
				got = WEXITSTATUS(status);
				n++;
				if (got != want)
					failed++;
				printf("%s %d %s %s %s # %s\n", got == want ? "ok" : "not ok", n, MODE[m],
				       EP[a].name, EP[b].name, got == 0xff ? "setup error"
				       : got ? strerrorname_np(got) : "OK");
			}
		}
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	printf("# cases %d failed %d us_per_case %.1f\n", n, failed,
	       ((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec)) / 1e3 / n);
	return failed ? 1 : 0;
}
