// SPDX-License-Identifier: MIT
/*
 * bindlab reuseport: an sk_reuseport program whose choice comes from a map, attached to a
 * SO_REUSEPORT group with SO_ATTACH_REUSEPORT_EBPF (harness/bindlab/bpf/reuseport.py).
 *
 * group      REUSEPORT_SOCKARRAY: index -> a socket of the group.
 * config[0]  MODE_SELECT: bpf_sk_select_reuseport(group[index]); if that slot is empty or
 *            refused, `on_error` decides (SK_DROP, or SK_PASS without a selection, which
 *            falls back to the kernel's hash). MODE_DROP: SK_DROP. MODE_FALLBACK: SK_PASS
 *            without a selection. MODE_BY_HASH: select group[hash % modulo].
 * result[0]  runs, and bpf_sk_select_reuseport's return value of the last run.
 */
#include <linux/bpf.h>
#include <linux/types.h>

#include <bpf/bpf_helpers.h>

enum { MODE_SELECT = 0, MODE_DROP = 1, MODE_FALLBACK = 2, MODE_BY_HASH = 3 };

struct config {
	__u32 mode;     /* MODE_* */
	__u32 index;    /* MODE_SELECT: the slot of group to select */
	__u32 on_error; /* SK_DROP (0) or SK_PASS (1): when the selection fails */
	__u32 modulo;   /* MODE_BY_HASH: slots used */
};

struct result {
	__u64 runs;
	__s64 ret; /* bpf_sk_select_reuseport's return value (-errno) of the last run */
};

struct {
	__uint(type, BPF_MAP_TYPE_REUSEPORT_SOCKARRAY);
	__uint(max_entries, 64); /* resized at load */
	__type(key, __u32);
	__type(value, __u64);
} group SEC(".maps");

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

SEC("sk_reuseport")
int select_sock(struct sk_reuseport_md *md)
{
	const __u32 zero = 0;
	struct config *cfg = bpf_map_lookup_elem(&config, &zero);
	struct result *res = bpf_map_lookup_elem(&result, &zero);
	__u32 index;
	long err;

	if (!cfg || !res)
		return SK_PASS;
	__sync_fetch_and_add(&res->runs, 1);
	if (cfg->mode == MODE_DROP)
		return SK_DROP;
	if (cfg->mode == MODE_FALLBACK)
		return SK_PASS;
	index = cfg->index;
	if (cfg->mode == MODE_BY_HASH)
		index = cfg->modulo ? md->hash % cfg->modulo : 0;
	err = bpf_sk_select_reuseport(md, &group, &index, 0);
	res->ret = err;
	if (err)
		return cfg->on_error ? SK_PASS : SK_DROP;
	return SK_PASS;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
