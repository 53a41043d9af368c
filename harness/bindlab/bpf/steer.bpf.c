// SPDX-License-Identifier: MIT
/*
 * bindlab steer: an sk_lookup program whose behaviour comes from a map, to test what the
 * kernel does with each verdict, selection and flag (harness/bpf/steer.py drives it).
 *
 * config[0]  which flows (protocol, local port; 0 = all), what to assign (nothing, the
 *            socket in target[0], or NULL), bpf_sk_assign flags, the verdict to return.
 * result[0]  runs, bpf_sk_assign's return value of the last run, and whether a socket was
 *            already selected (by an earlier program) when this one ran.
 */
#include <linux/bpf.h>
#include <linux/types.h>

#include <bpf/bpf_helpers.h>

#define ENOENT 2

enum { ASSIGN_NONE = 0, ASSIGN_TARGET = 1, ASSIGN_NULL = 2 };

struct config {
	__u32 protocol;  /* 0 = every protocol */
	__u32 port;      /* local port, host order; 0 = every port */
	__u32 assign;    /* ASSIGN_* */
	__u32 verdict;   /* SK_PASS (1) or SK_DROP (0) */
	__u64 flags;     /* BPF_SK_LOOKUP_F_* */
};

struct result {
	__u64 runs;
	__s64 ret;       /* bpf_sk_assign's return value, -ENOENT if target[0] is empty */
	__u64 preselected; /* a socket was already selected when this program ran */
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct config);
} config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct result);
} result SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SOCKMAP);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} target SEC(".maps");

SEC("sk_lookup")
int steer(struct bpf_sk_lookup *ctx)
{
	const __u32 zero = 0;
	struct config *cfg = bpf_map_lookup_elem(&config, &zero);
	struct result *res = bpf_map_lookup_elem(&result, &zero);
	struct bpf_sock *sk;

	if (!cfg || !res)
		return SK_PASS;
	if (cfg->protocol && cfg->protocol != ctx->protocol)
		return SK_PASS;
	if (cfg->port && cfg->port != ctx->local_port)
		return SK_PASS;

	__sync_fetch_and_add(&res->runs, 1);
	res->preselected = ctx->sk != NULL;
	if (cfg->assign == ASSIGN_TARGET) {
		sk = bpf_map_lookup_elem(&target, &zero);
		if (sk) {
			res->ret = bpf_sk_assign(ctx, sk, cfg->flags);
			bpf_sk_release(sk);
		} else {
			res->ret = -ENOENT;
		}
	} else if (cfg->assign == ASSIGN_NULL) {
		res->ret = bpf_sk_assign(ctx, NULL, cfg->flags);
	}
	return cfg->verdict == SK_PASS ? SK_PASS : SK_DROP;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
