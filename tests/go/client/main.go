// A Go HTTPS client for the end-to-end tests: many goroutines share one http.Client and call the
// local test API over HTTP/1.1 or HTTP/2. It prints "ready", waits for a line on stdin (so the
// agent can attach before any connection exists), runs, and prints one line per request in a
// fixed order, so two runs print the same bytes whether or not anything watches them. Then it
// keeps its connections open until stdin ends, as a long-lived service would.
package main

import (
	"bufio"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
)

type result struct {
	kind   string
	status int
	length int
	sum    [32]byte
	err    string
}

// chunkedBody has no known length, so net/http sends it chunked over HTTP/1.1.
type chunkedBody struct{ r io.Reader }

func (c chunkedBody) Read(p []byte) (int, error) { return c.r.Read(p) }

func main() {
	base := flag.String("base", "", "https://localhost:PORT")
	caFile := flag.String("ca", "", "CA certificate (PEM)")
	proto := flag.String("proto", "h2", "h1 or h2")
	workers := flag.Int("workers", 50, "goroutines")
	rounds := flag.Int("rounds", 1, "times each goroutine goes through the kinds")
	kinds := flag.String("kinds", "ok,declined,customer,chunked,sse", "requests each goroutine makes per round")
	big := flag.Int("big", 0, "goroutines that also download 1 MiB (once)")
	pace := flag.Int("pace", 0, "milliseconds between a goroutine's requests")
	summary := flag.Bool("summary", false, "one digest line per goroutine instead of one line per request")
	flag.Parse()

	pem, err := os.ReadFile(*caFile)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(pem)
	// Every connection stays open until the client exits: the agent reads a connection's
	// addresses from /proc when it first sees it, and the tests check them on every line.
	transport := &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: roots},
		MaxIdleConnsPerHost: 1000,
	}
	switch *proto {
	case "h1":
		transport.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	case "h2":
		transport.ForceAttemptHTTP2 = true
	default:
		fmt.Fprintln(os.Stderr, "unknown -proto", *proto)
		os.Exit(2)
	}
	client := &http.Client{Transport: transport, Timeout: 60 * time.Second}

	fmt.Println("ready")
	stdin := bufio.NewReader(os.Stdin)
	stdin.ReadString('\n')

	list := strings.Split(*kinds, ",")
	results := make([][]result, *workers)
	var wg sync.WaitGroup
	for w := 0; w < *workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			todo := []string{}
			for r := 0; r < *rounds; r++ {
				todo = append(todo, list...)
			}
			if w < *big {
				todo = append(todo, "big")
			}
			for i, kind := range todo {
				if i > 0 && *pace > 0 {
					time.Sleep(time.Duration(*pace) * time.Millisecond)
				}
				results[w] = append(results[w], call(client, *base, kind, w))
			}
		}(w)
	}
	wg.Wait()

	out := bufio.NewWriter(os.Stdout)
	failed := 0
	for w, rs := range results {
		digest := sha256.New()
		for i, r := range rs {
			if r.err != "" {
				failed++
			}
			line := fmt.Sprintf("w=%02d r=%03d %s status=%d len=%d sha=%x err=%q\n", w, i, r.kind, r.status, r.length, r.sum[:8], r.err)
			if *summary {
				digest.Write([]byte(line))
			} else {
				out.WriteString(line)
			}
		}
		if *summary {
			fmt.Fprintf(out, "w=%02d requests=%d digest=%x\n", w, len(rs), digest.Sum(nil)[:8])
		}
	}
	fmt.Fprintf(out, "done failed=%d\n", failed)
	out.Flush()
	io.Copy(io.Discard, stdin)
	if failed > 0 {
		os.Exit(1)
	}
}

func call(client *http.Client, base, kind string, w int) result {
	var req *http.Request
	var err error
	form := "application/x-www-form-urlencoded"
	switch kind {
	case "ok":
		req, err = http.NewRequest("POST", base+"/v1/charges", strings.NewReader("amount=2000&source=tok_visa"))
		if err == nil {
			req.Header.Set("Content-Type", form)
		}
	case "declined":
		req, err = http.NewRequest("POST", base+"/v1/charges", strings.NewReader("amount=500&source=tok_chargeDeclined"))
		if err == nil {
			req.Header.Set("Content-Type", form)
		}
	case "customer":
		req, err = http.NewRequest("GET", fmt.Sprintf("%s/v1/customers/cus_%02d", base, w), nil)
	case "chunked":
		body := strings.Repeat("chunk-of-upload-", 512)
		req, err = http.NewRequest("POST", base+"/v1/upload", chunkedBody{strings.NewReader(body)})
	case "sse":
		body := `{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}`
		req, err = http.NewRequest("POST", base+"/v1/chat/completions", strings.NewReader(body))
		if err == nil {
			req.Header.Set("Content-Type", "application/json")
		}
	case "big":
		req, err = http.NewRequest("GET", base+"/v1/bytes?n=1048576", nil)
		if err == nil {
			// Asked for explicitly, so the 1 MiB crosses the wire as is (not gzipped).
			req.Header.Set("Accept-Encoding", "identity")
		}
	default:
		return result{kind: kind, err: "unknown kind"}
	}
	if err != nil {
		return result{kind: kind, err: err.Error()}
	}
	resp, err := client.Do(req)
	if err != nil {
		return result{kind: kind, err: err.Error()}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	r := result{kind: kind, status: resp.StatusCode, length: len(body), sum: sha256.Sum256(body)}
	if err != nil {
		r.err = err.Error()
	}
	return r
}
