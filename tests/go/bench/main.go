// Times crypto/tls (*Conn).Write + (*Conn).Read pairs with 1 KiB payloads between a client and a
// server joined by an in-memory connection (no sockets, no syscalls), for the probe-cost
// benchmark. Prints "ready"; then for each number N read from stdin, times N pairs and prints
// the nanoseconds per call (a Write or a Read).
package main

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// pipe is one direction of the in-memory connection: writes append, reads take what is there
// (waiting only while nothing is).
type pipe struct {
	mu   sync.Mutex
	cond *sync.Cond
	buf  []byte
}

func newPipe() *pipe {
	p := &pipe{}
	p.cond = sync.NewCond(&p.mu)
	return p
}

func (p *pipe) write(b []byte) {
	p.mu.Lock()
	p.buf = append(p.buf, b...)
	p.mu.Unlock()
	p.cond.Signal()
}

func (p *pipe) read(b []byte) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	for len(p.buf) == 0 {
		p.cond.Wait()
	}
	n := copy(b, p.buf)
	p.buf = p.buf[n:]
	return n
}

type memConn struct {
	in, out *pipe
}

func (c memConn) Read(b []byte) (int, error)         { return c.in.read(b), nil }
func (c memConn) Write(b []byte) (int, error)        { c.out.write(b); return len(b), nil }
func (c memConn) Close() error                       { return nil }
func (c memConn) LocalAddr() net.Addr                { return &net.TCPAddr{} }
func (c memConn) RemoteAddr() net.Addr               { return &net.TCPAddr{} }
func (c memConn) SetDeadline(t time.Time) error      { return nil }
func (c memConn) SetReadDeadline(t time.Time) error  { return nil }
func (c memConn) SetWriteDeadline(t time.Time) error { return nil }

func main() {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	check(err)
	template := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "bench"},
		DNSNames:     []string{"bench"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, template, template, &key.PublicKey, key)
	check(err)
	a, b := newPipe(), newPipe()
	server := tls.Server(memConn{in: a, out: b}, &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
	})
	client := tls.Client(memConn{in: b, out: a}, &tls.Config{InsecureSkipVerify: true})
	done := make(chan error)
	go func() { done <- server.Handshake() }()
	check(client.Handshake())
	check(<-done)

	payload := []byte(strings.Repeat("x", 1024))
	buf := make([]byte, 1024)
	fmt.Println("ready")
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		n, err := strconv.Atoi(strings.TrimSpace(in.Text()))
		check(err)
		start := time.Now()
		for i := 0; i < n; i++ {
			_, err := client.Write(payload)
			check(err)
			got := 0
			for got < len(payload) {
				m, err := server.Read(buf[got:])
				check(err)
				got += m
			}
		}
		fmt.Println(float64(time.Since(start).Nanoseconds()) / float64(2*n))
	}
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
