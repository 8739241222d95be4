/* A bare UDP forwarder that batches: recvmmsg and sendmmsg, up to 64 datagrams per call.
 *
 *   batched LISTEN-ADDR:PORT PEER-ADDR:PORT
 *
 * Waits for at least one datagram, takes whatever else is queued (up to 64), and sends the
 * batch to PEER in one sendmmsg. No protocol work: the floor of what a batching relay can
 * cost. Exits on SIGTERM or SIGINT; prints nothing per packet. */
#include "common.h"

#define BATCH 64
#define SLOT 65536

int main(int argc, char **argv) {
    struct sockaddr_storage peer;
    socklen_t peer_len;
    int fd = fwd_setup(argc, argv, &peer, &peer_len);
    static char bufs[BATCH][SLOT];
    struct iovec iov[BATCH];
    struct mmsghdr in[BATCH], out[BATCH];
    memset(in, 0, sizeof in);
    memset(out, 0, sizeof out);
    for (int i = 0; i < BATCH; i++) {
        iov[i].iov_base = bufs[i];
        iov[i].iov_len = SLOT;
        in[i].msg_hdr.msg_iov = &iov[i];
        in[i].msg_hdr.msg_iovlen = 1;
    }
    unsigned long long forwarded = 0;
    struct iovec out_iov[BATCH];
    while (!fwd_stop) {
        int n = recvmmsg(fd, in, BATCH, MSG_WAITFORONE, NULL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            perror("recvmmsg");
            return 1;
        }
        for (int i = 0; i < n; i++) {
            out_iov[i].iov_base = bufs[i];
            out_iov[i].iov_len = in[i].msg_len;
            out[i].msg_hdr.msg_iov = &out_iov[i];
            out[i].msg_hdr.msg_iovlen = 1;
            out[i].msg_hdr.msg_name = &peer;
            out[i].msg_hdr.msg_namelen = peer_len;
        }
        int done = 0;
        while (done < n) {
            int s = sendmmsg(fd, out + done, (unsigned)(n - done), 0);
            if (s < 0) {
                if (errno == EINTR && !fwd_stop)
                    continue;
                break; /* drop the rest of the batch, as a full queue would */
            }
            done += s;
        }
        forwarded += (unsigned long long)done;
    }
    fprintf(stderr, "batched: forwarded %llu datagrams\n", forwarded);
    return 0;
}
