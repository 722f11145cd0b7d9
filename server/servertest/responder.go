package servertest

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"

	"smartproxy/oftp2/endpoint"
)

// Responder is an internal OFTP2 server for tests: an oftp2/endpoint Responder on a loopback
// port that runs one session per connection and counts the connections it accepted.
type Responder struct {
	// Addr is the listening address.
	Addr string

	ep     *endpoint.Endpoint
	ln     net.Listener
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	conns   int
	results []ResponderResult
	changed chan struct{}
}

// ResponderResult is the outcome of one session the Responder ran.
type ResponderResult struct {
	// Result is the endpoint's result.
	Result *endpoint.Result
	// Err is the session's error (nil after a normal end).
	Err error
	// Remote is the address the connection came from.
	Remote string
	// BytesRead counts the octets the endpoint read from the connection (after TLS).
	BytesRead int64
}

// StartResponder starts a Responder with cfg (Role is set to endpoint.Responder). It stops
// when the test ends.
func StartResponder(tb testing.TB, cfg endpoint.Config) *Responder {
	tb.Helper()
	return StartTLSResponder(tb, cfg, nil)
}

// StartTLSResponder starts a Responder that speaks TLS with tc (when not nil): a partner's
// OFTP2 server that the DMZ server calls in outgoing sessions.
func StartTLSResponder(tb testing.TB, cfg endpoint.Config, tc *tls.Config) *Responder {
	tb.Helper()
	cfg.Role = endpoint.Responder
	ep, err := endpoint.New(cfg)
	if err != nil {
		tb.Fatalf("servertest.StartResponder: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("servertest.StartResponder: %v", err)
	}
	if tc != nil {
		ln = tls.NewListener(ln, tc)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &Responder{Addr: ln.Addr().String(), ep: ep, ln: ln, cancel: cancel, changed: make(chan struct{})}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue
			}
			r.mu.Lock()
			r.conns++
			r.mu.Unlock()
			r.wg.Add(1)
			go func() {
				defer r.wg.Done()
				cc := &countingConn{Conn: conn}
				res, err := ep.Run(ctx, cc)
				r.mu.Lock()
				r.results = append(r.results, ResponderResult{Result: res, Err: err, Remote: conn.RemoteAddr().String(), BytesRead: cc.n.Load()})
				close(r.changed)
				r.changed = make(chan struct{})
				r.mu.Unlock()
			}()
		}
	}()
	tb.Cleanup(r.Stop)
	return r
}

// Stop closes the listener, cancels running sessions and waits for them. It is idempotent.
func (r *Responder) Stop() {
	r.ln.Close()
	r.cancel()
	r.wg.Wait()
}

// Conns returns the number of connections accepted so far.
func (r *Responder) Conns() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.conns
}

// Results returns the outcomes of the sessions that have ended.
func (r *Responder) Results() []ResponderResult {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]ResponderResult(nil), r.results...)
}

// WaitResults waits until n sessions have ended and returns their outcomes.
func (r *Responder) WaitResults(ctx context.Context, n int) ([]ResponderResult, error) {
	for {
		r.mu.Lock()
		if len(r.results) >= n {
			out := append([]ResponderResult(nil), r.results...)
			r.mu.Unlock()
			return out, nil
		}
		ch := r.changed
		r.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// countingConn counts the octets read through it.
type countingConn struct {
	net.Conn
	n atomic.Int64
}

func (c *countingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.n.Add(int64(n))
	return n, err
}

// CloseWrite closes the write side when the connection has one (TCP, TLS).
func (c *countingConn) CloseWrite() error {
	if hc, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return hc.CloseWrite()
	}
	return nil
}
