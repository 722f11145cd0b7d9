package client_test

import (
	"bytes"
	"context"
	"io"
	"net"
	"path/filepath"
	"testing"
	"time"

	"smartproxy/client"
	"smartproxy/client/clienttest"
	"smartproxy/client/configfile"
	"smartproxy/internal/testnet"
	"smartproxy/oftp2"
)

// TestSeveralServers runs one client with two servers (-S a,b): it keeps a tunnel to each,
// pushes the configuration on each, forwards the sessions either server opens, lists both
// tunnels in its status and sends outgoing sessions to either. When one server goes away, the
// other's sessions go on and outgoing sessions go to it.
func TestSeveralServers(t *testing.T) {
	ssids := make(chan []byte, 4)
	internal := newScripted(t, func(conn net.Conn, r *oftp2.Reader, w *oftp2.Writer) {
		w.WriteCommand(&oftp2.SSRM{})
		b, err := r.ReadBuffer()
		if err != nil {
			return
		}
		ssids <- append([]byte(nil), b...)
		w.WriteCommand(responderSSID)
		r.ReadBuffer() // until the session ends
	})
	routeAddr, preferAddr := testnet.ReserveAddr(t), testnet.ReserveAddr(t)
	e := newEnv(t, envOptions{internalAddr: internal.addr(), servers: 2, change: func(f *configfile.File) {
		f.Routes = []configfile.Route{
			{Name: "to-partner", ListenAddress: routeAddr, PartnerAddress: "192.0.2.1:6619", PartnerOdetteID: clienttest.PartnerID},
			// The second server's Proxy ID (newEnv), in lower case: normalised.
			{Name: "via-second", ListenAddress: preferAddr, PartnerAddress: "192.0.2.1:6619", PartnerOdetteID: clienttest.PartnerID,
				PreferredServer: "spx-0000-0000-0000-0002"},
		}
	}})
	want := e.client.Current().Version
	conns := make([]*clienttest.Conn, len(e.srvs))
	for i, srv := range e.srvs {
		conns[i] = srv.WaitConn(t, waitLong)
		if got := conns[i].WaitConfig(t, waitLong).GetVersion(); got != want {
			t.Errorf("server %d: pushed configuration version %d, want %d", i, got, want)
		}
	}
	waitFor(t, "a tunnel to each server with the configuration applied", func() bool {
		ts := e.client.Tunnels()
		return len(ts) == 2 && ts[0].AppliedVersion == want && ts[1].AppliedVersion == want
	})
	ts := e.client.Tunnels()
	for i, ti := range ts {
		if ti.Server != e.srvs[i].Addr || ti.RemoteAddr != e.srvs[i].Addr || ti.ProxyID != e.srvs[i].ProxyID() {
			t.Errorf("Tunnels()[%d] = server %q at %q with Proxy ID %q, want %q at %q with %q",
				i, ti.Server, ti.RemoteAddr, ti.ProxyID, e.srvs[i].Addr, e.srvs[i].Addr, e.srvs[i].ProxyID())
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	st, err := e.client.Admin().Status(ctx)
	if err != nil || len(st.Tunnels) != 2 || st.Tunnels[0].RemoteAddr != e.srvs[0].Addr || st.Tunnels[1].RemoteAddr != e.srvs[1].Addr {
		t.Errorf("admin Status() = %+v, %v; want one tunnel to each server", st, err)
	}

	partnerSSID := ssid(t, clienttest.PartnerID, clienttest.PartnerPassword)
	session := func(i int, remote string) {
		t.Helper()
		ts, err := conns[i].Open(ctx, clienttest.PartnerID, remote, partnerSSID)
		if err != nil {
			t.Fatalf("server %d: Open() = %v, want accepted", i, err)
		}
		if got := <-ssids; !bytes.Equal(got, partnerSSID) {
			t.Errorf("server %d: the internal server received %q, want the partner's SSID", i, got)
		}
		if b, err := ts.ReadBuffer(ctx); err != nil || oftp2.CommandCode(b[0]) != oftp2.CodeSSID {
			t.Errorf("server %d: first buffer from the client = %q, %v; want the internal server's SSID", i, b, err)
		}
		ts.CloseWrite()
		select {
		case <-ts.Done():
		case <-ctx.Done():
			t.Fatalf("server %d: the session did not end", i)
		}
	}
	session(0, "192.0.2.1:5000")
	session(1, "192.0.2.2:5000")

	// An outgoing session (the internal server calls the route's listener) goes out on an
	// established tunnel; with none busy, the first server's.
	outgoing := func(addr string) {
		t.Helper()
		c, err := net.DialTimeout("tcp", addr, waitLong)
		if err != nil {
			t.Fatal(err)
		}
		// The harness refuses it: the client answers the internal initiator with an ESID and closes.
		c.SetDeadline(time.Now().Add(waitLong))
		io.Copy(io.Discard, c)
		c.Close()
	}
	waitFor(t, "the routes' listeners", func() bool {
		n := 0
		for _, en := range e.hook.AllEntries() {
			if a := en.Data["listen_address"]; en.Data["event"] == client.EventRouteListening && (a == routeAddr || a == preferAddr) {
				n++
			}
		}
		return n == 2
	})
	outgoing(routeAddr)
	if a, b := e.srvs[0].Outgoing(), e.srvs[1].Outgoing(); a != 1 || b != 0 {
		t.Errorf("outgoing sessions opened on the servers: %d and %d, want 1 and 0", a, b)
	}
	// A route that prefers the second server goes there although the first is as idle.
	outgoing(preferAddr)
	if a, b := e.srvs[0].Outgoing(), e.srvs[1].Outgoing(); a != 1 || b != 1 {
		t.Errorf("after the route preferring the second server: %d and %d outgoing sessions, want 1 and 1", a, b)
	}

	e.srvs[0].Close()
	waitFor(t, "the first server's tunnel to go", func() bool {
		ts := e.client.Tunnels()
		return len(ts) == 1 && ts[0].Server == e.srvs[1].Addr
	})
	session(1, "192.0.2.3:5000")
	outgoing(routeAddr)
	if got := e.srvs[1].Outgoing(); got != 2 {
		t.Errorf("outgoing sessions on the remaining server: %d, want 2", got)
	}
	if e.logged(client.EventTunnelDown) == nil {
		t.Error("no tunnel_down log line for the server that went away")
	}
}

// TestServersListedTwice: a server named twice is a configuration mistake, not more capacity.
func TestServersListedTwice(t *testing.T) {
	files := clienttest.NewFiles(t, t.TempDir())
	srv := clienttest.NewServer(t, clienttest.ServerConfig{})
	path := filepath.Join(files.Dir, "client.json")
	clienttest.WriteConfig(t, path, files.Config("127.0.0.1:3305"))
	l, err := configfile.NewLoader(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := l.Load()
	if err != nil {
		t.Fatal(err)
	}
	snap := res.Snapshot
	_, err = client.New(client.Config{Servers: []string{srv.Addr, srv.Addr}, Credentials: srv.ClientCredentials, Config: snap})
	if err == nil {
		t.Fatal("New() with a server listed twice = nil error")
	}
	if _, err := client.New(client.Config{Credentials: srv.ClientCredentials, Config: snap}); err == nil {
		t.Fatal("New() without servers = nil error")
	}
}
