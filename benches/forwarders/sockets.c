/* A bare UDP forwarder shaped like a TURN relay: one sending socket per client.
 *
 *   sockets LISTEN-ADDR:PORT PEER-ADDR:PORT
 *
 * A TURN server gives every allocation its own relayed transport address, so what it sends
 * to peers leaves from one socket per allocation. This forwarder does the same with no
 * protocol work: the first datagram from a client address opens a socket for that client
 * (bound to the listening address, any port); every datagram from that client is sent to
 * PEER from that socket. Like `batched`, it waits for at least one datagram and takes
 * whatever else is queued (up to 64); it then sends each client's datagrams of the batch, in
 * order, with one system call per client: a run of equal-sized datagrams (the last may be
 * shorter) as one UDP GSO message, anything else with sendmmsg. That is the least a relay
 * with a socket per allocation can ask of the kernel, so it is the floor such a relay's cost
 * per packet can reach; `batched`, sending everything from one socket, is lower still but is
 * not a shape a TURN server can take.
 *
 * Up to 4096 clients (clients.h); datagrams from more are dropped. Exits on SIGTERM or
 * SIGINT; prints nothing per packet. */
#include "clients.h"

#include <netinet/udp.h>

#ifndef UDP_SEGMENT
#define UDP_SEGMENT 103
#endif

#define BATCH 64
#define SLOT 65536
/* The kernel's limits for one GSO message, as in eeaturn's relay. */
#define GSO_MAX_SEGMENTS 64
#define GSO_MAX_BYTES 65000
#define GSO_MAX_SEGMENT 1452

/* Sends datagrams idx[0..n) of the batch from fd to peer: one GSO message when they form a
 * run, else one sendmmsg. Returns how many went out. */
static int send_group(int fd, const int *idx, int n, char bufs[][SLOT], const struct mmsghdr *in,
                      struct sockaddr_storage *peer, socklen_t peer_len) {
    static struct iovec iov[BATCH];
    static struct mmsghdr out[BATCH];
    size_t seg = in[idx[0]].msg_len, total = 0;
    int run = n > 1 && n <= GSO_MAX_SEGMENTS && seg <= GSO_MAX_SEGMENT;
    for (int k = 0; k < n; k++) {
        size_t len = in[idx[k]].msg_len;
        iov[k].iov_base = bufs[idx[k]];
        iov[k].iov_len = len;
        total += len;
        if (len > seg || (len < seg && k != n - 1))
            run = 0;
    }
    if (run && total <= GSO_MAX_BYTES) {
        union {
            char buf[CMSG_SPACE(sizeof(unsigned short))];
            struct cmsghdr align;
        } control;
        memset(&control, 0, sizeof control);
        struct msghdr msg = {
            .msg_name = peer,
            .msg_namelen = peer_len,
            .msg_iov = iov,
            .msg_iovlen = (size_t)n,
            .msg_control = control.buf,
            .msg_controllen = sizeof control.buf,
        };
        struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
        c->cmsg_level = SOL_UDP;
        c->cmsg_type = UDP_SEGMENT;
        c->cmsg_len = CMSG_LEN(sizeof(unsigned short));
        unsigned short size = (unsigned short)seg;
        memcpy(CMSG_DATA(c), &size, sizeof size);
        return sendmsg(fd, &msg, 0) < 0 ? 0 : n;
    }
    for (int k = 0; k < n; k++) {
        memset(&out[k], 0, sizeof out[k]);
        out[k].msg_hdr.msg_iov = &iov[k];
        out[k].msg_hdr.msg_iovlen = 1;
        out[k].msg_hdr.msg_name = peer;
        out[k].msg_hdr.msg_namelen = peer_len;
    }
    int done = 0;
    while (done < n) {
        int s = sendmmsg(fd, out + done, (unsigned)(n - done), 0);
        if (s < 0) {
            if (errno == EINTR && !fwd_stop)
                continue;
            break; /* drop the rest, as a full queue would */
        }
        done += s;
    }
    return done;
}

int main(int argc, char **argv) {
    struct sockaddr_storage peer;
    socklen_t peer_len;
    int fd = fwd_setup(argc, argv, &peer, &peer_len);
    clients_init(fd);
    static char bufs[BATCH][SLOT];
    static struct sockaddr_storage from[BATCH];
    struct iovec iov[BATCH];
    struct mmsghdr in[BATCH];
    memset(in, 0, sizeof in);
    for (int i = 0; i < BATCH; i++) {
        iov[i].iov_base = bufs[i];
        iov[i].iov_len = SLOT;
        in[i].msg_hdr.msg_iov = &iov[i];
        in[i].msg_hdr.msg_iovlen = 1;
    }
    int fds[BATCH], done[BATCH], idx[BATCH];
    unsigned long long forwarded = 0;
    while (!fwd_stop) {
        for (int i = 0; i < BATCH; i++) {
            in[i].msg_hdr.msg_name = &from[i];
            in[i].msg_hdr.msg_namelen = sizeof from[i];
        }
        int n = recvmmsg(fd, in, BATCH, MSG_WAITFORONE, NULL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            perror("recvmmsg");
            return 1;
        }
        for (int i = 0; i < n; i++) {
            fds[i] = client_fd(&from[i]);
            done[i] = fds[i] < 0;
        }
        /* Each client's datagrams in their order, clients in the order of their first. */
        for (int i = 0; i < n; i++) {
            if (done[i])
                continue;
            int m = 0;
            for (int j = i; j < n; j++) {
                if (!done[j] && fds[j] == fds[i]) {
                    idx[m++] = j;
                    done[j] = 1;
                }
            }
            forwarded += (unsigned long long)send_group(fds[i], idx, m, bufs, in, &peer, peer_len);
        }
    }
    fprintf(stderr, "sockets: forwarded %llu datagrams to %d clients' sockets\n", forwarded, clients);
    return 0;
}
