// SPDX-License-Identifier: Apache-2.0
//
// xdpgen: a UDP / TURN ChannelData packet generator and sink for one network interface,
// driven through BPF_PROG_RUN in XDP live-frames mode (kernel >= 5.18). See README.md.
//
// One process: loads xdpgen.bpf.o, attaches xdpgen_sink to --dev in native mode, runs
// xdpgen_gen through bpf_prog_test_run_opts (each XDP_TX of it leaves through --dev) until
// the measurement window ends, waits --drain-ms, reads the counters and the latency
// histogram, detaches the sink, and prints a summary on stderr and one JSON line on stdout.
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <linux/if_link.h>
#include <math.h> // isfinite (a macro: no -lm)
#include <net/if.h>
#include <net/if_arp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "xdpgen.h"

#define NS_PER_S 1000000000ULL
#define NS_PER_MS 1000000ULL
#define MAX_REPEAT 65536          // frames per test-run call, at most
#define CALL_TARGET_NS (5 * NS_PER_MS) // aim for calls of about 5 ms (saturating mode)
#define TICK_US_DEFAULT 1000       // paced mode
#define MAX_BEHIND_NS (100 * NS_PER_MS)
// Live frames: metadata and frame must fit a page with XDP headroom (256) and
// skb_shared_info (320).
#define MAX_TEST_DATA 3520
#define MAX_CPUS 1024

static volatile sig_atomic_t g_stop;
static int g_ifindex;
static int g_sink_fd = -1;
static bool g_attached;

static void on_signal(int sig)
{
	(void)sig;
	g_stop = 1;
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * NS_PER_S + (uint64_t)ts.tv_nsec;
}

static void detach_sink(void)
{
	if (!g_attached)
		return;
	LIBBPF_OPTS(bpf_xdp_attach_opts, opts, .old_prog_fd = g_sink_fd);
	int err = bpf_xdp_detach(g_ifindex, XDP_FLAGS_DRV_MODE | XDP_FLAGS_REPLACE, &opts);
	if (err)
		fprintf(stderr, "xdpgen: detaching the sink from ifindex %d failed: %s\n", g_ifindex,
			strerror(-err));
	g_attached = false;
}

// Setup failure: detach whatever is attached and exit non-zero.
static void __attribute__((noreturn, format(printf, 1, 2))) die(const char *fmt, ...)
{
	va_list ap;

	fputs("xdpgen: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	detach_sink();
	exit(1);
}

static void usage(FILE *f)
{
	fputs(
"Usage: xdpgen --dev IFNAME --dst-mac MAC --src-ip IPV4 --dst-ip IPV4\n"
"              --flows SPORT:DPORT:CHANNEL[,...] --payload BYTES\n"
"              [--rate PPS] [--tick-us US] [--warmup S] [--duration S] [--drain-ms MS]\n"
"              [--label TEXT] [--obj PATH] [--separate-gen]\n"
"\n"
"Generates UDP/IPv4 frames out of IFNAME with BPF_PROG_RUN in XDP live-frames mode (XDP_TX\n"
"of the program xdpgen_gen), and counts the frames that come back to IFNAME carrying its\n"
"magic with a native-mode XDP sink (xdpgen_sink) that drops them and measures their one-way\n"
"latency; every other frame passes to the stack. Needs root and kernel >= 5.18.\n"
"\n"
"  --dev IFNAME      interface to send from and to attach the sink to (native/driver mode);\n"
"                    its MAC address is the frames' source MAC\n"
"  --dst-mac MAC     destination MAC of the frames, aa:bb:cc:dd:ee:ff\n"
"  --src-ip IPV4     source IPv4 address of the frames\n"
"  --dst-ip IPV4     destination IPv4 address of the frames\n"
"  --flows LIST      comma-separated SPORT:DPORT:CHANNEL, 1 to 64 flows, used round-robin.\n"
"                    Ports 1..65535. CHANNEL 0: raw UDP datagrams; 0x4000..0x4FFF (decimal\n"
"                    or 0x hex): a TURN ChannelData header with that channel number comes\n"
"                    first. All flows must be raw or all ChannelData.\n"
"  --payload BYTES   application payload per frame (>= 16, after any ChannelData header):\n"
"                    8 bytes magic \"XDPGEN01\", 8 bytes timestamp, zeros\n"
"  --rate PPS        0 (default): as fast as possible; N: N frames per second, paced on\n"
"                    ticks of --tick-us (frames more than 100 ms overdue are skipped: \"late\")\n"
"  --tick-us US      the pacing tick, 10..1000000 us (default 1000). Each tick's frames leave\n"
"                    as one burst, so at high rates a short tick keeps bursts below the\n"
"                    receiver's ring (256 frames on a veth)\n"
"  --warmup S        seconds of load before the measurement window (default 1)\n"
"  --duration S      length of the measurement window in seconds (default 5)\n"
"  --drain-ms MS     wait after the window for frames still in flight (default 200)\n"
"  --label TEXT      copied into the JSON output\n"
"  --obj PATH        the BPF object (default: xdpgen.bpf.o next to this executable)\n"
"  --separate-gen    test-run the program xdpgen_gen instead of the attached xdpgen_sink\n"
"                    (which generates for frames carrying the run's cookie as metadata).\n"
"                    Each call then adds and removes xdpgen_gen from the kernel's XDP\n"
"                    dispatcher, two RCU grace periods: tens of ms per call. Comparison only.\n"
"  -h, --help        this text\n"
"\n"
"Output: a summary on stderr and one JSON line on stdout (see README.md). Counted frames are\n"
"those whose generation time lies in the window; latencies are reported as the upper edge of\n"
"their histogram bucket (1 us wide below 4096 us, powers of two above).\n",
	f);
}

// ---- argument parsing ----------------------------------------------------------------------

static void __attribute__((noreturn, format(printf, 2, 3))) bad_flag(const char *flag, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "xdpgen: %s: ", flag);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputs("\n(xdpgen --help lists the flags)\n", stderr);
	exit(2);
}

static bool parse_u64(const char *s, uint64_t *out, bool allow_hex)
{
	int base = 10;

	if (allow_hex && (s[0] == '0') && (s[1] == 'x' || s[1] == 'X')) {
		base = 16;
		s += 2;
	}
	if (!*s || *s == '-' || *s == '+' || *s == ' ')
		return false;
	char *e;
	errno = 0;
	unsigned long long v = strtoull(s, &e, base);
	if (errno || *e)
		return false;
	*out = v;
	return true;
}

static uint64_t flag_u64(const char *flag, const char *s, uint64_t min, uint64_t max)
{
	uint64_t v;

	if (!parse_u64(s, &v, false) || v < min || v > max)
		bad_flag(flag, "expected an integer in %llu..%llu, got '%s'", (unsigned long long)min,
			 (unsigned long long)max, s);
	return v;
}

static double flag_seconds(const char *flag, const char *s, double min, double max)
{
	char *e;

	errno = 0;
	double v = strtod(s, &e);
	if (errno || e == s || *e || !isfinite(v) || v < min || v > max)
		bad_flag(flag, "expected a number of seconds in %g..%g, got '%s'", min, max, s);
	return v;
}

static void flag_mac(const char *flag, const char *s, uint8_t mac[6])
{
	unsigned v[6];
	char tail;

	if (strlen(s) != 17 ||
	    sscanf(s, "%2x:%2x:%2x:%2x:%2x:%2x%c", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &tail) != 6)
		bad_flag(flag, "expected a MAC address like aa:bb:cc:dd:ee:ff, got '%s'", s);
	for (int i = 0; i < 6; i++)
		mac[i] = (uint8_t)v[i];
}

static void flag_ipv4(const char *flag, const char *s, struct in_addr *a)
{
	if (inet_pton(AF_INET, s, a) != 1)
		bad_flag(flag, "expected an IPv4 address like 198.18.1.2, got '%s'", s);
}

struct flow {
	uint16_t sport, dport, chan;
};

// Splits s at sep into at most max fields, keeping empty ones; returns the count, or max + 1
// when there are more.
static int split(char *s, char sep, char **f, int max)
{
	int n = 0;

	for (;;) {
		if (n == max)
			return max + 1;
		f[n++] = s;
		s = strchr(s, sep);
		if (!s)
			return n;
		*s++ = 0;
	}
}

static int flag_flows(const char *s, struct flow *flows)
{
	char *copy = strdup(s);
	char *items[XDPGEN_MAX_FLOWS];

	if (!copy)
		die("out of memory");
	int n = split(copy, ',', items, XDPGEN_MAX_FLOWS);
	if (n > XDPGEN_MAX_FLOWS)
		bad_flag("--flows", "more than %d flows", XDPGEN_MAX_FLOWS);
	for (int i = 0; i < n; i++) {
		char item[64];
		char *f[3];
		uint64_t sp, dp, ch;

		snprintf(item, sizeof(item), "%s", items[i]);
		if (split(items[i], ':', f, 3) != 3)
			bad_flag("--flows", "'%s' (flow %d) is not SPORT:DPORT:CHANNEL", item, i + 1);
		if (!parse_u64(f[0], &sp, false) || sp < 1 || sp > 65535)
			bad_flag("--flows", "'%s': source port must be 1..65535", item);
		if (!parse_u64(f[1], &dp, false) || dp < 1 || dp > 65535)
			bad_flag("--flows", "'%s': destination port must be 1..65535", item);
		if (!parse_u64(f[2], &ch, true) || (ch != 0 && (ch < 0x4000 || ch > 0x4fff)))
			bad_flag("--flows", "'%s': channel must be 0 (raw UDP) or 0x4000..0x4FFF "
				 "(16384..20479)", item);
		flows[i].sport = (uint16_t)sp;
		flows[i].dport = (uint16_t)dp;
		flows[i].chan = (uint16_t)ch;
		if (i > 0 && (flows[i].chan != 0) != (flows[0].chan != 0))
			bad_flag("--flows", "'%s': mixes raw (channel 0) and ChannelData flows; all flows "
				 "must be one or the other (they share one frame length)", item);
	}
	free(copy);
	return n;
}

// ---- frame ---------------------------------------------------------------------------------

static uint16_t ip_checksum(const uint8_t *h, size_t len)
{
	uint32_t sum = 0;

	for (size_t i = 0; i + 1 < len; i += 2)
		sum += (uint32_t)h[i] << 8 | h[i + 1];
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)~sum;
}

static void put16(uint8_t *p, uint16_t v)
{
	p[0] = v >> 8;
	p[1] = v & 0xff;
}

static size_t build_frame(uint8_t *fr, const uint8_t src_mac[6], const uint8_t dst_mac[6],
			  struct in_addr src, struct in_addr dst, const struct flow *f0, bool channel,
			  unsigned payload)
{
	size_t udp_len = 8 + (channel ? XDPGEN_CHANNEL_HDR : 0) + payload;
	size_t ip_len = 20 + udp_len;
	size_t len = 14 + ip_len;
	uint8_t *ip = fr + XDPGEN_OFF_IP, *udp = fr + XDPGEN_OFF_UDP, *app = fr + XDPGEN_OFF_PAYLOAD;

	memset(fr, 0, len);
	memcpy(fr, dst_mac, 6);
	memcpy(fr + 6, src_mac, 6);
	put16(fr + 12, 0x0800);
	ip[0] = 0x45;                // version 4, IHL 5
	put16(ip + 2, (uint16_t)ip_len);
	put16(ip + 6, 0x4000);       // DF
	ip[8] = 64;                  // TTL
	ip[9] = 17;                  // UDP
	memcpy(ip + 12, &src, 4);
	memcpy(ip + 16, &dst, 4);
	put16(ip + 10, ip_checksum(ip, 20));
	put16(udp, f0->sport);
	put16(udp + 2, f0->dport);
	put16(udp + 4, (uint16_t)udp_len); // checksum (udp + 6) stays 0: none
	if (channel) {
		put16(app, f0->chan);
		put16(app + 2, (uint16_t)payload);
		app += XDPGEN_CHANNEL_HDR;
	}
	for (int i = 0; i < 8; i++)
		app[i] = (uint8_t)(XDPGEN_MAGIC >> (56 - 8 * i));
	return len;
}

// ---- /proc/stat ----------------------------------------------------------------------------

struct cpu_times {
	int cpu;
	unsigned long long busy, total, idle;
};

struct stat_sample {
	bool taken;
	uint64_t t_ns;
	uint64_t self_cpu_ns; // user + system time of this process
	int n;
	struct cpu_times c[MAX_CPUS];
};

static void sample_stat(struct stat_sample *s)
{
	FILE *f = fopen("/proc/stat", "r");
	char line[512];
	uint64_t t0 = now_ns();

	s->n = 0;
	if (f) {
		while (fgets(line, sizeof(line), f) && s->n < MAX_CPUS) {
			int cpu;
			unsigned long long v[8] = {0};
			if (strncmp(line, "cpu", 3) != 0 || line[3] < '0' || line[3] > '9')
				continue;
			if (sscanf(line, "cpu%d %llu %llu %llu %llu %llu %llu %llu %llu", &cpu, &v[0], &v[1],
				   &v[2], &v[3], &v[4], &v[5], &v[6], &v[7]) < 8)
				continue;
			// user nice system idle iowait irq softirq steal
			unsigned long long busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
			s->c[s->n].cpu = cpu;
			s->c[s->n].busy = busy;
			s->c[s->n].total = busy + v[3] + v[4];
			s->c[s->n].idle = v[3] + v[4];
			s->n++;
		}
		fclose(f);
	}
	s->t_ns = t0 + (now_ns() - t0) / 2;
	struct rusage ru;
	if (getrusage(RUSAGE_SELF, &ru) == 0)
		s->self_cpu_ns = ((uint64_t)ru.ru_utime.tv_sec + (uint64_t)ru.ru_stime.tv_sec) * NS_PER_S +
				 ((uint64_t)ru.ru_utime.tv_usec + (uint64_t)ru.ru_stime.tv_usec) * 1000;
	s->taken = true;
}


// A CPU's busy time over the window, in clock ticks, as elapsed time less idle (and iowait)
// time. The kernel measures idle time exactly (with NO_HZ, from the idle entry and exit
// times), but charges user, system and softirq time by sampling at the timer tick: work
// paced by a timer (this tool's 1 ms ticks, and a relay's burst after each) can start right
// after one tick and end before the next, and then no busy tick is ever counted.
static double busy_ticks(const struct stat_sample *s0, const struct stat_sample *s1, int i, int j,
			 long clk_tck, double *pct)
{
	double elapsed = (double)(s1->t_ns - s0->t_ns) / 1e9 * (double)clk_tck;
	double idle = (double)(s1->c[i].idle - s0->c[j].idle);
	double busy = elapsed > idle ? elapsed - idle : 0.0;
	*pct = elapsed > 0 ? 100.0 * busy / elapsed : 0.0;
	return busy;
}

// ---- BPF -----------------------------------------------------------------------------------

static int libbpf_log(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	if (level == LIBBPF_DEBUG || level == LIBBPF_INFO)
		return 0;
	return vfprintf(stderr, fmt, ap);
}

static struct bpf_map *find_map(struct bpf_object *obj, const char *name)
{
	struct bpf_map *m = bpf_object__find_map_by_name(obj, name);

	if (!m)
		die("BPF object has no map %s (wrong --obj?)", name);
	return m;
}

static struct bpf_program *find_prog(struct bpf_object *obj, const char *name)
{
	struct bpf_program *p = bpf_object__find_program_by_name(obj, name);

	if (!p)
		die("BPF object has no program %s (wrong --obj?)", name);
	return p;
}

// Sums a per-CPU value of n u64 fields over all possible CPUs.
static void percpu_sum(int map_fd, uint32_t key, size_t nfields, uint64_t *out, uint64_t *max_of_field,
		       int max_field)
{
	int ncpu = libbpf_num_possible_cpus();
	size_t stride = (nfields * 8 + 7) / 8 * 8;
	uint64_t *buf = calloc((size_t)ncpu, stride);

	if (!buf)
		die("out of memory");
	memset(out, 0, nfields * 8);
	if (max_of_field)
		*max_of_field = 0;
	if (bpf_map_lookup_elem(map_fd, &key, buf) == 0) {
		for (int c = 0; c < ncpu; c++) {
			uint64_t *v = (uint64_t *)((char *)buf + (size_t)c * stride);
			for (size_t i = 0; i < nfields; i++)
				out[i] += v[i];
			if (max_of_field && v[max_field] > *max_of_field)
				*max_of_field = v[max_field];
		}
	} else {
		fprintf(stderr, "xdpgen: reading a per-CPU map (key %u) failed: %s\n", key, strerror(errno));
	}
	free(buf);
}

// Upper edge of histogram bucket b, in microseconds.
static uint64_t bucket_upper_us(int b)
{
	if (b < XDPGEN_LIN_BUCKETS)
		return (uint64_t)b + 1;
	return 1ULL << (13 + (b - XDPGEN_LIN_BUCKETS));
}

static int percentile_bucket(const uint64_t *hist, uint64_t total, double q)
{
	double w = q * (double)total;
	uint64_t want = (uint64_t)w, acc = 0;

	if ((double)want < w)
		want++; // ceil
	if (want == 0)
		want = 1;
	for (int b = 0; b < XDPGEN_BUCKETS; b++) {
		acc += hist[b];
		if (acc >= want)
			return b;
	}
	return XDPGEN_BUCKETS - 1;
}

static void json_string(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		if (c == '"' || c == '\\')
			fprintf(f, "\\%c", c);
		else if (c < 0x20)
			fprintf(f, "\\u%04x", c);
		else
			fputc(c, f);
	}
	fputc('"', f);
}

// ---- the run -------------------------------------------------------------------------------

struct gen_state {
	int prog_fd;
	const uint8_t *data; // metadata + frame
	size_t data_len;
	struct xdp_md ctx;
	uint64_t calls, errors, frames;
	int first_errno;
	uint64_t first_call_ns;
	int first_call_repeat;
	uint64_t max_call_ns;
	uint64_t total_call_ns;
	uint64_t last_call_ns;   // wall time of the last call
	uint64_t last_kernel_ns; // of which generating (the kernel's average per frame x frames)
};

// One test run of n frames; 0 or -errno. EINTR when a signal asked us to stop is not counted.
static int run_frames(struct gen_state *g, int n)
{
	LIBBPF_OPTS(bpf_test_run_opts, opts,
		.data_in = g->data,
		.data_size_in = (uint32_t)g->data_len,
		.ctx_in = &g->ctx,
		.ctx_size_in = sizeof(g->ctx),
		.repeat = n,
		.flags = BPF_F_TEST_XDP_LIVE_FRAMES,
		.batch_size = 0);
	uint64_t t0 = now_ns();
	int err = bpf_prog_test_run_opts(g->prog_fd, &opts);
	uint64_t dt = now_ns() - t0;

	if (err && errno == EINTR && g_stop)
		return -EINTR;
	g->calls++;
	if (g->calls == 1) {
		g->first_call_ns = dt;
		g->first_call_repeat = n;
	}
	if (dt > g->max_call_ns)
		g->max_call_ns = dt;
	g->last_call_ns = dt;
	g->total_call_ns += dt;
	// The kernel's own timing of its loop (excludes its setup and teardown, and the time
	// the thread was rescheduled).
	g->last_kernel_ns = opts.duration ? (uint64_t)opts.duration * (uint64_t)n : dt;
	if (err) {
		int e = errno ? errno : -err;
		g->errors++;
		if (g->errors == 1) {
			g->first_errno = e;
			fprintf(stderr, "xdpgen: bpf_prog_test_run_opts (repeat %d, %zu bytes in) failed: %s\n",
				n, g->data_len, strerror(e));
		}
		return -e;
	}
	g->frames += (uint64_t)n;
	return 0;
}

// A failed first test run means nothing can be generated at all: stop with the likely cause.
// Later failures are counted (run_frames) and the run goes on.
static void die_if_first_call(const struct gen_state *g, const char *dev)
{
	if (g->calls == 1)
		die("the first test run failed, nothing can be generated (needs kernel >= 5.18 for "
		    "BPF_F_TEST_XDP_LIVE_FRAMES, and a driver on %s that transmits XDP frames)", dev);
}

// Takes the /proc/stat samples when the clock crosses the window's edges. True once past the end.
static bool window_edges(struct stat_sample *s0, struct stat_sample *s1, uint64_t now,
			 uint64_t win_start, uint64_t win_end)
{
	if (!s0->taken && now >= win_start)
		sample_stat(s0);
	if (now >= win_end) {
		sample_stat(s1);
		return true;
	}
	return false;
}

int main(int argc, char **argv)
{
	const char *dev = NULL, *label = "", *obj_path = NULL;
	uint8_t dst_mac[6], src_mac[6];
	struct in_addr src_ip, dst_ip;
	bool have_mac = false, have_src = false, have_dst = false;
	struct flow flows[XDPGEN_MAX_FLOWS];
	int nflows = 0;
	uint64_t payload = 0, rate = 0, drain_ms = 200, tick_us = TICK_US_DEFAULT;
	bool have_payload = false, separate_gen = false;
	double warmup = 1.0, duration = 5.0;

	enum { O_DEV = 256, O_DMAC, O_SIP, O_DIP, O_FLOWS, O_PAYLOAD, O_RATE, O_WARMUP, O_DUR, O_DRAIN,
	       O_TICK, O_LABEL, O_OBJ, O_SEPARATE };
	static const struct option opts[] = {
		{"dev", required_argument, 0, O_DEV},
		{"dst-mac", required_argument, 0, O_DMAC},
		{"src-ip", required_argument, 0, O_SIP},
		{"dst-ip", required_argument, 0, O_DIP},
		{"flows", required_argument, 0, O_FLOWS},
		{"payload", required_argument, 0, O_PAYLOAD},
		{"rate", required_argument, 0, O_RATE},
		{"warmup", required_argument, 0, O_WARMUP},
		{"duration", required_argument, 0, O_DUR},
		{"drain-ms", required_argument, 0, O_DRAIN},
		{"tick-us", required_argument, 0, O_TICK},
		{"label", required_argument, 0, O_LABEL},
		{"obj", required_argument, 0, O_OBJ},
		{"separate-gen", no_argument, 0, O_SEPARATE},
		{"help", no_argument, 0, 'h'},
		{0, 0, 0, 0},
	};
	opterr = 0;
	int c;
	while ((c = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
		switch (c) {
		case O_DEV:
			if (!*optarg || strlen(optarg) >= IFNAMSIZ)
				bad_flag("--dev", "'%s' is not a valid interface name", optarg);
			dev = optarg;
			break;
		case O_DMAC: flag_mac("--dst-mac", optarg, dst_mac); have_mac = true; break;
		case O_SIP: flag_ipv4("--src-ip", optarg, &src_ip); have_src = true; break;
		case O_DIP: flag_ipv4("--dst-ip", optarg, &dst_ip); have_dst = true; break;
		case O_FLOWS: nflows = flag_flows(optarg, flows); break;
		case O_PAYLOAD:
			payload = flag_u64("--payload", optarg, XDPGEN_APP_MIN, 65535);
			have_payload = true;
			break;
		case O_RATE: rate = flag_u64("--rate", optarg, 0, 1000000000ULL); break;
		case O_WARMUP: warmup = flag_seconds("--warmup", optarg, 0, 3600); break;
		case O_DUR: duration = flag_seconds("--duration", optarg, 0.001, 86400); break;
		case O_DRAIN: drain_ms = flag_u64("--drain-ms", optarg, 0, 600000); break;
		case O_TICK: tick_us = flag_u64("--tick-us", optarg, 10, 1000000); break;
		case O_LABEL: label = optarg; break;
		case O_OBJ: obj_path = optarg; break;
		case O_SEPARATE: separate_gen = true; break;
		case 'h': usage(stdout); return 0;
		case ':':
			bad_flag(argv[optind - 1], "needs a value");
		default:
			bad_flag(optopt ? (char[]){'-', (char)optopt, 0} : argv[optind - 1], "unknown flag");
		}
	}
	if (optind < argc)
		bad_flag(argv[optind], "unexpected argument (all settings are --flags)");
	if (!dev) bad_flag("--dev", "required");
	if (!have_mac) bad_flag("--dst-mac", "required");
	if (!have_src) bad_flag("--src-ip", "required");
	if (!have_dst) bad_flag("--dst-ip", "required");
	if (!nflows) bad_flag("--flows", "required");
	if (!have_payload) bad_flag("--payload", "required");
	bool channel = flows[0].chan != 0;

	// ---- interface
	g_ifindex = (int)if_nametoindex(dev);
	if (!g_ifindex)
		bad_flag("--dev", "no interface named '%s' in this network namespace", dev);
	{
		int s = socket(AF_INET, SOCK_DGRAM, 0);
		struct ifreq ifr;
		if (s < 0)
			die("socket: %s", strerror(errno));
		memset(&ifr, 0, sizeof(ifr));
		strncpy(ifr.ifr_name, dev, IFNAMSIZ - 1);
		if (ioctl(s, SIOCGIFHWADDR, &ifr) < 0)
			die("SIOCGIFHWADDR on %s: %s", dev, strerror(errno));
		if (ifr.ifr_hwaddr.sa_family != ARPHRD_ETHER)
			bad_flag("--dev", "%s is not an Ethernet interface", dev);
		memcpy(src_mac, ifr.ifr_hwaddr.sa_data, 6);
		if (ioctl(s, SIOCGIFMTU, &ifr) < 0)
			die("SIOCGIFMTU on %s: %s", dev, strerror(errno));
		int mtu = ifr.ifr_mtu;
		close(s);
		uint64_t ip_len = 20 + 8 + (channel ? XDPGEN_CHANNEL_HDR : 0) + payload;
		if (ip_len > (uint64_t)mtu)
			bad_flag("--payload", "%llu bytes make IPv4 packets of %llu bytes, over the MTU of %s (%d)",
				 (unsigned long long)payload, (unsigned long long)ip_len, dev, mtu);
		if (XDPGEN_META_LEN + 14 + ip_len > MAX_TEST_DATA)
			bad_flag("--payload", "%llu bytes make frames of %llu bytes; live-frames mode takes at "
				 "most %d", (unsigned long long)payload, (unsigned long long)ip_len + 14,
				 MAX_TEST_DATA - XDPGEN_META_LEN);
	}

	// Test-run input: the cookie as XDP metadata (not with --separate-gen), then the frame.
	static uint8_t test_data[MAX_TEST_DATA];
	uint64_t cookie = 0;
	while (cookie == 0)
		if (getrandom(&cookie, sizeof(cookie), 0) != sizeof(cookie))
			die("getrandom: %s", strerror(errno));
	size_t meta_len = separate_gen ? 0 : XDPGEN_META_LEN;
	memcpy(test_data, &cookie, meta_len);
	uint8_t *frame = test_data + meta_len;
	size_t frame_len = build_frame(frame, src_mac, dst_mac, src_ip, dst_ip, &flows[0], channel,
				       (unsigned)payload);

	// ---- BPF object
	char obj_buf[PATH_MAX];
	if (!obj_path) {
		char exe[PATH_MAX];
		ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
		if (n < 0)
			die("readlink /proc/self/exe: %s", strerror(errno));
		exe[n] = 0;
		snprintf(obj_buf, sizeof(obj_buf), "%s/xdpgen.bpf.o", dirname(exe));
		obj_path = obj_buf;
	}
	libbpf_set_print(libbpf_log);
	struct bpf_object *obj = bpf_object__open_file(obj_path, NULL);
	long oerr = libbpf_get_error(obj);
	if (oerr)
		die("opening BPF object %s: %s (build it with build.sh, or give --obj)", obj_path,
		    strerror((int)-oerr));
	int err = bpf_object__load(obj);
	if (err)
		die("loading BPF object %s: %s (root? kernel with BPF and XDP?)", obj_path, strerror(-err));
	int gen_fd = bpf_program__fd(find_prog(obj, "xdpgen_gen"));
	g_sink_fd = bpf_program__fd(find_prog(obj, "xdpgen_sink"));
	int cfg_fd = bpf_map__fd(find_map(obj, "xdpgen_cfg"));
	int flows_fd = bpf_map__fd(find_map(obj, "xdpgen_flows"));
	int tmpl_fd = bpf_map__fd(find_map(obj, "xdpgen_tmpl"));
	int gstat_fd = bpf_map__fd(find_map(obj, "xdpgen_gen_stats"));
	int sstat_fd = bpf_map__fd(find_map(obj, "xdpgen_sink_stats"));
	int hist_fd = bpf_map__fd(find_map(obj, "xdpgen_hist"));

	for (int i = 0; i < nflows; i++) {
		struct xdpgen_flow f = {
			.sport_be = htons(flows[i].sport),
			.dport_be = htons(flows[i].dport),
			.chan_be = htons(flows[i].chan),
		};
		uint32_t k = (uint32_t)i;
		if (bpf_map_update_elem(flows_fd, &k, &f, BPF_ANY))
			die("writing the flow map: %s", strerror(errno));
	}
	{
		struct xdpgen_tmpl t;
		uint32_t k = 0;
		memcpy(t.b, frame, XDPGEN_TMPL_LEN);
		if (bpf_map_update_elem(tmpl_fd, &k, &t, BPF_ANY))
			die("writing the template map: %s", strerror(errno));
	}
	// The window is set just before generating; until then it is empty.
	struct xdpgen_cfg cfg = {.gen_cookie = cookie, .nflows = (uint32_t)nflows, .channel = channel};
	uint32_t zero = 0;
	if (bpf_map_update_elem(cfg_fd, &zero, &cfg, BPF_ANY))
		die("writing the config map: %s", strerror(errno));

	// ---- signals, then the sink
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal; // no SA_RESTART: sleeps and test runs return early
	sigemptyset(&sa.sa_mask);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	err = bpf_xdp_attach(g_ifindex, g_sink_fd, XDP_FLAGS_DRV_MODE | XDP_FLAGS_UPDATE_IF_NOEXIST, NULL);
	if (err) {
		if (err == -EBUSY || err == -EEXIST)
			die("attaching the sink to %s in native mode: %s (another XDP program is attached; "
			    "xdpgen does not replace it)", dev, strerror(-err));
		die("attaching the sink to %s in native (driver) mode failed: %s (does the driver support "
		    "native XDP?)", dev, strerror(-err));
	}
	g_attached = true;

	// ---- generate
	struct gen_state g = {.prog_fd = separate_gen ? gen_fd : g_sink_fd, .data = test_data,
			      .data_len = meta_len + frame_len};
	g.ctx.ingress_ifindex = (uint32_t)g_ifindex;
	g.ctx.rx_queue_index = 0;
	g.ctx.data = (uint32_t)meta_len; // metadata length
	g.ctx.data_end = (uint32_t)(meta_len + frame_len);

	static struct stat_sample s0, s1;
	uint64_t late = 0;
	uint64_t t_gen0 = now_ns();
	uint64_t win_start = t_gen0 + (uint64_t)(warmup * 1e9 + 0.5);
	uint64_t win_end = win_start + (uint64_t)(duration * 1e9 + 0.5);
	cfg.win_start_ns = win_start;
	cfg.win_end_ns = win_end;
	if (bpf_map_update_elem(cfg_fd, &zero, &cfg, BPF_ANY))
		die("writing the config map: %s", strerror(errno));

	if (rate == 0) {
		double ns_per_frame = 0; // measured
		while (!g_stop) {
			uint64_t now = now_ns();
			if (window_edges(&s0, &s1, now, win_start, win_end))
				break;
			uint64_t boundary = s0.taken ? win_end : win_start;
			uint64_t budget = boundary - now;
			if (budget > CALL_TARGET_NS)
				budget = CALL_TARGET_NS;
			int n;
			if (ns_per_frame == 0)
				n = boundary - now >= 200 * NS_PER_MS ? MAX_REPEAT : 1024;
			else {
				double f = (double)budget / ns_per_frame;
				n = f > MAX_REPEAT ? MAX_REPEAT : f < 1 ? 1 : (int)f;
			}
			int r = run_frames(&g, n);
			if (r == -EINTR && g_stop)
				break;
			if (r) {
				die_if_first_call(&g, dev);
				struct timespec ms = {0, (long)NS_PER_MS};
				nanosleep(&ms, NULL);
				continue;
			}
			if (n >= 64) {
				// Plan on wall time; with --separate-gen on the generating time alone, as
				// each call then also waits a fixed time for the XDP dispatcher updates.
				double m = (double)(separate_gen ? g.last_kernel_ns : g.last_call_ns) / n;
				ns_per_frame = ns_per_frame == 0 ? m : (3 * ns_per_frame + m) / 4;
			}
		}
	} else {
		uint64_t sent = 0;
		uint64_t tick = t_gen0;
		const uint64_t tick_ns = tick_us * 1000;
		uint64_t per_tick = rate * tick_us / 1000000 ? rate * tick_us / 1000000 : 1;
		// Wake-ups on time at short ticks: no timer slack.
		prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
		uint64_t max_due = rate / 10 > per_tick ? rate / 10 : per_tick;
		while (!g_stop) {
			tick += tick_ns;
			struct timespec ts = {(time_t)(tick / NS_PER_S), (long)(tick % NS_PER_S)};
			int sr = clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
			if (sr == EINTR && g_stop)
				break;
			uint64_t now = now_ns();
			if (window_edges(&s0, &s1, now, win_start, win_end))
				break;
			if (now > tick + tick_ns)
				tick = now; // a slow call: do not replay the missed ticks
			uint64_t should = (uint64_t)((double)(now - t_gen0) * (double)rate / 1e9);
			uint64_t due = should > sent + late ? should - sent - late : 0;
			if (due > max_due) {
				late += due - per_tick;
				due = per_tick;
			}
			while (due > 0 && !g_stop) {
				int n = due > MAX_REPEAT ? MAX_REPEAT : (int)due;
				int r = run_frames(&g, n);
				if (r == -EINTR && g_stop)
					break;
				if (r) {
					die_if_first_call(&g, dev);
					break;
				}
				sent += (uint64_t)n;
				due -= (uint64_t)n;
			}
		}
	}
	uint64_t t_stop = now_ns();
	bool interrupted = g_stop;
	if (interrupted && s0.taken && !s1.taken)
		sample_stat(&s1);

	if (!interrupted && drain_ms) {
		struct timespec d = {(time_t)(drain_ms / 1000), (long)(drain_ms % 1000) * (long)NS_PER_MS};
		while (nanosleep(&d, &d) == -1 && errno == EINTR && !g_stop)
			;
	}

	// ---- read the counters, then detach
	uint64_t gs[2], ss[5], lat_max_exact;
	percpu_sum(gstat_fd, 0, 2, gs, NULL, 0);
	percpu_sum(sstat_fd, 0, 5, ss, &lat_max_exact, 3);
	static uint64_t hist[XDPGEN_BUCKETS];
	uint64_t hist_total = 0;
	for (int b = 0; b < XDPGEN_BUCKETS; b++) {
		percpu_sum(hist_fd, (uint32_t)b, 1, &hist[b], NULL, 0);
		hist_total += hist[b];
	}
	detach_sink();
	bpf_object__close(obj);

	uint64_t offered = gs[1], delivered = ss[0];
	// Length of the window the counts cover: all of it, unless interrupted.
	double covered_s = duration;
	if (interrupted) {
		double c2 = t_stop > win_start ? (double)(t_stop - win_start) / 1e9 : 0;
		if (c2 < covered_s)
			covered_s = c2;
	}
	double offered_pps = covered_s > 0 ? (double)offered / covered_s : 0;
	double delivered_pps = covered_s > 0 ? (double)delivered / covered_s : 0;
	double loss_pct = offered ? 100.0 * ((double)offered - (double)delivered) / (double)offered : 0;
	double window_s = s0.taken && s1.taken ? (double)(s1.t_ns - s0.t_ns) / 1e9 : 0;
	double self_cpu_pct = window_s > 0 ? 100.0 * (double)(s1.self_cpu_ns - s0.self_cpu_ns) / 1e9 / window_s : 0;
	long clk_tck = sysconf(_SC_CLK_TCK);
	int p50 = -1, p99 = -1, p999 = -1, pmax = -1;
	if (hist_total) {
		p50 = percentile_bucket(hist, hist_total, 0.50);
		p99 = percentile_bucket(hist, hist_total, 0.99);
		p999 = percentile_bucket(hist, hist_total, 0.999);
		for (int b = XDPGEN_BUCKETS - 1; b >= 0; b--)
			if (hist[b]) {
				pmax = b;
				break;
			}
	}

	// ---- human summary
	fprintf(stderr, "xdpgen %s%s%s: dev %s, %d %s flow(s), payload %llu, frame %zu bytes, rate %s\n",
		*label ? "[" : "", label, *label ? "]" : "", dev, nflows, channel ? "ChannelData" : "raw UDP",
		(unsigned long long)payload, frame_len, rate ? "paced" : "saturating");
	if (separate_gen)
		fputs("  generator     xdpgen_gen (--separate-gen)\n", stderr);
	if (rate)
		fprintf(stderr, "  target rate   %llu pps, late (skipped) %llu\n", (unsigned long long)rate,
			(unsigned long long)late);
	if (interrupted)
		fprintf(stderr, "  window        INTERRUPTED after %.3f s of %.3f s (stat samples %.3f s apart)\n",
			covered_s, duration, window_s);
	else
		fprintf(stderr, "  window        %.3f s (stat samples %.3f s apart)\n", duration, window_s);
	fprintf(stderr, "  offered       %llu (%.0f pps)\n", (unsigned long long)offered, offered_pps);
	fprintf(stderr, "  delivered     %llu (%.0f pps), loss %.3f%%\n", (unsigned long long)delivered,
		delivered_pps, loss_pct);
	fprintf(stderr, "  sink          %llu ours outside the window, %llu passed\n",
		(unsigned long long)ss[1], (unsigned long long)ss[4]);
	if (hist_total)
		fprintf(stderr, "  latency us    p50 <=%llu  p99 <=%llu  p99.9 <=%llu  max <=%llu (exact %.1f)  mean %.1f\n",
			(unsigned long long)bucket_upper_us(p50), (unsigned long long)bucket_upper_us(p99),
			(unsigned long long)bucket_upper_us(p999), (unsigned long long)bucket_upper_us(pmax),
			(double)lat_max_exact / 1000.0, (double)ss[2] / 1000.0 / (double)delivered);
	fprintf(stderr, "  test runs     %llu calls, %llu frames, %llu errors%s%s; first call: repeat %d in %.3f ms; mean call %.3f ms, longest %.3f ms\n",
		(unsigned long long)g.calls, (unsigned long long)g.frames, (unsigned long long)g.errors,
		g.errors ? ", first: " : "", g.errors ? strerror(g.first_errno) : "", g.first_call_repeat,
		(double)g.first_call_ns / 1e6, g.calls ? (double)g.total_call_ns / 1e6 / (double)g.calls : 0.0,
		(double)g.max_call_ns / 1e6);
	if (s0.taken && s1.taken) {
		fputs("  cpu busy      ", stderr);
		for (int i = 0; i < s1.n; i++)
			for (int j = 0; j < s0.n; j++)
				if (s0.c[j].cpu == s1.c[i].cpu) {
					double pct;
					double busy = busy_ticks(&s0, &s1, i, j, clk_tck, &pct);
					unsigned long long sampled = s1.c[i].busy - s0.c[j].busy;
					fprintf(stderr, "cpu%d %.1f%% (%.1f ticks; %llu sampled)  ", s1.c[i].cpu,
						pct, busy, sampled);
				}
		fprintf(stderr, "[CLK_TCK %ld]\n  xdpgen itself %.1f%% of one CPU (user+system, with any softirq work "
			"run on its thread)\n", clk_tck, self_cpu_pct);
	}

	if (offered && !delivered && !interrupted)
		fprintf(stderr, "  note: nothing came back. On a veth pair, the peer accepts XDP frames only with "
			"GRO on (ethtool -K PEER gro on) or an XDP program of its own; ethtool -S %s shows "
			"tx_queue_*_xdp_xmit(_errors).\n", dev);

	// ---- JSON
	FILE *o = stdout;
	fputs("{\"label\":", o);
	json_string(o, label);
	fputs(",\"dev\":", o);
	json_string(o, dev);
	fprintf(o, ",\"flows\":%d,\"payload\":%llu,\"frame_len\":%zu,\"channel\":%s,\"rate\":%llu",
		nflows, (unsigned long long)payload, frame_len, channel ? "true" : "false",
		(unsigned long long)rate);
	fprintf(o, ",\"separate_gen\":%s", separate_gen ? "true" : "false");
	fprintf(o, ",\"warmup_s\":%g,\"duration_s\":%g,\"window_s\":%.6f,\"interrupted\":%s", warmup,
		duration, window_s, interrupted ? "true" : "false");
	fprintf(o, ",\"offered\":%llu,\"delivered\":%llu,\"offered_pps\":%.1f,\"delivered_pps\":%.1f,\"loss_pct\":%.4f,\"late\":%llu",
		(unsigned long long)offered, (unsigned long long)delivered, offered_pps, delivered_pps,
		loss_pct, (unsigned long long)late);
	fprintf(o, ",\"sink_outside_window\":%llu,\"sink_passed\":%llu", (unsigned long long)ss[1],
		(unsigned long long)ss[4]);
	if (hist_total)
		fprintf(o, ",\"lat_p50_us\":%llu,\"lat_p99_us\":%llu,\"lat_p999_us\":%llu,\"lat_max_us\":%llu,\"lat_mean_us\":%.3f",
			(unsigned long long)bucket_upper_us(p50), (unsigned long long)bucket_upper_us(p99),
			(unsigned long long)bucket_upper_us(p999), (unsigned long long)bucket_upper_us(pmax),
			(double)ss[2] / 1000.0 / (double)delivered);
	else
		fputs(",\"lat_p50_us\":null,\"lat_p99_us\":null,\"lat_p999_us\":null,\"lat_max_us\":null,\"lat_mean_us\":null", o);
	fprintf(o, ",\"test_run_calls\":%llu,\"test_run_frames\":%llu,\"test_run_errors\":%llu",
		(unsigned long long)g.calls, (unsigned long long)g.frames, (unsigned long long)g.errors);
	fputs(",\"test_run_first_error\":", o);
	if (g.errors)
		json_string(o, strerror(g.first_errno));
	else
		fputs("null", o);
	fprintf(o, ",\"first_call_repeat\":%d,\"first_call_ms\":%.3f,\"mean_call_ms\":%.3f,\"max_call_ms\":%.3f",
		g.first_call_repeat, (double)g.first_call_ns / 1e6,
		g.calls ? (double)g.total_call_ns / 1e6 / (double)g.calls : 0.0, (double)g.max_call_ns / 1e6);
	fputs(",\"cpu\":[", o);
	bool first = true;
	if (s0.taken && s1.taken)
		for (int i = 0; i < s1.n; i++)
			for (int j = 0; j < s0.n; j++)
				if (s0.c[j].cpu == s1.c[i].cpu) {
					double pct;
					double busy = busy_ticks(&s0, &s1, i, j, clk_tck, &pct);
					unsigned long long sampled = s1.c[i].busy - s0.c[j].busy;
					fprintf(o, "%s{\"cpu\":%d,\"busy_pct\":%.2f,\"busy_jiffies\":%.2f,"
						"\"sampled_busy_jiffies\":%llu}",
						first ? "" : ",", s1.c[i].cpu, pct, busy, sampled);
					first = false;
				}
	fprintf(o, "],\"clk_tck\":%ld,\"self_cpu_pct\":%.2f}\n", clk_tck, self_cpu_pct);
	fflush(o);
	return interrupted ? 130 : 0;
}
