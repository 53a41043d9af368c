// SPDX-License-Identifier: MIT
/*
 * bindlab prefix dispatcher: an sk_lookup program mapping (protocol, prefix, port or any
 * port) to a socket. The Python side is harness/bpf/dispatcher.py; layouts: keys.py.
 *
 * bindings   LPM trie: (protocol, IP version, port, address; IPv4 as ::ffff:a.b.c.d)
 *            -> (counter slot, prefix length, bpf_sk_assign flags, ingress ifindex or 0,
 *            up to 4 socket slots). Port 0 = any port.
 * sockets    SOCKMAP: socket slot -> socket.
 * lookups    per-CPU array: counter slot -> lookups the binding matched.
 * stats      per-CPU array: STAT_* -> count.
 *
 * Precedence (as tubular): the longer prefix wins; at equal length a specific port beats
 * any port. The key holds the port before the address, so one lookup cannot weigh both:
 * look up the flow's port, then port 0, and keep the port-specific match unless the
 * any-port one has a strictly longer prefix.
 *
 * A binding's sockets are tried in order and the first still open is assigned (closing a
 * socket removes it from the SOCKMAP). A matched binding with no open socket, or whose
 * socket does not fit the flow (family, protocol, state), drops the flow rather than
 * letting it fall through to another socket. No match: SK_PASS, the regular lookup runs.
 * A binding with an ifindex only takes flows that came in on that interface; a flow from
 * another interface is no match (the regular lookup runs, not a less specific binding).
 * A binding's flags go to bpf_sk_assign (BPF_SK_LOOKUP_F_NO_REUSEPORT: the socket itself,
 * not a member of its reuseport group chosen by the group's hash or program).
 */
#include <linux/bpf.h>
#include <linux/types.h>

#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#define AF_INET 2
#define MAX_SOCKETS_PER_BINDING 4
/* Volatile read at a constant offset: the verifier refuses a ctx access through a pointer
 * that clang would otherwise compute per branch and share. */
#define CTX_READ(field) (*(volatile __u32 *)&(field))

enum {
	STAT_NO_MATCH = 0,
	STAT_MATCH,
	STAT_DROP_NO_SOCKET,
	STAT_DROP_ASSIGN,
	STAT_MAX,
};

struct key {
	__u32 prefixlen; /* bits of what follows: 32 (protocol, version, port) + address bits */
	__u8 protocol;   /* IPPROTO_TCP, IPPROTO_UDP */
	__u8 version;    /* 4 or 6: keeps ::/0 away from IPv4 flows */
	__u16 port;      /* host byte order; 0 = any port */
	__u32 addr[4];   /* network byte order; IPv4 as ::ffff:a.b.c.d */
};

struct binding {
	__u32 counter;   /* slot in lookups */
	__u32 prefixlen; /* address prefix length, IPv6 terms (IPv4 /24 -> 120) */
	__u32 nsockets;
	__u32 flags;     /* bpf_sk_assign flags: BPF_SK_LOOKUP_F_NO_REUSEPORT */
	__u32 ifindex;   /* only flows that came in on this interface; 0 = any */
	__u32 sockets[MAX_SOCKETS_PER_BINDING]; /* slots in sockets, first open one wins */
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, 4096); /* resized at load */
	__type(key, struct key);
	__type(value, struct binding);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} bindings SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SOCKMAP);
	__uint(max_entries, 1024); /* resized at load */
	__type(key, __u32);
	__type(value, __u64);
} sockets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 4096); /* resized at load, as bindings */
	__type(key, __u32);
	__type(value, __u64);
} lookups SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

static __always_inline void count(__u32 stat)
{
	__u64 *n = bpf_map_lookup_elem(&stats, &stat);

	if (n)
		*n += 1;
}

SEC("sk_lookup")
int dispatch(struct bpf_sk_lookup *ctx)
{
	struct key key = {
		.prefixlen = 32 + 128,
		.protocol = ctx->protocol,
		.port = ctx->local_port,
	};
	const struct binding *exact, *any, *b;
	struct bpf_sock *sk = NULL;
	__u32 ip4 = CTX_READ(ctx->local_ip4);
	__u32 w0 = CTX_READ(ctx->local_ip6[0]), w1 = CTX_READ(ctx->local_ip6[1]);
	__u32 w2 = CTX_READ(ctx->local_ip6[2]), w3 = CTX_READ(ctx->local_ip6[3]);
	__u64 *n;
	long err;
	int i;

	key.version = 6;
	if (ctx->family == AF_INET) {
		key.version = 4;
		w0 = 0;
		w1 = 0;
		w2 = bpf_htonl(0x0000ffff);
		w3 = ip4;
	}
	key.addr[0] = w0;
	key.addr[1] = w1;
	key.addr[2] = w2;
	key.addr[3] = w3;

	exact = bpf_map_lookup_elem(&bindings, &key);
	key.port = 0;
	any = bpf_map_lookup_elem(&bindings, &key);
	b = exact;
	if (!b || (any && any->prefixlen > b->prefixlen))
		b = any;
	if (!b || (b->ifindex && b->ifindex != ctx->ingress_ifindex)) {
		count(STAT_NO_MATCH);
		return SK_PASS;
	}

	count(STAT_MATCH);
	n = bpf_map_lookup_elem(&lookups, &b->counter);
	if (n)
		*n += 1;

#pragma unroll
	for (i = 0; i < MAX_SOCKETS_PER_BINDING; i++) {
		if (i >= b->nsockets)
			break;
		sk = bpf_map_lookup_elem(&sockets, &b->sockets[i]);
		if (sk)
			break;
	}
	if (!sk) {
		count(STAT_DROP_NO_SOCKET);
		return SK_DROP;
	}
	err = bpf_sk_assign(ctx, sk, b->flags);
	bpf_sk_release(sk);
	if (err) {
		count(STAT_DROP_ASSIGN);
		return SK_DROP;
	}
	return SK_PASS;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
