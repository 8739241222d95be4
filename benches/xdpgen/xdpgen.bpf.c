// SPDX-License-Identifier: Apache-2.0
//
// xdpgen's two XDP programs (user space: xdpgen.c, layout: xdpgen.h).
//
//   xdpgen_gen   the generator: run through BPF_PROG_RUN in live-frames mode, it stamps each
//                frame with its flow's ports (and channel number) and the time, and returns
//                XDP_TX, which sends it out of the ingress interface given to the test run.
//   xdpgen_sink  attached to the same interface in native mode: drops and counts the frames
//                that come back carrying the magic, with their one-way latency; passes
//                everything else. A frame whose XDP metadata is the run's gen_cookie is not a
//                received frame but one of BPF_PROG_RUN's: it takes the generator's path.
//
// Why the sink generates too: a test run of repeat > 1 adds its program to the kernel's XDP
// dispatcher for the call and takes it out afterwards, and each change waits for an RCU
// grace period (about 20-30 ms per call on a HZ=100 kernel, whatever the repeat count). A
// program already attached in native mode is in the dispatcher for good, so test runs of
// xdpgen_sink cost nothing of the sort. The metadata never reaches the wire: the generator
// path drops it before XDP_TX, so a frame that comes back, even through another XDP program
// that sends it straight back, never has it. xdpgen_gen alone is what --separate-gen runs.
//
// Only helpers that are not GPL-only are called (map helpers, bpf_ktime_get_ns).
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "xdpgen.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct xdpgen_cfg);
} xdpgen_cfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct xdpgen_tmpl);
} xdpgen_tmpl SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, XDPGEN_MAX_FLOWS);
	__type(key, __u32);
	__type(value, struct xdpgen_flow);
} xdpgen_flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct xdpgen_gen_stats);
} xdpgen_gen_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct xdpgen_sink_stats);
} xdpgen_sink_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, XDPGEN_BUCKETS);
	__type(key, __u32);
	__type(value, __u64);
} xdpgen_hist SEC(".maps");

// The generator's work on one frame (laid out by user space, see xdpgen.h).
static __always_inline int gen_frame(struct xdp_md *ctx, struct xdpgen_cfg *cfg)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u32 zero = 0;

	struct xdpgen_gen_stats *st = bpf_map_lookup_elem(&xdpgen_gen_stats, &zero);
	if (!st)
		return XDP_ABORTED;
	__u32 nflows = cfg->nflows;
	if (nflows == 0)
		return XDP_ABORTED;
	__u32 i = (__u32)(st->seq % nflows);
	st->seq++;
	struct xdpgen_flow *fl = bpf_map_lookup_elem(&xdpgen_flows, &i);
	if (!fl)
		return XDP_ABORTED;

	// Live frames: a recycled page keeps what the previous run wrote, and what anyone who
	// received it wrote (a relay in XDP rewrites headers in place), so the headers and the
	// magic come from the template every time, then the fields that differ between frames.
	struct xdpgen_tmpl *tmpl = bpf_map_lookup_elem(&xdpgen_tmpl, &zero);
	if (!tmpl)
		return XDP_ABORTED;
	if (data + XDPGEN_TMPL_LEN > end)
		return XDP_ABORTED;
	__builtin_memcpy(data, tmpl->b, XDPGEN_TMPL_LEN);
	struct udphdr *udp = data + XDPGEN_OFF_UDP;
	if ((void *)(udp + 1) > end)
		return XDP_ABORTED;
	udp->source = fl->sport_be;
	udp->dest = fl->dport_be;

	__u8 *app = (__u8 *)(udp + 1);
	if (cfg->channel) {
		if ((void *)(app + XDPGEN_CHANNEL_HDR) > end)
			return XDP_ABORTED;
		*(__u16 *)app = fl->chan_be;
		app += XDPGEN_CHANNEL_HDR;
	}
	if ((void *)(app + XDPGEN_APP_MIN) > end)
		return XDP_ABORTED;

	__u64 now = bpf_ktime_get_ns();
	__u64 ts_be = bpf_cpu_to_be64(now);
	__builtin_memcpy(app + 8, &ts_be, sizeof(ts_be));

	if (now >= cfg->win_start_ns && now < cfg->win_end_ns)
		st->offered++;
	return XDP_TX;
}

SEC("xdp")
int xdpgen_gen(struct xdp_md *ctx)
{
	__u32 zero = 0;
	struct xdpgen_cfg *cfg = bpf_map_lookup_elem(&xdpgen_cfg, &zero);

	if (!cfg)
		return XDP_ABORTED;
	return gen_frame(ctx, cfg);
}

static __always_inline __u32 ilog2_u64(__u64 v)
{
	__u32 r = 0;

	if (v >> 32) { v >>= 32; r += 32; }
	if (v >> 16) { v >>= 16; r += 16; }
	if (v >> 8) { v >>= 8; r += 8; }
	if (v >> 4) { v >>= 4; r += 4; }
	if (v >> 2) { v >>= 2; r += 2; }
	if (v >> 1) r += 1;
	return r;
}

static __always_inline __u32 lat_bucket(__u64 lat_ns)
{
	__u64 us = lat_ns / 1000;

	if (us < XDPGEN_LIN_BUCKETS)
		return (__u32)us;
	__u32 b = XDPGEN_LIN_BUCKETS + ilog2_u64(us) - 12; // log2(4096) = 12
	if (b > XDPGEN_BUCKETS - 1)
		b = XDPGEN_BUCKETS - 1;
	return b;
}

SEC("xdp")
int xdpgen_sink(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u32 zero = 0;

	struct xdpgen_cfg *cfg = bpf_map_lookup_elem(&xdpgen_cfg, &zero);
	if (!cfg)
		return XDP_PASS;

	// One of BPF_PROG_RUN's frames? Its metadata is the cookie (received frames have none).
	void *meta = (void *)(long)ctx->data_meta;
	if (meta + XDPGEN_META_LEN <= data) {
		__u64 cookie;
		__builtin_memcpy(&cookie, meta, sizeof(cookie));
		if (cookie == cfg->gen_cookie && cookie != 0) {
			// Drop the metadata before the frame leaves (the next run of this page gets it
			// back: the test runner restores a changed context).
			if (bpf_xdp_adjust_meta(ctx, XDPGEN_META_LEN))
				return XDP_ABORTED;
			return gen_frame(ctx, cfg);
		}
	}

	struct xdpgen_sink_stats *st = bpf_map_lookup_elem(&xdpgen_sink_stats, &zero);
	if (!st)
		return XDP_PASS;

	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end || eth->h_proto != bpf_htons(ETH_P_IP))
		goto pass;
	struct iphdr *ip = (void *)(eth + 1);
	if ((void *)(ip + 1) > end || ip->protocol != IPPROTO_UDP)
		goto pass;
	if (ip->frag_off & bpf_htons(0x3fff)) // a fragment (MF or an offset): not a whole datagram
		goto pass;
	__u32 ihl = ip->ihl * 4;
	if (ihl < sizeof(*ip))
		goto pass;
	struct udphdr *udp = (void *)ip + ihl;
	if ((void *)(udp + 1) > end)
		goto pass;

	// Raw datagram: magic at payload offset 0. ChannelData: first byte 0x40..0x4F, magic at
	// offset 4. The magic begins with 'X' (0x58), so the two cannot be confused.
	__u8 *app = (__u8 *)(udp + 1);
	__u64 magic;
	if ((void *)(app + XDPGEN_APP_MIN) > end)
		goto pass;
	__builtin_memcpy(&magic, app, sizeof(magic));
	if (magic != bpf_cpu_to_be64(XDPGEN_MAGIC)) {
		if ((app[0] & 0xf0) != 0x40)
			goto pass;
		app += XDPGEN_CHANNEL_HDR;
		if ((void *)(app + XDPGEN_APP_MIN) > end)
			goto pass;
		__builtin_memcpy(&magic, app, sizeof(magic));
		if (magic != bpf_cpu_to_be64(XDPGEN_MAGIC))
			goto pass;
	}

	__u64 ts_be;
	__builtin_memcpy(&ts_be, app + 8, sizeof(ts_be));
	__u64 ts = bpf_be64_to_cpu(ts_be);
	__u64 now = bpf_ktime_get_ns();

	if (ts < cfg->win_start_ns || ts >= cfg->win_end_ns) {
		st->outside++;
		return XDP_DROP;
	}
	__u64 lat = now > ts ? now - ts : 0;
	st->delivered++;
	st->lat_sum_ns += lat;
	if (lat > st->lat_max_ns)
		st->lat_max_ns = lat;
	__u32 b = lat_bucket(lat);
	__u64 *cnt = bpf_map_lookup_elem(&xdpgen_hist, &b);
	if (cnt)
		(*cnt)++;
	return XDP_DROP;

pass:
	st->passed++;
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Apache-2.0";
