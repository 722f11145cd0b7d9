package client_test

import (
	"errors"
	"net"
	"syscall"
	"testing"
	"time"

	"smartproxy/client"
	"smartproxy/client/clienttest"
	"smartproxy/client/configfile"
	"smartproxy/internal/testnet"
)

// TestRouteListenersFollowConfig: the client listens on a route's address once the
// configuration names it, moves the listener when the address changes (the old address is
// closed), and closes it when the route is removed.
func TestRouteListenersFollowConfig(t *testing.T) {
	a1, a2 := testnet.ReserveAddr(t), testnet.ReserveAddr(t)
	route := func(addr string) func(*configfile.File) {
		return func(f *configfile.File) {
			f.Routes = []configfile.Route{{Name: "to-partner", ListenAddress: addr, PartnerAddress: "192.0.2.1:6619", PartnerOdetteID: clienttest.PartnerID}}
		}
	}
	e := newEnv(t, envOptions{internalAddr: "127.0.0.1:3305", change: route(a1)})
	listening := func(addr string) bool {
		for _, en := range e.hook.AllEntries() {
			if en.Data["event"] == client.EventRouteListening && en.Data["listen_address"] == addr {
				return true
			}
		}
		return false
	}
	waitFor(t, "the listener on "+a1, func() bool { return listening(a1) })
	if !accepts(t, a1) {
		t.Fatalf("nothing accepts connections on the route's address %s", a1)
	}

	apply := func(change func(*configfile.File)) {
		t.Helper()
		cfg := e.files.Config("127.0.0.1:3305")
		if change != nil {
			change(&cfg)
		}
		clienttest.WriteConfig(t, e.path, cfg)
		res, err := e.loader.Load()
		if err != nil {
			t.Fatal(err)
		}
		if err := e.client.SetConfig(res.Snapshot); err != nil {
			t.Fatalf("SetConfig() = %v", err)
		}
	}
	apply(route(a2))
	waitFor(t, "the listener on "+a2, func() bool { return listening(a2) })
	if accepts(t, a1) {
		t.Errorf("the old address %s still accepts connections after the route moved", a1)
	}
	if !accepts(t, a2) {
		t.Errorf("nothing accepts connections on the route's new address %s", a2)
	}
	apply(nil)
	waitFor(t, "the route_closed line", func() bool {
		n := 0
		for _, en := range e.hook.AllEntries() {
			if en.Data["event"] == client.EventRouteClosed {
				n++
			}
		}
		return n >= 2
	})
	if accepts(t, a2) {
		t.Errorf("%s still accepts connections after the route was removed", a2)
	}
}

// accepts reports whether a TCP connection to addr is accepted (and closes it), failing t on
// any error other than a refused connection.
func accepts(t *testing.T, addr string) bool {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if errors.Is(err, syscall.ECONNREFUSED) {
		return false
	}
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	c.Close()
	return true
}
