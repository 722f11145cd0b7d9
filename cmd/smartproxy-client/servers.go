package main

import (
	"fmt"
	"slices"
	"strings"
)

// serverList is the value of -S: the DMZ servers the client keeps a tunnel to. The flag may be
// repeated and each value may be a comma-separated list ("-S dmz1,dmz2" or "-S dmz1 -S dmz2");
// every address gets the default port when it has none. A server named twice is an error: two
// tunnels to one server from one -S list are a typing mistake, not more capacity (that is
// --streams).
type serverList []string

// String returns the list as one comma-separated value.
func (l *serverList) String() string { return strings.Join(*l, ",") }

// Set adds the servers of one -S value.
func (l *serverList) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			return fmt.Errorf("%q: an empty server in the list", v)
		}
		addr, err := serverAddress(s)
		if err != nil {
			return err
		}
		if slices.Contains(*l, addr) {
			return fmt.Errorf("%s is given twice", addr)
		}
		*l = append(*l, addr)
	}
	return nil
}
