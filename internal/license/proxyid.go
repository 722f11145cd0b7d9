package license

import (
	"bytes"
	"crypto/sha256"
	"fmt"
	"net"
	"os"
	"slices"
	"strings"
)

// IDSource tells ProxyIDFrom where to find the host identity. The zero value
// uses the real host.
type IDSource struct {
	// MachineIDFiles are read in order; the first holding a valid machine ID
	// (32 hexadecimal digits, not all zero) is used. If nil,
	// /etc/machine-id and /var/lib/dbus/machine-id.
	MachineIDFiles []string
	// Hostname returns the host name, used with the MAC address when no
	// machine ID is found. If nil, os.Hostname.
	Hostname func() (string, error)
	// Interfaces lists the network interfaces; the hardware address of the
	// non-loopback interface with the smallest name is used with the host
	// name. If nil, net.Interfaces.
	Interfaces func() ([]net.Interface, error)
}

// DefaultMachineIDFiles are the files ProxyID reads, in order.
var DefaultMachineIDFiles = []string{"/etc/machine-id", "/var/lib/dbus/machine-id"}

// proxyIDSalt separates Proxy ID hashes from any other use of the machine
// ID (machine-id(5) asks applications not to expose it raw).
const proxyIDSalt = "SmartProxy for OFTP2 proxy ID v1\x00"

// crockford is the Crockford base32 alphabet (no I, L, O, U).
const crockford = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"

// ProxyID returns the Proxy ID of this host, "SPX-" followed by four groups
// of four Crockford base32 digits (80 bits). It is derived by SHA-256 with a
// fixed application salt from the systemd machine ID (which it does not
// reveal), or, without one, from the host name and a MAC address, and so
// stays the same across restarts and reinstalls of SmartProxy.
func ProxyID() (string, error) { return ProxyIDFrom(IDSource{}) }

// ProxyIDFrom is ProxyID with the identity sources of src.
func ProxyIDFrom(src IDSource) (string, error) {
	files := src.MachineIDFiles
	if files == nil {
		files = DefaultMachineIDFiles
	}
	var problems []string
	for _, f := range files {
		id, err := readMachineID(f)
		if err != nil {
			problems = append(problems, err.Error())
			continue
		}
		return formatProxyID(hashID("machine-id", id)), nil
	}
	hostname := src.Hostname
	if hostname == nil {
		hostname = os.Hostname
	}
	host, err := hostname()
	if err != nil || strings.TrimSpace(host) == "" {
		return "", fmt.Errorf("license: no host identity for the Proxy ID: %s; host name: %v",
			strings.Join(problems, "; "), err)
	}
	ifaces := src.Interfaces
	if ifaces == nil {
		ifaces = net.Interfaces
	}
	list, err := ifaces()
	if err != nil {
		return "", fmt.Errorf("license: no machine ID (%s) and network interfaces unreadable: %w",
			strings.Join(problems, "; "), err)
	}
	mac := firstMAC(list)
	if mac == nil {
		return "", fmt.Errorf("license: no machine ID (%s) and no network interface with a MAC address",
			strings.Join(problems, "; "))
	}
	return formatProxyID(hashID("host-mac", strings.ToLower(strings.TrimSpace(host))+"\x00"+mac.String())), nil
}

// readMachineID reads and validates a machine-id(5) file.
func readMachineID(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	id := strings.ToLower(strings.TrimSpace(string(b)))
	if len(id) != 32 || strings.Trim(id, "0123456789abcdef") != "" {
		return "", fmt.Errorf("%s: not a machine ID (32 hexadecimal digits)", path)
	}
	if id == strings.Repeat("0", 32) {
		return "", fmt.Errorf("%s: machine ID is all zero", path)
	}
	return id, nil
}

// firstMAC returns the hardware address of the non-loopback interface with
// the smallest name that has a non-zero one. Sorting by name rather than
// index keeps the choice stable when virtual interfaces come and go.
func firstMAC(list []net.Interface) net.HardwareAddr {
	list = slices.Clone(list)
	slices.SortFunc(list, func(a, b net.Interface) int { return strings.Compare(a.Name, b.Name) })
	for _, ifc := range list {
		if ifc.Flags&net.FlagLoopback != 0 || len(ifc.HardwareAddr) < 6 {
			continue
		}
		if bytes.Count(ifc.HardwareAddr, []byte{0}) == len(ifc.HardwareAddr) {
			continue
		}
		return ifc.HardwareAddr
	}
	return nil
}

func hashID(kind, value string) [sha256.Size]byte {
	return sha256.Sum256([]byte(proxyIDSalt + kind + "\x00" + value))
}

// formatProxyID renders the first 80 bits of sum as "SPX-XXXX-XXXX-XXXX-XXXX".
func formatProxyID(sum [sha256.Size]byte) string {
	var b strings.Builder
	b.WriteString("SPX")
	var acc uint64
	var nbits uint
	digits := 0
	for _, c := range sum[:10] {
		acc = acc<<8 | uint64(c)
		nbits += 8
		for nbits >= 5 {
			nbits -= 5
			if digits%4 == 0 {
				b.WriteByte('-')
			}
			b.WriteByte(crockford[(acc>>nbits)&31])
			digits++
		}
	}
	return b.String()
}

// NormalizeProxyID returns s in canonical form "SPX-XXXX-XXXX-XXXX-XXXX":
// upper case, the Crockford aliases O→0 and I, L→1 applied, dashes and
// spaces between groups optional on input. It fails when s is not a Proxy ID.
func NormalizeProxyID(s string) (string, error) {
	t := strings.ToUpper(strings.TrimSpace(s))
	rest, ok := strings.CutPrefix(t, "SPX")
	if !ok {
		return "", fmt.Errorf("%q is not a Proxy ID (SPX-XXXX-XXXX-XXXX-XXXX)", s)
	}
	var digits []byte
	for _, r := range rest {
		switch {
		case r == '-' || r == ' ':
			continue
		case r == 'O':
			r = '0'
		case r == 'I' || r == 'L':
			r = '1'
		}
		if r > 0x7f || strings.IndexByte(crockford, byte(r)) < 0 {
			return "", fmt.Errorf("%q is not a Proxy ID: %q is not a Crockford base32 digit", s, r)
		}
		digits = append(digits, byte(r))
	}
	if len(digits) != 16 {
		return "", fmt.Errorf("%q is not a Proxy ID: %d digits, want 16", s, len(digits))
	}
	return fmt.Sprintf("SPX-%s-%s-%s-%s", digits[0:4], digits[4:8], digits[8:12], digits[12:16]), nil
}
