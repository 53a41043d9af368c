// SPDX-License-Identifier: MIT
/*
 * bindlab evidence: what the kernel's socket lookup chose for each flow, recorded where the
 * kernel acts on it (harness/bindlab/bpf/evidence.py loads it and reads the ring buffer).
 *
 * on_synack   tp_btf/net_dev_queue: a SYN-ACK leaving; its skb belongs to the request
 *             socket, whose rsk_listener is the listener the SYN's lookup found.
 * on_drop     tp_btf/kfree_skb: a packet dropped with its drop reason (NO_SOCKET: the
 *             lookup found nothing: the RST and ICMP verdicts).
 * on_ready    tp_btf/sk_data_ready (6.3+): a UDP socket got a datagram (the tail of its
 *             receive queue names the flow).
 * on_lookup   sk_lookup, attached after the namespace's other sk_lookup programs: ctx->sk
 *             is the socket an earlier program selected with bpf_sk_assign.
 * iter_tcp, iter_udp   iter/tcp, iter/udp: every listener / UDP socket of the namespace the
 *             iterator was created in (the competitors).
 *
 * Every event is filtered by the network namespace's inode (map netns, filled by evidence.py)
 * first. Kernel structures are declared here with only the fields read, relocated by CO-RE
 * against the running kernel's BTF; pointers inside unions are read with probe reads.
 * Tracepoints gain arguments over versions: only the leading ones are read.
 */
#include <linux/bpf.h>
#include <linux/types.h>

#include <bpf/bpf_core_read.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#define AF_INET 2
#define AF_INET6 10
#define TCP_LISTEN 10
#define TCP_NEW_SYN_RECV 12
#define MAX_GROUP 32 /* reuseport members searched for the chosen one's index */

enum { EV_SYNACK = 1, EV_DROP = 2, EV_UDP = 3, EV_LOOKUP = 4 };

/* ---- the kernel's types: only the fields read (CO-RE relocates them) ---------------- */

struct in6_addr { __u8 s6_addr[16]; } __attribute__((preserve_access_index));
struct ns_common { unsigned int inum; } __attribute__((preserve_access_index));
struct net { struct ns_common ns; } __attribute__((preserve_access_index));
typedef struct { struct net *net; } possible_net_t;
typedef struct { long long counter; } atomic64_t;

struct sock_common {
	__be32 skc_daddr;
	__be32 skc_rcv_saddr;
	__be16 skc_dport;
	__u16 skc_num;
	unsigned short skc_family;
	struct sock *skc_listener; /* a request socket's listener (in a union) */
	volatile unsigned char skc_state;
	int skc_bound_dev_if;
	possible_net_t skc_net;
	struct in6_addr skc_v6_daddr;
	struct in6_addr skc_v6_rcv_saddr;
	atomic64_t skc_cookie;
} __attribute__((preserve_access_index));

struct inode { unsigned long i_ino; } __attribute__((preserve_access_index));
struct file { struct inode *f_inode; } __attribute__((preserve_access_index));
struct socket { struct file *file; } __attribute__((preserve_access_index));
struct sk_buff;
struct sk_buff_head { struct sk_buff *next; struct sk_buff *prev; } __attribute__((preserve_access_index));

struct bpf_prog;
struct sock_reuseport {
	unsigned int reuseport_id;
	__u16 num_socks;
	struct bpf_prog *prog;
	struct sock *socks[];
} __attribute__((preserve_access_index));

struct sock {
	struct sock_common __sk_common;
	struct sk_buff_head sk_receive_queue;
	struct sock_reuseport *sk_reuseport_cb;
	__u16 sk_protocol;
	struct socket *sk_socket;
} __attribute__((preserve_access_index));


struct net_device { int ifindex; possible_net_t nd_net; } __attribute__((preserve_access_index));

struct sk_buff {
	struct net_device *dev;
	struct sock *sk;
	unsigned char *head;
	__u16 transport_header;
	__u16 network_header;
	int skb_iif;
} __attribute__((preserve_access_index));

struct seq_file;
struct bpf_iter_meta { struct seq_file *seq; } __attribute__((preserve_access_index));
struct bpf_iter__tcp { struct bpf_iter_meta *meta; struct sock_common *sk_common; } __attribute__((preserve_access_index));
struct udp_sock;
struct bpf_iter__udp { struct bpf_iter_meta *meta; struct udp_sock *udp_sk; } __attribute__((preserve_access_index));

enum skb_drop_reason { SKB_DROP_REASON_NO_SOCKET = 2 };

/* ---- what goes to user space ---------------------------------------------------------- */

/* One record: 112 bytes, the layout evidence.py unpacks (EVENT). Addresses are 16 bytes,
 * an IPv4 one in the first 4. */
struct event {
	__u8 kind;        /* EV_* */
	__u8 proto;       /* IPPROTO_TCP / IPPROTO_UDP */
	__u8 family;      /* the flow's: AF_INET / AF_INET6 */
	__u8 sk_family;   /* the socket's */
	__u8 sk_state;
	__u8 tcp_flags;   /* EV_DROP: the dropped segment's flags */
	__u8 has_prog;    /* a reuseport BPF program is attached to the group */
	__u8 pad;
	__u32 netns;      /* the namespace's inode */
	__u32 reason;     /* EV_DROP: enum skb_drop_reason */
	__u16 rport;      /* the flow's remote (client) port, host order */
	__u16 lport;      /* the flow's local port */
	__u16 sk_port;    /* the socket's bound port */
	__u16 sk_dport;   /* the socket's connected peer port (connected UDP), host order */
	__s32 sk_dev;     /* SO_BINDTODEVICE / SO_BINDTOIFINDEX of the socket */
	__s32 iif;        /* ingress device */
	__u32 rp_id;      /* reuseport group id (0: none) */
	__u16 rp_n;       /* its members */
	__s16 rp_k;       /* the chosen socket's index in it (-1: not found) */
	__u32 pad2;
	__u64 cookie;
	__u64 ino;
	__u8 raddr[16];   /* the flow's remote (client) address */
	__u8 laddr[16];   /* the flow's local address */
	__u8 sk_addr[16]; /* the socket's bound address */
};

/* The namespaces being probed, by inode (evidence.py adds and removes them). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u32);
} netns SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct event);
} scratch SEC(".maps");

static __always_inline int ours(possible_net_t *pnet)
{
	struct net *net = BPF_CORE_READ(pnet, net);
	__u32 ino;

	if (!net)
		return 0;
	ino = BPF_CORE_READ(net, ns.inum);
	return bpf_map_lookup_elem(&netns, &ino) ? ino : 0;
}

/* The socket's identity, bound address/port/device and reuseport group. An IPv4 address
 * is read as 4 bytes (BPF_CORE_READ_INTO would copy sizeof the 16-byte destination). */
static __always_inline void describe(struct event *e, struct sock *sk)
{
	struct sock_reuseport *rp;
	struct sock *socks[MAX_GROUP];
	int i;

	e->sk_family = BPF_CORE_READ(sk, __sk_common.skc_family);
	e->sk_state = BPF_CORE_READ(sk, __sk_common.skc_state);
	e->sk_port = BPF_CORE_READ(sk, __sk_common.skc_num);
	e->sk_dport = __builtin_bswap16(BPF_CORE_READ(sk, __sk_common.skc_dport));
	e->sk_dev = BPF_CORE_READ(sk, __sk_common.skc_bound_dev_if);
	e->cookie = BPF_CORE_READ(sk, __sk_common.skc_cookie.counter);
	if (!e->cookie) /* nobody asked for its cookie: name it by inode (4 reads) */
		e->ino = BPF_CORE_READ(sk, sk_socket, file, f_inode, i_ino);
	if (e->sk_family == AF_INET6)
		BPF_CORE_READ_INTO(&e->sk_addr, sk, __sk_common.skc_v6_rcv_saddr);
	else
		*(__u32 *)e->sk_addr = BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr);
	e->rp_k = -1;
	rp = BPF_CORE_READ(sk, sk_reuseport_cb);
	if (!rp)
		return;
	e->rp_id = BPF_CORE_READ(rp, reuseport_id);
	e->rp_n = BPF_CORE_READ(rp, num_socks);
	e->has_prog = BPF_CORE_READ(rp, prog) != NULL;
	if (bpf_probe_read_kernel(socks, sizeof(socks), &rp->socks[0]))
		return;
	for (i = 0; i < MAX_GROUP; i++) {
		if (i >= e->rp_n)
			break;
		if (socks[i] == sk) {
			e->rp_k = i;
			break;
		}
	}
}

/* The flow's addresses and ports from a packet's IP and TCP/UDP headers. */
static __always_inline int parse(struct event *e, struct sk_buff *skb)
{
	unsigned char *head = BPF_CORE_READ(skb, head);
	__u16 nh = BPF_CORE_READ(skb, network_header);
	__u16 th = BPF_CORE_READ(skb, transport_header);
	__u8 ip[40];
	__u8 l4[14];

	if (bpf_probe_read_kernel(ip, sizeof(ip), head + nh))
		return -1;
	if (bpf_probe_read_kernel(l4, sizeof(l4), head + th))
		return -1;
	if ((ip[0] >> 4) == 4) {
		e->family = AF_INET;
		e->proto = ip[9];
		__builtin_memcpy(e->raddr, ip + 12, 4);
		__builtin_memcpy(e->laddr, ip + 16, 4);
	} else if ((ip[0] >> 4) == 6) {
		e->family = AF_INET6;
		e->proto = ip[6];
		__builtin_memcpy(e->raddr, ip + 8, 16);
		__builtin_memcpy(e->laddr, ip + 24, 16);
	} else {
		return -1;
	}
	e->rport = (l4[0] << 8) | l4[1];
	e->lport = (l4[2] << 8) | l4[3];
	e->tcp_flags = l4[13];
	return 0;
}

SEC("tp_btf/net_dev_queue")
int BPF_PROG(on_synack, struct sk_buff *skb)
{
	struct net_device *dev = BPF_CORE_READ(skb, dev);
	struct sock *sk, *listener;
	struct event *e;
	__u32 ns;

	if (!dev || !(ns = ours(&dev->nd_net)))
		return 0;
	sk = BPF_CORE_READ(skb, sk);
	if (!sk || BPF_CORE_READ(sk, __sk_common.skc_state) != TCP_NEW_SYN_RECV)
		return 0;
	listener = BPF_CORE_READ(sk, __sk_common.skc_listener); /* rsk_listener */
	if (!listener)
		return 0;
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e)
		return 0;
	__builtin_memset(e, 0, sizeof(*e));
	e->kind = EV_SYNACK;
	e->netns = ns;
	e->proto = 6;
	e->family = BPF_CORE_READ(sk, __sk_common.skc_family);
	e->rport = __builtin_bswap16(BPF_CORE_READ(sk, __sk_common.skc_dport));
	e->lport = BPF_CORE_READ(sk, __sk_common.skc_num);
	if (e->family == AF_INET6) {
		BPF_CORE_READ_INTO(&e->raddr, sk, __sk_common.skc_v6_daddr);
		BPF_CORE_READ_INTO(&e->laddr, sk, __sk_common.skc_v6_rcv_saddr);
	}
	/* An IPv4 SYN on an IPv6 listener: the request socket is AF_INET6 (the listener's
	 * family) and its IPv6 addresses are IPv4-mapped; the flow is IPv4. */
	if (e->family != AF_INET6 ||
	    (!*(__u64 *)e->raddr && *(__u32 *)(e->raddr + 8) == __builtin_bswap32(0xffff))) {
		e->family = AF_INET;
		__builtin_memset(e->raddr, 0, sizeof(e->raddr) + sizeof(e->laddr));
		*(__u32 *)e->raddr = BPF_CORE_READ(sk, __sk_common.skc_daddr);
		*(__u32 *)e->laddr = BPF_CORE_READ(sk, __sk_common.skc_rcv_saddr);
	}
	e->iif = BPF_CORE_READ(sk, __sk_common.skc_bound_dev_if); /* ir_iif */
	describe(e, listener);
	bpf_ringbuf_submit(e, BPF_RB_NO_WAKEUP);
	return 0;
}

SEC("tp_btf/kfree_skb")
int BPF_PROG(on_drop, struct sk_buff *skb, void *location, int reason)
{
	struct net_device *dev;
	struct event *e;
	__u32 ns;

	if (reason != bpf_core_enum_value(enum skb_drop_reason, SKB_DROP_REASON_NO_SOCKET))
		return 0;
	dev = BPF_CORE_READ(skb, dev);
	if (!dev || !(ns = ours(&dev->nd_net)))
		return 0;
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e)
		return 0;
	__builtin_memset(e, 0, sizeof(*e));
	e->kind = EV_DROP;
	e->netns = ns;
	e->reason = reason;
	e->iif = BPF_CORE_READ(skb, skb_iif);
	e->rp_k = -1;
	if (parse(e, skb)) {
		bpf_ringbuf_discard(e, BPF_RB_NO_WAKEUP);
		return 0;
	}
	bpf_ringbuf_submit(e, BPF_RB_NO_WAKEUP);
	return 0;
}

SEC("tp_btf/sk_data_ready")
int BPF_PROG(on_ready, struct sock *sk)
{
	struct sk_buff *skb;
	struct event *e;
	__u32 ns;

	if (BPF_CORE_READ(sk, sk_protocol) != 17 || !(ns = ours(&sk->__sk_common.skc_net)))
		return 0;
	skb = BPF_CORE_READ(sk, sk_receive_queue.prev);
	if (!skb || (void *)skb == (void *)&sk->sk_receive_queue)
		return 0;
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e)
		return 0;
	__builtin_memset(e, 0, sizeof(*e));
	e->kind = EV_UDP;
	e->netns = ns;
	if (parse(e, skb)) {
		bpf_ringbuf_discard(e, BPF_RB_NO_WAKEUP);
		return 0;
	}
	e->iif = BPF_CORE_READ(skb, skb_iif);
	describe(e, sk);
	bpf_ringbuf_submit(e, BPF_RB_NO_WAKEUP);
	return 0;
}

SEC("sk_lookup")
int on_lookup(struct bpf_sk_lookup *ctx)
{
	struct bpf_sock *sk = ctx->sk;
	struct event *e;

	if (!sk)
		return SK_PASS;
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e)
		return SK_PASS;
	__builtin_memset(e, 0, sizeof(*e));
	e->kind = EV_LOOKUP;
	e->proto = ctx->protocol;
	e->family = ctx->family;
	e->rport = __builtin_bswap16(ctx->remote_port);
	e->lport = ctx->local_port;
	e->rp_k = -1;
	if (ctx->family == AF_INET6) {
		__u32 *r = (__u32 *)e->raddr, *l = (__u32 *)e->laddr;

		r[0] = ctx->remote_ip6[0];
		r[1] = ctx->remote_ip6[1];
		r[2] = ctx->remote_ip6[2];
		r[3] = ctx->remote_ip6[3];
		l[0] = ctx->local_ip6[0];
		l[1] = ctx->local_ip6[1];
		l[2] = ctx->local_ip6[2];
		l[3] = ctx->local_ip6[3];
	} else {
		*(__u32 *)e->raddr = ctx->remote_ip4;
		*(__u32 *)e->laddr = ctx->local_ip4;
	}
	e->sk_family = sk->family;
	e->sk_port = sk->src_port;
	bpf_ringbuf_submit(e, BPF_RB_NO_WAKEUP);
	return SK_PASS;
}

/* One socket of the namespace, written to the iterator's output (SOCKET in evidence.py). */
struct sockrec {
	__u8 proto;
	__u8 family;
	__u8 state;
	__u8 has_prog;
	__u16 port;
	__u16 dport;
	__s32 dev;
	__u32 rp_id;
	__u16 rp_n;
	__s16 rp_k;
	__u32 pad;
	__u64 cookie;
	__u64 ino;
	__u8 addr[16];
	__u8 daddr[16];
};

static __always_inline void record(struct seq_file *seq, struct sock *sk, __u8 proto)
{
	const __u32 zero = 0;
	struct event *ep = bpf_map_lookup_elem(&scratch, &zero);
	struct sockrec r = {};

	if (!ep)
		return;
	__builtin_memset(ep, 0, sizeof(*ep));
	describe(ep, sk);
#define e (*ep)
	r.proto = proto;
	r.family = e.sk_family;
	r.state = e.sk_state;
	r.has_prog = e.has_prog;
	r.port = e.sk_port;
	r.dport = e.sk_dport;
	r.dev = e.sk_dev;
	r.rp_id = e.rp_id;
	r.rp_n = e.rp_n;
	r.rp_k = e.rp_k;
	r.cookie = e.cookie;
	r.ino = e.ino;
	__builtin_memcpy(r.addr, e.sk_addr, 16);
	if (r.family == AF_INET6)
		BPF_CORE_READ_INTO(&r.daddr, sk, __sk_common.skc_v6_daddr);
	else
		*(__u32 *)r.daddr = BPF_CORE_READ(sk, __sk_common.skc_daddr);
	bpf_seq_write(seq, &r, sizeof(r));
#undef e
}

SEC("iter/tcp")
int iter_tcp(struct bpf_iter__tcp *ctx)
{
	struct sock_common *skc = ctx->sk_common;

	if (!skc || BPF_CORE_READ(skc, skc_state) != TCP_LISTEN || !ours(&skc->skc_net))
		return 0;
	record(ctx->meta->seq, (struct sock *)skc, 6);
	return 0;
}

SEC("iter/udp")
int iter_udp(struct bpf_iter__udp *ctx)
{
	struct sock *sk = (struct sock *)ctx->udp_sk;

	if (!sk || !ours(&sk->__sk_common.skc_net))
		return 0;
	record(ctx->meta->seq, sk, 17);
	return 0;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
