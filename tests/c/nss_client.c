/* An HTTPS client on NSS (PR_Write/PR_Send, PR_Read/PR_Recv on descriptors SSL_ImportFD made
 * TLS), built by the end-to-end tests against libnss3. Usage: nss_client PORT
 *
 * Connection A is made and used before the client says `ready` (before an agent attaches);
 * connection B after. B's charge goes first, then A carries the declined charge and the 404:
 * a tracer must recognise A as TLS though it never saw A being made TLS. */
#define _GNU_SOURCE
#include <nspr.h>
#include <nss.h>
#include <ssl.h>
#include <sslproto.h>

struct conn {
    PRFileDesc *fd;
};
static int tls_write(struct conn *c, const char *buf, int len, int variant) {
    return variant ? PR_Send(c->fd, buf, len, 0, PR_INTERVAL_NO_TIMEOUT) : PR_Write(c->fd, buf, len);
}
static int tls_read(struct conn *c, char *buf, int cap, int variant) {
    return variant ? PR_Recv(c->fd, buf, cap, 0, PR_INTERVAL_NO_TIMEOUT) : PR_Read(c->fd, buf, cap);
}
#include "http_driver.h"

/* The test API's certificate is made per run by its own CA: accepted as is. */
static SECStatus accept_cert(void *arg, PRFileDesc *fd, PRBool check_sig, PRBool is_server) {
    (void)arg, (void)fd, (void)check_sig, (void)is_server;
    return SECSuccess;
}

static PRFileDesc *tls_connect(int port) {
    PRFileDesc *tcp = PR_NewTCPSocket();
    PRFileDesc *fd = SSL_ImportFD(NULL, tcp);
    if (!fd) return NULL;
    SSL_OptionSet(fd, SSL_SECURITY, PR_TRUE);
    SSL_OptionSet(fd, SSL_HANDSHAKE_AS_CLIENT, PR_TRUE);
    SSL_AuthCertificateHook(fd, accept_cert, NULL);
    SSL_SetURL(fd, "localhost");
    PRNetAddr addr;
    PR_InitializeNetAddr(PR_IpAddrLoopback, (PRUint16)port, &addr);
    if (PR_Connect(fd, &addr, PR_INTERVAL_NO_TIMEOUT) != PR_SUCCESS) return NULL;
    if (SSL_ForceHandshake(fd) != SECSuccess) return NULL;
    return fd;
}

int main(int argc, char **argv) {
    if (argc != 2) return 2;
    int port = atoi(argv[1]);
    http_port = port;
    if (NSS_NoDB_Init(NULL) != SECSuccess || NSS_SetDomesticPolicy() != SECSuccess) return 2;
    struct conn a = {tls_connect(port)};
    if (!a.fd) return 2;
    if (exchange(&a, "GET", "/v1/customers/cus_warmup", "", NULL, 0) != 200) return 2;
    wait_for_go();
    struct conn b = {tls_connect(port)};
    if (!b.fd) return 2;
    int rc = run_calls(&b, &a);
    PR_Close(b.fd);
    PR_Close(a.fd);
    NSS_Shutdown();
    return rc;
}
