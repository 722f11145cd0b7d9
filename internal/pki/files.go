package pki

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
)

// File modes used by the writers in this package.
const (
	// CertFileMode is the mode of certificate and CRL files.
	CertFileMode fs.FileMode = 0o644
	// KeyFileMode is the mode of private key files.
	KeyFileMode fs.FileMode = 0o600
)

// WriteFile writes data to path atomically: it writes a temporary file in the
// same directory with the given mode, syncs it and renames it over path. A
// reader therefore sees either the old or the new content, never a mix. The
// mode is applied regardless of the umask.
func WriteFile(path string, data []byte, mode fs.FileMode) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	tmpName := tmp.Name()
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			os.Remove(tmpName)
		}
	}()
	if err := tmp.Chmod(mode); err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	if _, err := tmp.Write(data); err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	if err := os.Rename(tmpName, path); err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	ok = true
	return nil
}

// WriteCertFile writes PEM certificate data to path with mode 0644.
func WriteCertFile(path string, certPEM []byte) error {
	return WriteFile(path, certPEM, CertFileMode)
}

// WriteKeyFile writes PEM private key data to path with mode 0600.
func WriteKeyFile(path string, keyPEM []byte) error {
	return WriteFile(path, keyPEM, KeyFileMode)
}

// Names of the files [Init] writes into its directory.
const (
	// FileCACert is the tunnel CA certificate; both daemons trust only it.
	FileCACert = "tunnel-ca.pem"
	// FileCAKey is the tunnel CA private key; keep it away from both hosts.
	FileCAKey = "tunnel-ca-key.pem"
	// FileServerCert is the certificate chain of the smartproxy-server tunnel
	// listener.
	FileServerCert = "server.pem"
	// FileServerKey is the private key of FileServerCert.
	FileServerKey = "server-key.pem"
	// FileClientCert is the certificate chain smartproxy-client presents.
	FileClientCert = "client.pem"
	// FileClientKey is the private key of FileClientCert.
	FileClientKey = "client-key.pem"
)

// InitOptions tunes [Init].
type InitOptions struct {
	// ServerNames are extra DNS names or IP addresses for the server
	// certificate, added to "localhost", 127.0.0.1, ::1 and the host name.
	// An entry that parses as an IP address becomes an IP SAN.
	ServerNames []string
	// ClientName is the common name (and DNS SAN) of the client certificate,
	// which a server allow-list can match. If empty, "smartproxy-client".
	ClientName string
	// CAName is the common name of the tunnel CA. If empty, "SmartProxy
	// tunnel CA".
	CAName string
	// Hostname is the host name added to the server certificate. If empty,
	// os.Hostname is used; if that fails, no host name is added.
	Hostname string
	// Overwrite allows replacing existing files. If false, Init fails
	// without writing anything when any of its files exists.
	Overwrite bool
}

// File is one file written by [Init].
type File struct {
	// Path is where the file was written.
	Path string
	// Purpose says what the file is for, in one line.
	Purpose string
	// Secret is true for private keys (mode 0600).
	Secret bool
}

// Init creates a tunnel CA, a server certificate for smartproxy-server and a
// client certificate for smartproxy-client, writes them into dir (created with
// mode 0700 if missing) and returns the files written, in a stable order.
func Init(dir string, opts InitOptions) ([]File, error) {
	if dir == "" {
		return nil, errors.New("pki: init: directory is empty")
	}
	caName := opts.CAName
	if caName == "" {
		caName = "SmartProxy tunnel CA"
	}
	clientName := opts.ClientName
	if clientName == "" {
		clientName = "smartproxy-client"
	}
	host := opts.Hostname
	if host == "" {
		if h, err := os.Hostname(); err == nil {
			host = h
		}
	}
	dns := []string{"localhost"}
	ips := []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	if host != "" && host != "localhost" {
		dns = append(dns, host)
	}
	for _, n := range opts.ServerNames {
		n = strings.TrimSpace(n)
		if n == "" {
			return nil, errors.New("pki: init: empty server name")
		}
		if ip := net.ParseIP(n); ip != nil {
			ips = appendIP(ips, ip)
			continue
		}
		if strings.ContainsAny(n, " /:@") {
			return nil, fmt.Errorf("pki: init: server name %q is neither a DNS name nor an IP address", n)
		}
		dns = appendString(dns, n)
	}

	files := []File{
		{Path: filepath.Join(dir, FileCACert), Purpose: "tunnel CA certificate: trusted by both daemons, and nothing else is"},
		{Path: filepath.Join(dir, FileCAKey), Purpose: "tunnel CA private key: issues new tunnel certificates; keep it off both hosts", Secret: true},
		{Path: filepath.Join(dir, FileServerCert), Purpose: "smartproxy-server tunnel certificate (DNS " + strings.Join(dns, ", ") + "; IP " + joinIPs(ips) + ")"},
		{Path: filepath.Join(dir, FileServerKey), Purpose: "smartproxy-server tunnel private key", Secret: true},
		{Path: filepath.Join(dir, FileClientCert), Purpose: "smartproxy-client tunnel certificate (CN " + clientName + ")"},
		{Path: filepath.Join(dir, FileClientKey), Purpose: "smartproxy-client tunnel private key", Secret: true},
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("pki: init: %w", err)
	}
	if !opts.Overwrite {
		for _, f := range files {
			if _, err := os.Lstat(f.Path); err == nil {
				return nil, fmt.Errorf("pki: init: %s already exists (use overwrite to replace it)", f.Path)
			} else if !errors.Is(err, fs.ErrNotExist) {
				return nil, fmt.Errorf("pki: init: %w", err)
			}
		}
	}

	ca, err := NewCAWithOptions(CAOptions{CommonName: caName, MaxPathLen: -1})
	if err != nil {
		return nil, err
	}
	server, err := ca.Issue(Request{CommonName: "smartproxy-server", DNSNames: dns, IPAddresses: ips, Usage: UsageServer})
	if err != nil {
		return nil, err
	}
	client, err := ca.Issue(Request{CommonName: clientName, DNSNames: []string{clientName}, Usage: UsageClient})
	if err != nil {
		return nil, err
	}
	contents := [][]byte{ca.CertPEM, ca.KeyPEM, server.CertPEM, server.KeyPEM, client.CertPEM, client.KeyPEM}
	for i, f := range files {
		mode := CertFileMode
		if f.Secret {
			mode = KeyFileMode
		}
		if err := WriteFile(f.Path, contents[i], mode); err != nil {
			return files[:i], err
		}
	}
	return files, nil
}

func appendString(list []string, s string) []string {
	for _, x := range list {
		if strings.EqualFold(x, s) {
			return list
		}
	}
	return append(list, s)
}

func appendIP(list []net.IP, ip net.IP) []net.IP {
	for _, x := range list {
		if x.Equal(ip) {
			return list
		}
	}
	return append(list, ip)
}

func joinIPs(ips []net.IP) string {
	s := make([]string, len(ips))
	for i, ip := range ips {
		s[i] = ip.String()
	}
	return strings.Join(s, ", ")
}
