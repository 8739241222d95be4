// SPDX-License-Identifier: Apache-2.0
//
// Layout shared by xdpgen.bpf.c (kernel side) and xdpgen.c (user space): the maps' value
// types, the frame's fixed offsets and the latency histogram's bucket scheme.
#ifndef XDPGEN_H
#define XDPGEN_H

#include <linux/types.h>

#define XDPGEN_MAX_FLOWS 64

// The 8 bytes "XDPGEN01" read as a big-endian integer: the first 8 bytes of the
// application payload of every generated frame.
#define XDPGEN_MAGIC 0x58445047454e3031ULL

// Frame layout written by user space: Ethernet, IPv4 without options, UDP, then either the
// application payload or a 4-byte TURN ChannelData header followed by it. The application
// payload starts with the magic (8 bytes) and the generation time (8 bytes, big-endian,
// CLOCK_MONOTONIC ns as given by bpf_ktime_get_ns).
#define XDPGEN_OFF_IP 14
#define XDPGEN_OFF_UDP 34
#define XDPGEN_OFF_PAYLOAD 42
#define XDPGEN_CHANNEL_HDR 4
#define XDPGEN_APP_MIN 16

// Latency histogram: buckets 0..4095 are 1 us wide ([b, b+1) us); bucket 4096+k (k = 0..12)
// holds [2^(12+k), 2^(13+k)) us, and the last one also everything slower (>= 2^24 us).
#define XDPGEN_LIN_BUCKETS 4096
#define XDPGEN_LOG_BUCKETS 13
#define XDPGEN_BUCKETS (XDPGEN_LIN_BUCKETS + XDPGEN_LOG_BUCKETS)

struct xdpgen_cfg {
	__u64 win_start_ns; // measurement window [win_start_ns, win_end_ns), CLOCK_MONOTONIC
	__u64 win_end_ns;
	__u64 gen_cookie;   // random, non-zero: test-run frames carry it as XDP metadata
	__u32 nflows;       // 1..XDPGEN_MAX_FLOWS
	__u32 channel;      // 1: frames carry a ChannelData header
};

// Bytes of XDP metadata in front of a test-run frame given to xdpgen_sink: the gen_cookie,
// then 8 spare bytes. Live frames keep what was written into their page, and a relay that
// prepends a header in XDP (eeaturn's kernel fast path adds 4 bytes of ChannelData header)
// writes into the bytes just before the frame, where the metadata sits: the spare bytes take
// that, the cookie survives.
#define XDPGEN_META_LEN 16

// The frame's first bytes, rewritten from the template on every generated frame: Ethernet,
// IPv4 and UDP headers, the ChannelData header if any, the magic (and, for raw flows, the
// first bytes of the timestamp, overwritten next). A relay that relays in XDP rewrites the
// headers of the very page the test runner gives out again, so nothing of them may be taken
// as still there. Every frame is at least 14 + 20 + 8 + XDPGEN_APP_MIN = 58 bytes.
#define XDPGEN_TMPL_LEN 56

struct xdpgen_tmpl {
	__u8 b[XDPGEN_TMPL_LEN];
};

struct xdpgen_flow {
	__u16 sport_be; // network byte order, ready to store into the frame
	__u16 dport_be;
	__u16 chan_be;
	__u16 pad;
};

struct xdpgen_gen_stats {   // per CPU
	__u64 seq;          // frames generated (also picks the flow)
	__u64 offered;      // of those, generated inside the window
};

struct xdpgen_sink_stats {  // per CPU
	__u64 delivered;    // frames with the magic and a timestamp inside the window
	__u64 outside;      // frames with the magic, timestamp outside the window (dropped too)
	__u64 lat_sum_ns;   // sum of latencies of delivered frames
	__u64 lat_max_ns;   // largest latency of a delivered frame
	__u64 passed;       // everything else (XDP_PASS)
};

#endif
