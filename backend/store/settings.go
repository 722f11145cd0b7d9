package store

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"database/sql"
	"encoding/hex"
	"fmt"
	"math"
	"net/netip"
	"sort"
	"strconv"
	"strings"
	"time"

	"smartproxy/internal/pki"
)

// SettingKind says how a setting's value is written and checked.
type SettingKind int

// Setting kinds.
const (
	// KindText is free text.
	KindText SettingKind = iota
	// KindListenAddress is "host:port" to listen on; host an IP or empty,
	// port 0 allowed.
	KindListenAddress
	// KindAddress is "host:port" to connect to.
	KindAddress
	// KindDuration is a positive Go duration such as "30s".
	KindDuration
	// KindCount is a non-negative integer.
	KindCount
	// KindRate is a non-negative decimal number.
	KindRate
	// KindCertificateChain is PEM certificates, leaf first; given as a file.
	KindCertificateChain
	// KindCACertificates is PEM CA certificates; given as a file.
	KindCACertificates
	// KindPrivateKey is a PEM private key; given as a file; secret.
	KindPrivateKey
	// KindLogLevel is trace, debug, info, warn or error.
	KindLogLevel
	// KindIP is an IP address.
	KindIP
	// KindServerName is a DNS name or IP address.
	KindServerName
	// KindRevocation is soft or hard.
	KindRevocation
	// KindSources is a comma-separated list of IP addresses and CIDR networks.
	KindSources
)

// FromFile reports whether the admin CLI takes a file name for settings of
// this kind and stores the file's content.
func (k SettingKind) FromFile() bool {
	return k == KindCertificateChain || k == KindCACertificates || k == KindPrivateKey
}

// Secret reports whether values of this kind are secret.
func (k SettingKind) Secret() bool { return k == KindPrivateKey }

// SettingDef describes one setting key.
type SettingDef struct {
	// Key is the setting's name, the JSON path of the value in the
	// configuration document.
	Key string
	// Kind says how the value is written and checked.
	Kind SettingKind
	// Min and Max bound a KindCount value (Max 0: no bound but uint32).
	Min, Max uint64
	// Doc describes the setting and what an unset value means.
	Doc string
}

// SettingDefs lists every setting key, in the order `config show` prints
// them.
var SettingDefs = []SettingDef{
	{Key: "partner_listen_address", Kind: KindListenAddress, Doc: `"host:port" the DMZ server accepts partners on; unset: ":6619"`},
	{Key: "company_certificate", Kind: KindCertificateChain, Doc: "PEM file with the company's certificate chain, leaf first, which partners see"},
	{Key: "company_key", Kind: KindPrivateKey, Doc: "PEM file with the private key of company_certificate"},
	{Key: "internal_server.address", Kind: KindAddress, Doc: `"host:port" of the internal OFTP2 server incoming sessions go to`},
	{Key: "internal_server.connect_timeout", Kind: KindDuration, Doc: "time allowed to connect to the internal server; unset: the client's default"},
	{Key: "internal_server.ssrm_timeout", Kind: KindDuration, Doc: "time allowed for the internal server's SSRM; unset: the client's default"},
	{Key: "internal_server.tls.ca", Kind: KindCACertificates, Doc: "PEM file with the CAs the internal server's certificate must chain to; setting it makes the client use TLS"},
	{Key: "internal_server.tls.certificate", Kind: KindCertificateChain, Doc: "PEM file with the client certificate chain presented to the internal server"},
	{Key: "internal_server.tls.key", Kind: KindPrivateKey, Doc: "PEM file with the private key of internal_server.tls.certificate"},
	{Key: "internal_server.tls.server_name", Kind: KindServerName, Doc: "name the internal server's certificate is verified against; unset: the host of the address"},
	{Key: "limits.max_sessions", Kind: KindCount, Max: math.MaxUint32, Doc: "maximum concurrent partner sessions; unset: the server's default"},
	{Key: "limits.max_handshakes", Kind: KindCount, Max: math.MaxUint32, Doc: "maximum concurrent TLS handshakes and SSID exchanges; unset: the server's default"},
	{Key: "limits.max_handshakes_per_source", Kind: KindCount, Max: math.MaxUint32, Doc: "maximum concurrent TLS handshakes and SSID exchanges from one source address; unset: the server's default"},
	{Key: "limits.max_handshakes_per_prefix", Kind: KindCount, Max: math.MaxUint32, Doc: "maximum concurrent TLS handshakes and SSID exchanges from one network prefix; unset: the server's default"},
	{Key: "limits.prefix_length_v4", Kind: KindCount, Min: 8, Max: 32, Doc: "IPv4 prefix length limits.max_handshakes_per_prefix counts, 8 to 32; unset: 24"},
	{Key: "limits.prefix_length_v6", Kind: KindCount, Min: 16, Max: 128, Doc: "IPv6 prefix length limits.max_handshakes_per_prefix counts, 16 to 128; unset: 64"},
	{Key: "limits.per_ip_rate", Kind: KindRate, Doc: "new connections per second from one IP address; unset: the server's default"},
	{Key: "limits.per_ip_burst", Kind: KindCount, Max: math.MaxUint32, Doc: "burst of the per-IP rate limit; unset: the server's default"},
	{Key: "limits.handshake_timeout", Kind: KindDuration, Doc: "time allowed for a partner's TLS handshake; unset: the server's default"},
	{Key: "limits.ssid_timeout", Kind: KindDuration, Doc: "time allowed for a partner's SSID after SSRM; unset: the server's default"},
	{Key: "limits.idle_timeout", Kind: KindDuration, Doc: "a session without any command for this long is ended; unset: the server's default"},
	{Key: "limits.max_credit", Kind: KindCount, Min: 1, Max: 999, Doc: "cap of the SSID credit passed on, 1 to 999; unset: no cap"},
	{Key: "limits.max_buffer_size", Kind: KindCount, Min: 128, Max: 99999, Doc: "cap of the SSID exchange buffer size passed on, 128 to 99999; unset: no cap"},
	{Key: "log_level", Kind: KindLogLevel, Doc: "the DMZ server's log level: trace, debug, info, warn or error; unset: the server keeps its own"},
	{Key: "outgoing_source_ip", Kind: KindIP, Doc: "source IP address of outgoing partner connections; unset: the system chooses"},
	{Key: "proxy_protocol.allowed_sources", Kind: KindSources, Doc: "load balancers allowed to send a PROXY protocol v2 header, IP addresses or CIDR networks separated by commas; setting it turns PROXY protocol on for the partner listener; unset: off"},
	{Key: "revocation", Kind: KindRevocation, Doc: "partner certificates no CRL covers or whose CRL is past its nextUpdate: soft accepts them with a warning, hard refuses them; unset: soft"},
}

// LookupSetting returns the definition of key.
func LookupSetting(key string) (SettingDef, bool) {
	for _, d := range SettingDefs {
		if d.Key == key {
			return d, true
		}
	}
	return SettingDef{}, false
}

// SettingKeys returns every setting key, sorted.
func SettingKeys() []string {
	keys := make([]string, len(SettingDefs))
	for i, d := range SettingDefs {
		keys[i] = d.Key
	}
	sort.Strings(keys)
	return keys
}

// SettingChange sets Key to Value, or removes the setting when Value is "".
type SettingChange struct {
	// Key is one of the keys of SettingDefs.
	Key string
	// Value is the new value in the form SettingDef.Kind describes (for
	// file kinds the file's content); "" removes the setting.
	Value string
}

// Settings are the proxy settings with their typed values. A zero value
// means the setting is not set.
type Settings struct {
	// PartnerListenAddress is "host:port" the DMZ server accepts partners on.
	PartnerListenAddress string
	// CompanyCertificatePEM is the company's certificate chain, leaf first.
	CompanyCertificatePEM string
	// CompanyKeyPEM is the private key of the company certificate. Secret.
	CompanyKeyPEM string
	// InternalServer is the internal OFTP2 server.
	InternalServer InternalServer
	// Limits are the partner listener's limits.
	Limits Limits
	// LogLevel is the DMZ server's log level.
	LogLevel string
	// OutgoingSourceIP is the source address of outgoing partner connections.
	OutgoingSourceIP string
	// Revocation is the revocation policy, "soft" or "hard"; empty: soft.
	Revocation string
	// ProxyProtocolSources are the load balancers allowed to send a PROXY protocol header;
	// empty: PROXY protocol is off.
	ProxyProtocolSources []string
}

// InternalServer is the internal OFTP2 server incoming sessions go to.
type InternalServer struct {
	// Address is its "host:port".
	Address string
	// ConnectTimeout bounds connecting to it.
	ConnectTimeout time.Duration
	// SSRMTimeout bounds the wait for its SSRM.
	SSRMTimeout time.Duration
	// TLSCAPEM are the CAs its certificate must chain to. Any TLS setting
	// makes the client use TLS.
	TLSCAPEM string
	// TLSCertificatePEM is the client certificate chain presented.
	TLSCertificatePEM string
	// TLSKeyPEM is the private key of TLSCertificatePEM. Secret.
	TLSKeyPEM string
	// TLSServerName is the name its certificate is verified against.
	TLSServerName string
}

// TLS reports whether any TLS setting is present.
func (s InternalServer) TLS() bool {
	return s.TLSCAPEM != "" || s.TLSCertificatePEM != "" || s.TLSKeyPEM != "" || s.TLSServerName != ""
}

// Limits are the partner listener's resource limits. A zero value means
// the DMZ server's default (no cap for MaxCredit and MaxBufferSize).
type Limits struct {
	// MaxSessions is the maximum of concurrent partner sessions.
	MaxSessions uint32
	// MaxHandshakes is the maximum of concurrent TLS handshakes and SSID
	// exchanges.
	MaxHandshakes uint32
	// PerIPRate is the number of new connections per second from one IP.
	PerIPRate float64
	// PerIPBurst is the burst of the per-IP rate limit.
	PerIPBurst uint32
	// HandshakeTimeout bounds a partner's TLS handshake.
	HandshakeTimeout time.Duration
	// SSIDTimeout bounds the wait for a partner's SSID.
	SSIDTimeout time.Duration
	// IdleTimeout ends a session without commands for this long.
	IdleTimeout time.Duration
	// MaxCredit caps the SSID credit passed on (1 to 999).
	MaxCredit uint32
	// MaxBufferSize caps the SSID exchange buffer size (128 to 99999).
	MaxBufferSize uint32
	// MaxHandshakesPerSource is the maximum of concurrent TLS handshakes
	// and SSID exchanges from one source address.
	MaxHandshakesPerSource uint32
	// MaxHandshakesPerPrefix is the maximum of concurrent TLS handshakes
	// and SSID exchanges from one network prefix.
	MaxHandshakesPerPrefix uint32
	// PrefixLengthV4 and PrefixLengthV6 are the prefix lengths
	// MaxHandshakesPerPrefix counts.
	PrefixLengthV4, PrefixLengthV6 uint32
}

// SettingValue is one stored setting.
type SettingValue struct {
	// Key names the setting.
	Key string
	// Value is the stored value; secret for KindPrivateKey.
	Value string
	// UpdatedAt is when it was last changed.
	UpdatedAt time.Time
}

// parseSetting checks value for def and returns it in the form stored.
func parseSetting(def SettingDef, value string) (string, error) {
	f := def.Key
	if err := checkText(f, value, 1<<20); err != nil {
		return "", err
	}
	switch def.Kind {
	case KindListenAddress:
		return value, checkAddress(f, value, true)
	case KindAddress:
		return value, checkAddress(f, value, false)
	case KindDuration:
		d, err := time.ParseDuration(value)
		if err != nil {
			return "", invalid(f, "%q is not a duration (write it like \"30s\", \"1m30s\" or \"2h\")", value)
		}
		if d <= 0 {
			return "", invalid(f, "%q is not positive", value)
		}
		return d.String(), nil
	case KindCount:
		n, err := strconv.ParseUint(value, 10, 64)
		if err != nil {
			return "", invalid(f, "%q is not a whole number", value)
		}
		if n < def.Min || def.Max != 0 && n > def.Max {
			return "", invalid(f, "%d is out of range; want %d to %d", n, def.Min, def.Max)
		}
		return strconv.FormatUint(n, 10), nil
	case KindRate:
		r, err := strconv.ParseFloat(value, 64)
		if err != nil || r < 0 || math.IsInf(r, 0) || math.IsNaN(r) {
			return "", invalid(f, "%q is not a non-negative number", value)
		}
		return strconv.FormatFloat(r, 'g', -1, 64), nil
	case KindCertificateChain:
		certs, err := pki.ParseCertificatesPEM([]byte(value))
		if err != nil {
			return "", invalid(f, "%v", strings.TrimPrefix(err.Error(), "pki: "))
		}
		if certs[0].IsCA {
			return "", invalid(f, "the first certificate (%s) is a CA certificate; want the leaf first", certs[0].Subject)
		}
		return value, nil
	case KindCACertificates:
		certs, err := pki.ParseCertificatesPEM([]byte(value))
		if err != nil {
			return "", invalid(f, "%v", strings.TrimPrefix(err.Error(), "pki: "))
		}
		for i, c := range certs {
			if !c.IsCA {
				return "", invalid(f, "certificate %d (%s) is not a CA certificate", i, c.Subject)
			}
		}
		return value, nil
	case KindPrivateKey:
		if _, err := pki.ParsePrivateKeyPEM([]byte(value)); err != nil {
			return "", invalid(f, "not a PEM private key (PKCS #8, PKCS #1 or SEC 1)")
		}
		return value, nil
	case KindLogLevel:
		l := strings.ToLower(value)
		switch l {
		case "trace", "debug", "info", "warn", "error":
			return l, nil
		case "warning":
			return "warn", nil
		}
		return "", invalid(f, "%q is not a log level; want trace, debug, info, warn or error", value)
	case KindRevocation:
		switch l := strings.ToLower(value); l {
		case "soft", "hard":
			return l, nil
		}
		return "", invalid(f, "%q is not a revocation policy; want soft or hard", value)
	case KindIP:
		return value, checkIP(f, value)
	case KindSources:
		return parseSources(f, value)
	case KindServerName:
		return value, checkServerName(f, value)
	}
	return value, checkText(f, value, maxText)
}

// settingsFrom builds Settings from stored key/value pairs, which parseSetting
// accepted before.
func settingsFrom(kv map[string]string) (Settings, error) {
	var s Settings
	dur := func(k string) time.Duration {
		d, _ := time.ParseDuration(kv[k])
		return d
	}
	count := func(k string) uint32 {
		n, _ := strconv.ParseUint(kv[k], 10, 32)
		return uint32(n)
	}
	s.PartnerListenAddress = kv["partner_listen_address"]
	s.CompanyCertificatePEM = kv["company_certificate"]
	s.CompanyKeyPEM = kv["company_key"]
	s.InternalServer = InternalServer{
		Address:           kv["internal_server.address"],
		ConnectTimeout:    dur("internal_server.connect_timeout"),
		SSRMTimeout:       dur("internal_server.ssrm_timeout"),
		TLSCAPEM:          kv["internal_server.tls.ca"],
		TLSCertificatePEM: kv["internal_server.tls.certificate"],
		TLSKeyPEM:         kv["internal_server.tls.key"],
		TLSServerName:     kv["internal_server.tls.server_name"],
	}
	s.Limits = Limits{
		MaxSessions:      count("limits.max_sessions"),
		MaxHandshakes:    count("limits.max_handshakes"),
		PerIPBurst:       count("limits.per_ip_burst"),
		HandshakeTimeout: dur("limits.handshake_timeout"),
		SSIDTimeout:      dur("limits.ssid_timeout"),
		IdleTimeout:      dur("limits.idle_timeout"),
		MaxCredit:        count("limits.max_credit"),
		MaxBufferSize:    count("limits.max_buffer_size"),

		MaxHandshakesPerSource: count("limits.max_handshakes_per_source"),
		MaxHandshakesPerPrefix: count("limits.max_handshakes_per_prefix"),
		PrefixLengthV4:         count("limits.prefix_length_v4"),
		PrefixLengthV6:         count("limits.prefix_length_v6"),
	}
	if v := kv["limits.per_ip_rate"]; v != "" {
		s.Limits.PerIPRate, _ = strconv.ParseFloat(v, 64)
	}
	s.LogLevel = kv["log_level"]
	s.OutgoingSourceIP = kv["outgoing_source_ip"]
	s.Revocation = kv["revocation"]
	if v := kv["proxy_protocol.allowed_sources"]; v != "" {
		s.ProxyProtocolSources = strings.Split(v, ",")
	}
	return s, nil
}

// parseSources checks a comma-separated list of IP addresses and CIDR networks and returns it
// without spaces.
func parseSources(f, value string) (string, error) {
	var out []string
	for _, src := range strings.Split(value, ",") {
		src = strings.TrimSpace(src)
		if _, err := netip.ParseAddr(src); err == nil {
			out = append(out, src)
			continue
		}
		pfx, err := netip.ParsePrefix(src)
		if err != nil {
			return "", invalid(f, "%q is neither an IP address nor a network in CIDR notation such as 10.0.0.0/29", src)
		}
		if pfx != pfx.Masked() {
			return "", invalid(f, "%q has host bits set; did you mean %s?", src, pfx.Masked())
		}
		out = append(out, src)
	}
	return strings.Join(out, ","), nil
}

// checkPair checks that a certificate chain and a private key belong
// together when both are set.
func checkPair(certKey, keyKey, certPEM, keyPEM string) error {
	if certPEM == "" || keyPEM == "" {
		return nil
	}
	certs, err := pki.ParseCertificatesPEM([]byte(certPEM))
	if err != nil {
		return invalid(certKey, "%v", err)
	}
	key, err := pki.ParsePrivateKeyPEM([]byte(keyPEM))
	if err != nil {
		return invalid(keyKey, "not a PEM private key")
	}
	pub, ok := certs[0].PublicKey.(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(key.Public()) {
		return invalid(keyKey, "does not belong to %s (%s); set both in one command: config set %s FILE %s FILE",
			certKey, certs[0].Subject, certKey, keyKey)
	}
	return nil
}

// SetSettings applies changes in one transaction after checking each value
// and the resulting settings as a whole (a certificate and its key must
// belong together). On any error nothing is changed.
func (s *Store) SetSettings(ctx context.Context, changes []SettingChange) error {
	if len(changes) == 0 {
		return invalid("", "no setting given")
	}
	clean := make([]SettingChange, 0, len(changes))
	seen := make(map[string]bool)
	for _, c := range changes {
		def, ok := LookupSetting(c.Key)
		if !ok {
			return invalid(c.Key, "unknown setting; known settings: %s", strings.Join(SettingKeys(), ", "))
		}
		if seen[c.Key] {
			return invalid(c.Key, "given twice")
		}
		seen[c.Key] = true
		if c.Value == "" {
			clean = append(clean, c)
			continue
		}
		v, err := parseSetting(def, c.Value)
		if err != nil {
			return err
		}
		clean = append(clean, SettingChange{Key: c.Key, Value: v})
	}
	now := ts(s.now())
	return s.write(ctx, func(tx *sql.Tx) error {
		kv, err := readSettings(ctx, tx)
		if err != nil {
			return err
		}
		for _, c := range clean {
			if c.Value == "" {
				delete(kv, c.Key)
			} else {
				kv[c.Key] = c.Value
			}
		}
		if err := checkPair("company_certificate", "company_key", kv["company_certificate"], kv["company_key"]); err != nil {
			return err
		}
		if err := checkPair("internal_server.tls.certificate", "internal_server.tls.key",
			kv["internal_server.tls.certificate"], kv["internal_server.tls.key"]); err != nil {
			return err
		}
		if (kv["internal_server.tls.certificate"] == "") != (kv["internal_server.tls.key"] == "") {
			return invalid("internal_server.tls.key", "internal_server.tls.certificate and internal_server.tls.key are set together")
		}
		for _, c := range clean {
			var err error
			if c.Value == "" {
				_, err = tx.ExecContext(ctx, `DELETE FROM settings WHERE key = ?`, c.Key)
			} else {
				_, err = tx.ExecContext(ctx, `INSERT INTO settings (key, value, updated_at) VALUES (?, ?, ?)
					ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at
					WHERE value <> excluded.value`, c.Key, c.Value, now)
			}
			if err != nil {
				return fmt.Errorf("store: set %s: %w", c.Key, err)
			}
		}
		return nil
	})
}

type execQueryer interface {
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

func readSettings(ctx context.Context, q execQueryer) (map[string]string, error) {
	rows, err := q.QueryContext(ctx, `SELECT key, value FROM settings`)
	if err != nil {
		return nil, fmt.Errorf("store: read settings: %w", err)
	}
	defer rows.Close()
	kv := make(map[string]string)
	for rows.Next() {
		var k, v string
		if err := rows.Scan(&k, &v); err != nil {
			return nil, err
		}
		kv[k] = v
	}
	return kv, rows.Err()
}

// SettingValues returns the stored settings in the order of SettingDefs.
// Secret values are included: callers redact them for display.
func (s *Store) SettingValues(ctx context.Context) ([]SettingValue, error) {
	var list []SettingValue
	err := s.read(ctx, func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `SELECT key, value, updated_at FROM settings`)
		if err != nil {
			return err
		}
		defer rows.Close()
		byKey := make(map[string]SettingValue)
		for rows.Next() {
			var v SettingValue
			var at string
			if err := rows.Scan(&v.Key, &v.Value, &at); err != nil {
				return err
			}
			if v.UpdatedAt, err = mustTS(at); err != nil {
				return err
			}
			byKey[v.Key] = v
		}
		for _, d := range SettingDefs {
			if v, ok := byKey[d.Key]; ok {
				list = append(list, v)
			}
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("store: read settings: %w", err)
	}
	return list, nil
}

// Settings returns the typed settings.
func (s *Store) Settings(ctx context.Context) (Settings, error) {
	var out Settings
	err := s.read(ctx, func(tx *sql.Tx) error {
		kv, err := readSettings(ctx, tx)
		if err != nil {
			return err
		}
		out, err = settingsFrom(kv)
		return err
	})
	return out, err
}

// DescribePEM summarises a stored PEM value for display: the subjects and
// SHA-256 fingerprints of certificates, the type of a private key (never
// its content).
func DescribePEM(kind SettingKind, value string) string {
	if kind == KindPrivateKey {
		key, err := pki.ParsePrivateKeyPEM([]byte(value))
		if err != nil {
			return "(unreadable private key)"
		}
		return fmt.Sprintf("(private key, %s, %d bytes, redacted)", keyType(key), len(value))
	}
	certs, err := pki.ParseCertificatesPEM([]byte(value))
	if err != nil {
		return "(unreadable certificates)"
	}
	parts := make([]string, len(certs))
	for i, c := range certs {
		parts[i] = fmt.Sprintf("%s [sha256 %s, until %s]", c.Subject, Fingerprint(c), c.NotAfter.UTC().Format(time.RFC3339))
	}
	return strings.Join(parts, "; ")
}

// Fingerprint returns the SHA-256 of the certificate's DER in lower-case hex.
func Fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}

func keyType(k crypto.Signer) string {
	switch pub := k.Public().(type) {
	case *rsa.PublicKey:
		return fmt.Sprintf("RSA %d", pub.N.BitLen())
	case *ecdsa.PublicKey:
		return "ECDSA " + pub.Curve.Params().Name
	case ed25519.PublicKey:
		return "Ed25519"
	}
	return fmt.Sprintf("%T", k.Public())
}
