package license

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"smartproxy/internal/license/devkey"
)

var proxyIDPattern = regexp.MustCompile(`^SPX-[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}-[0-9A-HJKMNP-TV-Z]{4}$`)

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestProxyIDFrom(t *testing.T) {
	dir := t.TempDir()
	idA := writeFile(t, dir, "a", "0123456789abcdef0123456789abcdef\n")
	idAUpper := writeFile(t, dir, "a-upper", "0123456789ABCDEF0123456789ABCDEF")
	idB := writeFile(t, dir, "b", "fedcba9876543210fedcba9876543210\n")
	bad := writeFile(t, dir, "bad", "uninitialized\n")
	zero := writeFile(t, dir, "zero", strings.Repeat("0", 32))
	missing := filepath.Join(dir, "missing")
	noHost := func() (string, error) { return "", errors.New("no host name") }
	host := func(name string) func() (string, error) { return func() (string, error) { return name, nil } }
	ifaces := func(list ...net.Interface) func() ([]net.Interface, error) {
		return func() ([]net.Interface, error) { return list, nil }
	}
	lo := net.Interface{Name: "lo", Flags: net.FlagLoopback, HardwareAddr: net.HardwareAddr{0, 0, 0, 0, 0, 0}}
	eth0 := net.Interface{Name: "eth0", HardwareAddr: net.HardwareAddr{0x02, 0x42, 0xac, 0x11, 0x00, 0x02}}
	eth1 := net.Interface{Name: "eth1", HardwareAddr: net.HardwareAddr{0x02, 0x42, 0xac, 0x11, 0x00, 0x03}}
	veth := net.Interface{Name: "veth9", HardwareAddr: net.HardwareAddr{0x0a, 0, 0, 0, 0, 9}}

	id := func(t *testing.T, src IDSource) string {
		t.Helper()
		got, err := ProxyIDFrom(src)
		if err != nil {
			t.Fatalf("ProxyIDFrom(%+v) error = %v", src, err)
		}
		if !proxyIDPattern.MatchString(got) {
			t.Fatalf("ProxyIDFrom() = %q, not SPX-XXXX-XXXX-XXXX-XXXX in Crockford base32", got)
		}
		if n, err := NormalizeProxyID(got); err != nil || n != got {
			t.Fatalf("NormalizeProxyID(%q) = %q, %v, want it unchanged", got, n, err)
		}
		return got
	}

	a := id(t, IDSource{MachineIDFiles: []string{idA}})
	if again := id(t, IDSource{MachineIDFiles: []string{idA}}); again != a {
		t.Errorf("ProxyIDFrom() not stable: %q then %q", a, again)
	}
	if up := id(t, IDSource{MachineIDFiles: []string{idAUpper}}); up != a {
		t.Errorf("upper-case machine ID gives %q, want %q", up, a)
	}
	b := id(t, IDSource{MachineIDFiles: []string{idB}})
	if a == b {
		t.Errorf("different machine IDs give the same Proxy ID %q", a)
	}
	if strings.Contains(strings.ToLower(strings.ReplaceAll(a, "-", "")), "0123456789") {
		t.Errorf("Proxy ID %q reveals the machine ID", a)
	}
	if got := id(t, IDSource{MachineIDFiles: []string{missing, bad, zero, idB}}); got != b {
		t.Errorf("fallback through missing/invalid files gives %q, want %q", got, b)
	}

	// Without a machine ID: host name plus MAC.
	hm := id(t, IDSource{MachineIDFiles: []string{missing}, Hostname: host("dmz1"), Interfaces: ifaces(lo, veth, eth1, eth0)})
	if got := id(t, IDSource{MachineIDFiles: []string{bad}, Hostname: host("DMZ1"), Interfaces: ifaces(eth0, lo, eth1, veth)}); got != hm {
		t.Errorf("host+MAC not stable across interface order / host name case: %q vs %q", got, hm)
	}
	if got := id(t, IDSource{MachineIDFiles: []string{missing}, Hostname: host("dmz2"), Interfaces: ifaces(eth0)}); got == hm {
		t.Errorf("other host name gives the same Proxy ID %q", got)
	}
	if got := id(t, IDSource{MachineIDFiles: []string{missing}, Hostname: host("dmz1"), Interfaces: ifaces(eth1)}); got == hm {
		t.Errorf("other MAC gives the same Proxy ID %q", got)
	}
	if hm == a || hm == b {
		t.Errorf("host+MAC Proxy ID %q equals a machine-ID one", hm)
	}

	for _, tt := range []struct {
		name string
		src  IDSource
		want string
	}{
		{"no host name", IDSource{MachineIDFiles: []string{missing}, Hostname: noHost, Interfaces: ifaces(eth0)}, "no host identity"},
		{"no MAC", IDSource{MachineIDFiles: []string{bad}, Hostname: host("h"), Interfaces: ifaces(lo)}, "no network interface with a MAC"},
		{"interfaces fail", IDSource{MachineIDFiles: []string{}, Hostname: host("h"),
			Interfaces: func() ([]net.Interface, error) { return nil, errors.New("netlink") }}, "netlink"},
	} {
		if got, err := ProxyIDFrom(tt.src); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: ProxyIDFrom() = %q, %v, want error containing %q", tt.name, got, err, tt.want)
		}
	}
}

// TestProxyIDHost runs ProxyID on the real host, which must have an
// identity (a machine ID or a MAC address).
func TestProxyIDHost(t *testing.T) {
	a, err := ProxyID()
	if err != nil {
		t.Fatalf("ProxyID() error = %v", err)
	}
	b, err := ProxyID()
	if err != nil || a != b || !proxyIDPattern.MatchString(a) {
		t.Fatalf("ProxyID() = %q then %q, %v, want the same valid ID", a, b, err)
	}
}

func TestNormalizeProxyID(t *testing.T) {
	tests := []struct {
		in, want string
	}{
		{"SPX-0123-4567-89AB-CDEF", "SPX-0123-4567-89AB-CDEF"},
		{" spx-0123-4567-89ab-cdef\n", "SPX-0123-4567-89AB-CDEF"},
		{"SPX0123456789ABCDEF", "SPX-0123-4567-89AB-CDEF"},
		{"spx o1i3 4567 89ab cdef", "SPX-0113-4567-89AB-CDEF"},
		{"SPX-L000-0000-0000-0000", "SPX-1000-0000-0000-0000"},
		{"SPX-0123-4567-89AB-CDE", ""},   // 15 digits
		{"SPX-0123-4567-89AB-CDEF0", ""}, // 17 digits
		{"SPX-0123-4567-89AB-CDEU", ""},  // U is not a digit
		{"XPS-0123-4567-89AB-CDEF", ""},  // prefix
		{"SPX-0123-4567-89AB-CDÉF", ""},  // non-ASCII
		{"", ""},
	}
	for _, tt := range tests {
		got, err := NormalizeProxyID(tt.in)
		if tt.want == "" {
			if err == nil {
				t.Errorf("NormalizeProxyID(%q) = %q, want error", tt.in, got)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("NormalizeProxyID(%q) = %q, %v, want %q", tt.in, got, err, tt.want)
		}
	}
}

func TestKeySets(t *testing.T) {
	pub1, _ := newKey(t)
	pub2, _ := newKey(t)
	set := map[string]ed25519.PublicKey{"prod-1": pub1, "prod-2": pub2}
	s := FormatKeySet(set)
	got, err := ParseKeySet(" " + strings.ReplaceAll(s, ",", " , ") + ",")
	if err != nil {
		t.Fatalf("ParseKeySet(FormatKeySet()) error = %v", err)
	}
	if len(got) != 2 || !got["prod-1"].Equal(pub1) || !got["prod-2"].Equal(pub2) {
		t.Errorf("ParseKeySet(FormatKeySet(set)) = %v, want %v", got, set)
	}
	if got, err := ParseKeySet(""); err != nil || len(got) != 0 {
		t.Errorf(`ParseKeySet("") = %v, %v, want empty, nil`, got, err)
	}
	for _, tt := range []struct{ in, want string }{
		{"prod-1", "not keyid:base64pubkey"},
		{"bad id:AAAA", "key ID"},
		{"k:***", "not base64"},
		{"k:AAAA", "has 3 bytes"},
		{s + "," + s, "listed twice"},
	} {
		if _, err := ParseKeySet(tt.in); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ParseKeySet(%q) error = %v, want one containing %q", tt.in, err, tt.want)
		}
	}
	if id := KeyIDFor(pub1); !keyIDPattern.MatchString(id) || id == KeyIDFor(pub2) || id != KeyIDFor(pub1) {
		t.Errorf("KeyIDFor() = %q (other key %q), want a stable, distinct, valid key ID", id, KeyIDFor(pub2))
	}
}

// TestTrustedKeysBuildSettings exercises the -ldflags -X settings by
// setting the variables the linker would set.
func TestTrustedKeysBuildSettings(t *testing.T) {
	oldKeys, oldDev := productionKeys, allowDevKey
	t.Cleanup(func() { productionKeys, allowDevKey = oldKeys, oldDev })

	devPriv, devID := devkey.SigningKey()
	if devID != "dev-1" {
		t.Errorf("devkey.SigningKey() key ID = %q, want dev-1", devID)
	}
	keys := TrustedKeys()
	if len(keys) != 1 || !keys[devID].Equal(devPriv.Public()) || !DevKeyAllowed() {
		t.Fatalf("TrustedKeys() of a default build = %v, want only the development key", keys)
	}

	pub, _ := newKey(t)
	productionKeys, allowDevKey = FormatKeySet(map[string]ed25519.PublicKey{"prod-1": pub}), "false"
	keys = TrustedKeys()
	if len(keys) != 1 || !keys["prod-1"].Equal(pub) || DevKeyAllowed() {
		t.Errorf("TrustedKeys() of a release build = %v, want only prod-1", keys)
	}
	for _, v := range []string{"False", "0", ""} {
		allowDevKey = v
		if keys = TrustedKeys(); len(keys) != 1 || DevKeyAllowed() {
			t.Errorf("TrustedKeys() with allowDevKey %q = %v, want the development key refused", v, keys)
		}
	}
	allowDevKey = "true"
	if keys = TrustedKeys(); len(keys) != 2 {
		t.Errorf("TrustedKeys() with both = %v, want prod-1 and dev-1", keys)
	}

	for _, bad := range []string{"garbage", FormatKeySet(map[string]ed25519.PublicKey{devID: pub})} {
		productionKeys = bad
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("TrustedKeys() with productionKeys %q did not panic", bad)
				}
			}()
			TrustedKeys()
		}()
	}
}

func TestStoreAndLoad(t *testing.T) {
	now := time.Now()
	pub, priv := newKey(t)
	keys := map[string]ed25519.PublicKey{"a": pub}
	dir := t.TempDir()
	path := filepath.Join(dir, "smartproxy.lic")

	if _, err := Load(path, keys); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Load(missing) error = %v, want os.ErrNotExist", err)
	}

	first := mustSign(t, testLicense(now), priv, "a")
	l, err := Store(path, first, keys)
	if err != nil {
		t.Fatalf("Store() error = %v", err)
	}
	if l.Customer != "Example Automotive GmbH" {
		t.Errorf("Store() license customer = %q", l.Customer)
	}
	second := testLicense(now)
	second.Customer = "Renewed Customer"
	secondFile := mustSign(t, second, priv, "a")
	if _, err := Store(path, secondFile, keys); err != nil {
		t.Fatalf("Store(renewal) error = %v", err)
	}
	loaded, err := Load(path, keys)
	if err != nil || loaded.Customer != "Renewed Customer" {
		t.Fatalf("Load() = %+v, %v, want the renewed license", loaded, err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != FileMode {
		t.Errorf("stored file mode = %v, %v, want %v", fi.Mode().Perm(), err, os.FileMode(FileMode))
	}

	// A file that does not verify leaves the stored one untouched.
	tampered := []byte(strings.Replace(string(secondFile), `"key_id": "a"`, `"key_id": "b"`, 1))
	for name, bad := range map[string][]byte{"garbage": []byte("garbage"), "unknown key": tampered,
		"other signer": mustSign(t, testLicense(now), func() ed25519.PrivateKey { _, k := newKey(t); return k }(), "a")} {
		if _, err := Store(path, bad, keys); err == nil {
			t.Errorf("Store(%s) error = nil, want a verification error", name)
		}
	}
	if got, err := os.ReadFile(path); err != nil || string(got) != string(secondFile) {
		t.Errorf("license file after failed Stores = %q, %v, want the previous license unchanged", got, err)
	}

	// A directory that cannot be written: error, nothing changed.
	if _, err := Store(filepath.Join(dir, "missing-dir", "x.lic"), first, keys); err == nil {
		t.Error("Store(into a missing directory) error = nil, want error")
	}

	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != "smartproxy.lic" {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("directory holds %q, want only smartproxy.lic (no temporary files left)", names)
	}

	// Load refuses an oversized file without reading it all.
	big := filepath.Join(dir, "big.lic")
	if err := os.WriteFile(big, make([]byte, 2*MaxFileSize), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(big, keys); err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("Load(oversized) error = %v, want one containing %q", err, "larger than")
	}
	if err := os.Remove(big); err != nil {
		t.Fatal(err)
	}
}

func TestPrivateKeyPEM(t *testing.T) {
	_, priv := newKey(t)
	pemKey, err := EncodePrivateKeyPEM(priv)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParsePrivateKeyPEM(pemKey)
	if err != nil || !got.Equal(priv) {
		t.Fatalf("ParsePrivateKeyPEM(EncodePrivateKeyPEM(k)) = %v, %v, want k", got, err)
	}
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecDER, err := x509.MarshalPKCS8PrivateKey(ec)
	if err != nil {
		t.Fatal(err)
	}
	ecKey := string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: ecDER}))
	for _, tt := range []struct{ name, in, want string }{
		{"not PEM", "junk", "no PEM"},
		{"wrong block", "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n", "no PEM"},
		{"bad DER", "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "PKCS #8"},
		{"ECDSA key", ecKey, "want Ed25519"},
	} {
		if _, err := ParsePrivateKeyPEM([]byte(tt.in)); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: ParsePrivateKeyPEM() error = %v, want one containing %q", tt.name, err, tt.want)
		}
	}
}
