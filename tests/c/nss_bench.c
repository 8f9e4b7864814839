/* The probe-cost benchmark's NSS program: a client and a server descriptor in one process, made
 * TLS by SSL_ImportFD over the two ends of a loopback TCP connection (non-blocking; NSS wants
 * an IP peer address, which a Unix socket pair lacks). After the handshake it
 * prints `ready`, then for each number N read on stdin it times N pairs of a 1 KiB PR_Write on
 * the client and a PR_Read of it on the server, and prints the nanoseconds per call.
 *
 * Usage: nss_bench DB_DIR (an NSS database holding certificate `bench` and its key) */
#include <nspr.h>
#include <nss.h>
#include <pk11pub.h>
#include <ssl.h>
#include <sslproto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static SECStatus accept_cert(void *arg, PRFileDesc *fd, PRBool check_sig, PRBool is_server) {
    (void)arg, (void)fd, (void)check_sig, (void)is_server;
    return SECSuccess;
}

static void fail(const char *what) {
    fprintf(stderr, "%s: NSPR error %d\n", what, (int)PR_GetError());
    exit(1);
}

static double now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

/* Reads exactly `len` bytes from `fd`, waiting out would-blocks (the peer's bytes are already in
 * the socket: a retry finds them). */
static void read_all(PRFileDesc *fd, char *buf, int len) {
    int got = 0;
    while (got < len) {
        int n = PR_Read(fd, buf + got, len - got);
        if (n > 0)
            got += n;
        else if (n == 0 || PR_GetError() != PR_WOULD_BLOCK_ERROR)
            fail("PR_Read");
    }
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: nss_bench DB_DIR\n");
        return 2;
    }
    char db[4096];
    snprintf(db, sizeof db, "sql:%s", argv[1]);
    if (NSS_Init(db) != SECSuccess || NSS_SetDomesticPolicy() != SECSuccess)
        fail("NSS_Init");
    if (SSL_ConfigServerSessionIDCache(0, 0, 0, NULL) != SECSuccess)
        fail("session cache");
    CERTCertificate *cert = PK11_FindCertFromNickname("bench", NULL);
    if (!cert)
        fail("certificate bench");
    SECKEYPrivateKey *key = PK11_FindKeyByAnyCert(cert, NULL);
    if (!key)
        fail("key of bench");

    PRFileDesc *pair[2];
    PRFileDesc *listener = PR_NewTCPSocket();
    PRNetAddr addr;
    PR_InitializeNetAddr(PR_IpAddrLoopback, 0, &addr);
    if (!listener || PR_Bind(listener, &addr) != PR_SUCCESS || PR_Listen(listener, 1) != PR_SUCCESS ||
        PR_GetSockName(listener, &addr) != PR_SUCCESS)
        fail("listen");
    pair[0] = PR_NewTCPSocket();
    if (!pair[0] || PR_Connect(pair[0], &addr, PR_INTERVAL_NO_TIMEOUT) != PR_SUCCESS)
        fail("connect");
    pair[1] = PR_Accept(listener, NULL, PR_INTERVAL_NO_TIMEOUT);
    if (!pair[1])
        fail("accept");
    PR_Close(listener);
    PRSocketOptionData nonblocking = {.option = PR_SockOpt_Nonblocking};
    nonblocking.value.non_blocking = PR_TRUE;
    PRFileDesc *c = SSL_ImportFD(NULL, pair[0]);
    PRFileDesc *s = SSL_ImportFD(NULL, pair[1]);
    if (!c || !s)
        fail("SSL_ImportFD");
    if (PR_SetSocketOption(c, &nonblocking) != PR_SUCCESS ||
        PR_SetSocketOption(s, &nonblocking) != PR_SUCCESS)
        fail("non-blocking");
    SSL_OptionSet(c, SSL_SECURITY, PR_TRUE);
    SSL_OptionSet(c, SSL_HANDSHAKE_AS_CLIENT, PR_TRUE);
    /* The benchmark measures record calls, not certificate checks. */
    SSL_AuthCertificateHook(c, accept_cert, NULL);
    SSL_SetURL(c, "bench");
    SSL_OptionSet(s, SSL_SECURITY, PR_TRUE);
    SSL_OptionSet(s, SSL_HANDSHAKE_AS_SERVER, PR_TRUE);
    if (SSL_ConfigServerCert(s, cert, key, NULL, 0) != SECSuccess)
        fail("server certificate");
    SSL_ResetHandshake(c, PR_FALSE);
    SSL_ResetHandshake(s, PR_TRUE);

    int cdone = 0, sdone = 0;
    for (int round = 0; !(cdone && sdone); round++) {
        if (round > 100000)
            fail("handshake did not finish");
        if (!cdone) {
            if (SSL_ForceHandshake(c) == SECSuccess)
                cdone = 1;
            else if (PR_GetError() != PR_WOULD_BLOCK_ERROR)
                fail("client handshake");
        }
        if (!sdone) {
            if (SSL_ForceHandshake(s) == SECSuccess)
                sdone = 1;
            else if (PR_GetError() != PR_WOULD_BLOCK_ERROR)
                fail("server handshake");
        }
    }
    /* TLS 1.3 session tickets arrive after the handshake: let the client take them. */
    char scratch[2048];
    while (PR_Read(c, scratch, sizeof scratch) > 0) {
    }

    char payload[1024];
    memset(payload, 'x', sizeof payload);
    printf("ready\n");
    fflush(stdout);
    char line[64];
    while (fgets(line, sizeof line, stdin)) {
        long n = atol(line);
        double t0 = now_ns();
        for (long i = 0; i < n; i++) {
            if (PR_Write(c, payload, sizeof payload) != (PRInt32)sizeof payload)
                fail("PR_Write");
            read_all(s, scratch, sizeof payload);
        }
        printf("%.1f\n", (now_ns() - t0) / (2.0 * (double)n));
        fflush(stdout);
    }
    PR_Close(c);
    PR_Close(s);
    NSS_Shutdown();
    return 0;
}
