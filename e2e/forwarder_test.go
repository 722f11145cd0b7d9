package e2e

import (
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// forwarder is a TCP forwarder on 127.0.0.1 that a test can pause (no octet moves in either
// direction until Resume) and cut (every connection and the listener closed at once, as when
// the process behind it is killed). Its methods are safe for concurrent use.
type forwarder struct {
	ln     net.Listener
	target string
	wg     sync.WaitGroup

	lastRead atomic.Int64 // unix nanoseconds of the last octets read from either side

	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	gate   chan struct{} // closed while traffic flows; replaced by Pause
	closed bool
}

// startForwarder forwards a new loopback port to target until the test ends or Cut.
func startForwarder(t testing.TB, target string) *forwarder {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &forwarder{ln: ln, target: target, conns: make(map[net.Conn]struct{}), gate: make(chan struct{})}
	close(f.gate)
	f.wg.Add(1)
	go f.accept()
	t.Cleanup(f.Cut)
	return f
}

// Addr returns the forwarder's address.
func (f *forwarder) Addr() string { return f.ln.Addr().String() }

func (f *forwarder) accept() {
	defer f.wg.Done()
	for {
		in, err := f.ln.Accept()
		if err != nil {
			return
		}
		out, err := net.Dial("tcp", f.target)
		if err != nil {
			in.Close()
			continue
		}
		if !f.track(in, out) {
			return
		}
		f.wg.Add(2)
		go f.pipe(in, out)
		go f.pipe(out, in)
	}
}

// track registers a connection pair; it closes them and reports false after Cut.
func (f *forwarder) track(cs ...net.Conn) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		for _, c := range cs {
			c.Close()
		}
		return false
	}
	for _, c := range cs {
		f.conns[c] = struct{}{}
	}
	return true
}

// pipe copies from src to dst, waiting at the gate before every write; at the end it
// half-closes dst.
func (f *forwarder) pipe(src, dst net.Conn) {
	defer f.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			f.lastRead.Store(time.Now().UnixNano())
			f.mu.Lock()
			gate := f.gate
			f.mu.Unlock()
			<-gate
			if _, werr := dst.Write(buf[:n]); werr != nil {
				src.Close()
				return
			}
		}
		if err != nil {
			if tcp, ok := dst.(*net.TCPConn); ok {
				tcp.CloseWrite()
			}
			return
		}
	}
}

// quietFor returns how long no octet has arrived from either side (0 before the first).
func (f *forwarder) quietFor() time.Duration {
	last := f.lastRead.Load()
	if last == 0 {
		return 0
	}
	return time.Since(time.Unix(0, last))
}

// Pause holds all traffic until Resume.
func (f *forwarder) Pause() {
	f.mu.Lock()
	defer f.mu.Unlock()
	select {
	case <-f.gate:
		f.gate = make(chan struct{})
	default:
	}
}

// Resume lets traffic flow again.
func (f *forwarder) Resume() {
	f.mu.Lock()
	defer f.mu.Unlock()
	select {
	case <-f.gate:
	default:
		close(f.gate)
	}
}

// Cut closes the listener and every connection at once and waits for the forwarder's
// goroutines. It is idempotent.
func (f *forwarder) Cut() {
	f.mu.Lock()
	if !f.closed {
		f.closed = true
		f.ln.Close()
		for c := range f.conns {
			c.Close()
		}
		select {
		case <-f.gate:
		default:
			close(f.gate)
		}
	}
	f.mu.Unlock()
	f.wg.Wait()
}
