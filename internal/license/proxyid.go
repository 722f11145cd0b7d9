package license

import (
	"errors"
	"net"
)

// IDSource tells ProxyIDFrom where to find the host identity. The zero value
// uses the real host.
type IDSource struct {
	// MachineIDFiles are read in order; the first holding a valid machine ID
	// (32 hexadecimal digits) is used. If nil, /etc/machine-id and
	// /var/lib/dbus/machine-id.
	MachineIDFiles []string
	// Hostname returns the host name, used with the MAC address when no
	// machine ID is found. If nil, os.Hostname.
	Hostname func() (string, error)
	// Interfaces lists the network interfaces, whose first non-loopback
	// hardware address is used with the host name. If nil, net.Interfaces.
	Interfaces func() ([]net.Interface, error)
}

// ProxyID returns the Proxy ID of this host, "SPX-" followed by four groups
// of four Crockford base32 digits. It is derived by SHA-256 with a fixed
// application salt from the systemd machine ID (never revealing it), or
// from the host name and first MAC address when there is none, and so stays
// the same across restarts and reinstalls of SmartProxy.
func ProxyID() (string, error) { return ProxyIDFrom(IDSource{}) }

// ProxyIDFrom is ProxyID with the identity sources of src.
func ProxyIDFrom(src IDSource) (string, error) {
	return "", errors.New("license: ProxyIDFrom not implemented yet")
}

// NormalizeProxyID returns s in canonical form: upper case, with the
// Crockford aliases O→0 and I, L→1 applied and the "SPX-" prefix and group
// dashes in place. It fails when s is not a Proxy ID.
func NormalizeProxyID(s string) (string, error) {
	return "", errors.New("license: NormalizeProxyID not implemented yet")
}
