// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
//
// This file alone is dual-licensed, unlike the rest of eeaturn (Apache-2.0): the kernel lets
// only GPL-compatible programs call bpf_fib_lookup, and "Dual BSD/GPL" is such a licence
// while the BSD side keeps the object usable inside the Apache-2.0 relay that embeds it (as
// other Apache-2.0 projects do with their BPF programs).
//
// eeaturn's kernel fast path: ChannelData over UDP/IPv4, both directions, for the paths user
// space installed. Everything else returns XDP_PASS and reaches the user-space relay exactly
// as without this program. Design: docs/design/kernel-fast-path.md.
//
// Two entry points share the code and differ in how a rewritten packet leaves:
//   eeaturn_lo      for loopback interfaces (generic mode): XDP_TX, back into `lo`'s receive
//                   path, where the socket layer delivers it;
//   eeaturn_routed  for every other interface (native mode where the driver has it): the
//                   kernel's routing table and neighbour cache (bpf_fib_lookup) name the
//                   egress interface and the MAC addresses, and the packet is redirected
//                   through the `egress` device map. Whatever the lookup cannot answer (no
//                   neighbour entry yet, fragmentation needed, an interface not in `egress`)
//                   passes untouched to user space, which sends it (and so resolves the
//                   neighbour for the next packet).
//
// Maps hold plain byte arrays in network byte order (the loader writes them with no `unsafe`):
//   to_peer   key: client ip(4) port(2) | server ip(4) port(2) | channel(2) | zero(2)
//             value: relay ip(4) port(2) | peer ip(4) port(2) | counter slot (u32, host order)
//   to_client key: relay ip(4) port(2) | peer ip(4) port(2)
//             value: client ip(4) port(2) | server ip(4) port(2) | channel(2) | zero(2)
//                    | counter slot (u32, host order)
//   counters  array of { to_peer packets, to_peer bytes, to_client packets, to_client bytes }
//             (u64 each, host order), one slot per path; bytes are payload bytes, as the
//             core counts them.
//   egress    device map: the interfaces eeaturn_routed may redirect to (ifindex -> ifindex).

#include <stdbool.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#define MAX_PATHS 65536
#define MAX_EGRESS 64
#define AF_INET 2
#define TTL 64
// The largest IP packet eeaturn_lo relays (an Ethernet MTU).
#define LO_MAX_IP_LEN 1500
// `lo` has this index in every network namespace.
#define LOOPBACK_IFINDEX 1
#define CHANNEL_DATA_HEADER 4
#define HEADERS (sizeof(struct ethhdr) + sizeof(struct iphdr) + sizeof(struct udphdr))

struct to_peer_key {
	__u8 client[6];
	__u8 server[6];
	__u8 channel[2];
	__u8 zero[2];
};

struct to_peer_value {
	__u8 relay[6];
	__u8 peer[6];
	__u32 slot;
};

struct to_client_key {
	__u8 relay[6];
	__u8 peer[6];
};

struct to_client_value {
	__u8 client[6];
	__u8 server[6];
	__u8 channel[2];
	__u8 zero[2];
	__u32 slot;
};

struct counters {
	__u64 to_peer_packets;
	__u64 to_peer_bytes;
	__u64 to_client_packets;
	__u64 to_client_bytes;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_PATHS);
	__type(key, struct to_peer_key);
	__type(value, struct to_peer_value);
} to_peer SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, MAX_PATHS);
	__type(key, struct to_client_key);
	__type(value, struct to_client_value);
} to_client SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, MAX_PATHS);
	__type(key, __u32);
	__type(value, struct counters);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_DEVMAP_HASH);
	__uint(max_entries, MAX_EGRESS);
	__type(key, __u32);
	__type(value, struct bpf_devmap_val);
} egress SEC(".maps");

// Where a rewritten packet goes: out of the interface it came in on (`routed` false: loopback),
// or to the interface and next hop the kernel's tables name.
struct hop {
	__u32 ifindex;
	__u8 smac[ETH_ALEN];
	__u8 dmac[ETH_ALEN];
};

// Writes an address (4 bytes) and port (2 bytes), both in network order, into the headers.
static __always_inline void set_src(struct iphdr *ip, struct udphdr *udp, const __u8 a[6])
{
	__builtin_memcpy(&ip->saddr, a, 4);
	__builtin_memcpy(&udp->source, a + 4, 2);
}

static __always_inline void set_dst(struct iphdr *ip, struct udphdr *udp, const __u8 a[6])
{
	__builtin_memcpy(&ip->daddr, a, 4);
	__builtin_memcpy(&udp->dest, a + 4, 2);
}

static __always_inline __u16 ip_checksum(const struct iphdr *ip)
{
	const __u16 *w = (const __u16 *)ip;
	__u32 sum = 0;
#pragma unroll
	for (int i = 0; i < (int)(sizeof(*ip) / 2); i++)
		sum += w[i];
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)~sum;
}

// Asks the kernel's routing table and neighbour cache how a packet from `src` to `dst` (IPv4
// address and port each, network order) of `ip_len` bytes leaves this host. Fails (and the
// caller passes the packet, untouched, to user space) unless there is a route, a resolved
// neighbour, an MTU that fits and an egress interface user space put in `egress`.
// The lookup is made as for a packet this host sends (input interface `lo`, as the kernel's
// own output route lookups do): the relay originates the rewritten packet, it does not forward
// the one it received. bpf_fib_lookup answers only when forwarding is on for the interface it
// is given, so the loader requires net.ipv4.conf.lo.forwarding = 1, which forwards nothing
// else: `lo` receives only what this host sent to itself.
static __always_inline int next_hop(struct xdp_md *ctx, const __u8 src[6], const __u8 dst[6],
				    __u16 ip_len, struct hop *hop)
{
	struct bpf_fib_lookup fib = {};

	fib.family = AF_INET;
	fib.l4_protocol = IPPROTO_UDP;
	__builtin_memcpy(&fib.sport, src + 4, 2);
	__builtin_memcpy(&fib.dport, dst + 4, 2);
	fib.tot_len = ip_len;
	__builtin_memcpy(&fib.ipv4_src, src, 4);
	__builtin_memcpy(&fib.ipv4_dst, dst, 4);
	fib.ifindex = LOOPBACK_IFINDEX;
	if (bpf_fib_lookup(ctx, &fib, sizeof(fib), 0) != BPF_FIB_LKUP_RET_SUCCESS)
		return -1;
	__u32 ifindex = fib.ifindex;
	if (!bpf_map_lookup_elem(&egress, &ifindex))
		return -1;
	hop->ifindex = ifindex;
	__builtin_memcpy(hop->smac, fib.smac, ETH_ALEN);
	__builtin_memcpy(hop->dmac, fib.dmac, ETH_ALEN);
	return 0;
}

// Whether XDP_TX on lo delivers a packet to `addr`: only to 127.0.0.0/8. A path from a client
// on lo to a peer elsewhere (a listener on 127.0.0.1, the relay address on another interface)
// goes to user space, which routes it.
static __always_inline bool on_lo(const __u8 addr[6])
{
	return addr[0] == 127;
}

// Sends a rewritten packet: back out of the interface it came in on, with the MAC addresses
// swapped (`hop` NULL: loopback, where they are zero anyway), or to `hop`.
static __always_inline int send(struct xdp_md *ctx, struct ethhdr *eth, const struct hop *hop)
{
	__u8 mac[ETH_ALEN];

	if (!hop) {
		__builtin_memcpy(mac, eth->h_source, ETH_ALEN);
		__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
		__builtin_memcpy(eth->h_dest, mac, ETH_ALEN);
		return XDP_TX;
	}
	__builtin_memcpy(eth->h_source, hop->smac, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, hop->dmac, ETH_ALEN);
	// A redirect also when the egress is the ingress, not XDP_TX: a veth wakes its peer for
	// XDP_TX frames only when the peer runs an XDP program itself (with GRO alone the frames
	// sit in the peer's ring), while a redirect always does.
	return bpf_redirect_map(&egress, hop->ifindex, 0);
}

// Finishes a rewritten packet: a fresh TTL (the relay sends it, as user space would), lengths,
// the IP checksum. The UDP checksum is left out (zero), which RFC 768 allows over IPv4; the
// program never handles IPv6.
static __always_inline void finish(struct iphdr *ip, struct udphdr *udp, __u16 udp_len)
{
	ip->ttl = TTL;
	ip->tot_len = bpf_htons(udp_len + sizeof(struct iphdr));
	ip->check = 0;
	ip->check = ip_checksum(ip);
	udp->len = bpf_htons(udp_len);
	udp->check = 0;
}

// Client -> peer: strip the ChannelData header (and the `pad` bytes of padding after the
// data, 0 to 3) and send the payload from the relay address.
static __always_inline int to_peer_path(struct xdp_md *ctx, const struct to_peer_value *path,
					__u16 payload_len, __u32 pad, bool routed)
{
	__u8 headers[HEADERS];
	struct hop hop;
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;

	if (data + HEADERS > end)
		return XDP_PASS;
	// The route first: a packet the kernel cannot send on goes to user space unchanged.
	if (routed && next_hop(ctx, path->relay, path->peer,
			       payload_len + sizeof(struct udphdr) + sizeof(struct iphdr), &hop))
		return XDP_PASS;
	if (!routed && !on_lo(path->peer))
		return XDP_PASS;
	if (pad > 3)
		return XDP_PASS;
	if (pad) {
		if (bpf_xdp_adjust_tail(ctx, -(int)pad))
			return XDP_PASS;
		data = (void *)(long)ctx->data;
		end = (void *)(long)ctx->data_end;
		if (data + HEADERS > end)
			return XDP_DROP;
	}
	__builtin_memcpy(headers, data, HEADERS);
	// The map value stays valid across bpf_xdp_adjust_head (only packet pointers do not):
	// read from it directly rather than through copies on the stack.
	if (bpf_xdp_adjust_head(ctx, CHANNEL_DATA_HEADER))
		return XDP_PASS;
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	if (data + HEADERS > end)
		return XDP_DROP;
	__builtin_memcpy(data, headers, HEADERS);
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	struct udphdr *udp = (void *)(ip + 1);
	set_src(ip, udp, path->relay);
	set_dst(ip, udp, path->peer);
	finish(ip, udp, payload_len + sizeof(struct udphdr));
	__u32 slot = path->slot;
	struct counters *c = bpf_map_lookup_elem(&counters, &slot);
	if (c) {
		__sync_fetch_and_add(&c->to_peer_packets, 1);
		__sync_fetch_and_add(&c->to_peer_bytes, payload_len);
	}
	return send(ctx, eth, routed ? &hop : NULL);
}

// Peer -> client: prepend the ChannelData header and send it from the listening address.
static __always_inline int to_client_path(struct xdp_md *ctx,
					  const struct to_client_value *path, __u16 payload_len,
					  bool routed)
{
	__u8 headers[HEADERS];
	struct hop hop;
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;

	if (data + HEADERS > end)
		return XDP_PASS;
	if (routed && next_hop(ctx, path->server, path->client,
			       payload_len + CHANNEL_DATA_HEADER + sizeof(struct udphdr) +
				       sizeof(struct iphdr),
			       &hop))
		return XDP_PASS;
	if (!routed && !on_lo(path->client))
		return XDP_PASS;
	__builtin_memcpy(headers, data, HEADERS);
	if (bpf_xdp_adjust_head(ctx, -CHANNEL_DATA_HEADER))
		return XDP_PASS;
	data = (void *)(long)ctx->data;
	end = (void *)(long)ctx->data_end;
	if (data + HEADERS + CHANNEL_DATA_HEADER > end)
		return XDP_DROP;
	__builtin_memcpy(data, headers, HEADERS);
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	struct udphdr *udp = (void *)(ip + 1);
	__u8 *cd = (void *)(udp + 1);
	cd[0] = path->channel[0];
	cd[1] = path->channel[1];
	cd[2] = payload_len >> 8;
	cd[3] = payload_len & 0xff;
	set_src(ip, udp, path->server);
	set_dst(ip, udp, path->client);
	finish(ip, udp, payload_len + CHANNEL_DATA_HEADER + sizeof(struct udphdr));
	__u32 slot = path->slot;
	struct counters *c = bpf_map_lookup_elem(&counters, &slot);
	if (c) {
		__sync_fetch_and_add(&c->to_client_packets, 1);
		__sync_fetch_and_add(&c->to_client_bytes, payload_len);
	}
	return send(ctx, eth, routed ? &hop : NULL);
}

static __always_inline int relay(struct xdp_md *ctx, bool routed)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	struct udphdr *udp = (void *)(ip + 1);
	__u8 *payload = (void *)(udp + 1);

	if ((void *)payload > end)
		return XDP_PASS;
	if (eth->h_proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	// No options, no fragments, UDP, and lengths that add up exactly: else user space.
	if (ip->version != 4 || ip->ihl != 5 || ip->protocol != IPPROTO_UDP)
		return XDP_PASS;
	if (ip->frag_off & bpf_htons(0x3fff))
		return XDP_PASS;
	__u16 ip_len = bpf_ntohs(ip->tot_len);
	__u16 udp_len = bpf_ntohs(udp->len);
	// The frame ends exactly where the IP header says. Its length comes from the helper, not
	// from packet pointers: without CAP_PERFMON the verifier refuses pointer subtraction and
	// variable offsets on packet pointers, and CAP_BPF with CAP_NET_ADMIN must be enough.
	if (bpf_xdp_get_buff_len(ctx) != sizeof(*eth) + (__u64)ip_len)
		return XDP_PASS;
	if (udp_len != ip_len - sizeof(*ip) || udp_len < sizeof(*udp))
		return XDP_PASS;
	// On lo a local sender's UDP GSO batch arrives as one skb, and generic XDP cannot see its
	// segment size: relaying it would send the batch as one datagram. Media datagrams fit an
	// Ethernet MTU and GSO batches of them do not, so on lo larger packets go to user space.
	// (Batches of smaller segments still pass here: docs/design/kernel-fast-path.md.)
	if (!routed && ip_len > LO_MAX_IP_LEN)
		return XDP_PASS;
	__u16 payload_len = udp_len - sizeof(*udp);

	// ChannelData from a client: channel numbers 0x4000-0x7FFF (the core accepts RFC 5766's
	// range too); the length exact, or padded to the next multiple of four, which RFC 8656
	// §12.5 allows over UDP (some clients always pad): the padding is not relayed. Any other
	// length goes to user space.
	if (payload_len >= CHANNEL_DATA_HEADER && (void *)(payload + CHANNEL_DATA_HEADER) <= end &&
	    (payload[0] & 0xc0) == 0x40) {
		__u16 cd_len = ((__u16)payload[2] << 8) | payload[3];
		struct to_peer_key key = {};
		__builtin_memcpy(key.client, &ip->saddr, 4);
		__builtin_memcpy(key.client + 4, &udp->source, 2);
		__builtin_memcpy(key.server, &ip->daddr, 4);
		__builtin_memcpy(key.server + 4, &udp->dest, 2);
		key.channel[0] = payload[0];
		key.channel[1] = payload[1];
		struct to_peer_value *path = bpf_map_lookup_elem(&to_peer, &key);
		if (path) {
			__u32 whole = cd_len + CHANNEL_DATA_HEADER;
			__u32 padded = (whole + 3) & ~3u;
			if (payload_len != whole && payload_len != padded)
				return XDP_PASS;
			return to_peer_path(ctx, path, cd_len, payload_len - whole, routed);
		}
	}

	// Data from a peer to a relay address, on a path with a bound channel.
	struct to_client_key key = {};
	__builtin_memcpy(key.relay, &ip->daddr, 4);
	__builtin_memcpy(key.relay + 4, &udp->dest, 2);
	__builtin_memcpy(key.peer, &ip->saddr, 4);
	__builtin_memcpy(key.peer + 4, &udp->source, 2);
	struct to_client_value *path = bpf_map_lookup_elem(&to_client, &key);
	if (!path)
		return XDP_PASS;
	if (ip_len > 0xffff - CHANNEL_DATA_HEADER)
		return XDP_PASS;
	return to_client_path(ctx, path, payload_len, routed);
}

// On loopback interfaces: a rewritten packet goes back out of `lo`, so into its receive path.
SEC("xdp")
int eeaturn_lo(struct xdp_md *ctx)
{
	return relay(ctx, false);
}

// On every other interface: a rewritten packet goes where the kernel's tables say.
SEC("xdp")
int eeaturn_routed(struct xdp_md *ctx)
{
	return relay(ctx, true);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
