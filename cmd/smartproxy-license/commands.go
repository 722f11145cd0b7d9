package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"smartproxy/internal/license"
	"smartproxy/internal/license/devkey"
	"smartproxy/internal/pki"
)

// maxDays bounds --days, to catch typos such as 36500 for 365.
const maxDays = 10 * 366

func newFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("smartproxy-license "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

// refuseOverwrite fails when path exists and force is false.
func refuseOverwrite(path string, force bool) error {
	if force {
		return nil
	}
	if _, err := os.Lstat(path); err == nil {
		return fmt.Errorf("%s exists; use --force to replace it", path)
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	return nil
}

func runKeygen(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("keygen", stderr)
	out := fs.String("out", "", "file for the new private key (PKCS #8 PEM, mode 0600); required")
	keyID := fs.String("key-id", "", "key ID to print with the public key (default: derived from the key)")
	force := fs.Bool("force", false, "replace an existing key file")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef("keygen: unexpected argument %q", pos[0])
	}
	if *out == "" {
		return usagef("keygen: --out is required")
	}
	if err := refuseOverwrite(*out, *force); err != nil {
		return fmt.Errorf("keygen: %w", err)
	}
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return fmt.Errorf("keygen: %w", err)
	}
	id := *keyID
	if id == "" {
		id = license.KeyIDFor(pub)
	}
	set := license.FormatKeySet(map[string]ed25519.PublicKey{id: pub})
	if _, err := license.ParseKeySet(set); err != nil {
		return usagef("keygen: --key-id: %v", err)
	}
	pemKey, err := license.EncodePrivateKeyPEM(priv)
	if err != nil {
		return fmt.Errorf("keygen: %w", err)
	}
	if err := pki.WriteKeyFile(*out, pemKey); err != nil {
		return fmt.Errorf("keygen: %w", err)
	}
	fmt.Fprintf(stdout, "private key: %s (keep it offline; it signs licenses)\n", *out)
	fmt.Fprintf(stdout, "key id:      %s\n", id)
	fmt.Fprintf(stdout, "public key:  %s\n", set)
	fmt.Fprintf(stdout, "release build: -ldflags \"-X smartproxy/internal/license.productionKeys=%s -X smartproxy/internal/license.allowDevKey=false\"\n", set)
	return nil
}

func runIssue(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("issue", stderr)
	proxyID := fs.String("proxy-id", "", "Proxy ID of the licensed host (smartproxy-server -L); required")
	customer := fs.String("customer", "", "licensee name; required")
	days := fs.Int("days", 0, "validity in days from --not-before; required")
	keyFile := fs.String("key", "", "Ed25519 signing key (PKCS #8 PEM)")
	keyID := fs.String("key-id", "", "key ID of --key (default: derived from the key, as keygen prints it)")
	dev := fs.Bool("dev", false, "sign with the development key (accepted by development builds only)")
	maxSessions := fs.Int("max-sessions", 0, "maximum concurrent partner sessions; 0 means unlimited")
	features := fs.String("features", "", "comma-separated licensed features")
	notBefore := fs.String("not-before", "", "start of validity, RFC 3339 (default: now)")
	out := fs.String("out", "", `license file to write, or "-" for standard output; required`)
	force := fs.Bool("force", false, "replace an existing license file")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	switch {
	case len(pos) > 0:
		return usagef("issue: unexpected argument %q", pos[0])
	case *proxyID == "" || *customer == "" || *out == "":
		return usagef("issue: --proxy-id, --customer and --out are required")
	case *days <= 0 || *days > maxDays:
		return usagef("issue: --days must be between 1 and %d", maxDays)
	case *maxSessions < 0:
		return usagef("issue: --max-sessions must not be negative")
	case (*keyFile == "") == !*dev:
		return usagef("issue: give exactly one of --key FILE and --dev")
	case *dev && *keyID != "":
		return usagef("issue: --key-id applies to --key only")
	}
	id, err := license.NormalizeProxyID(*proxyID)
	if err != nil {
		return usagef("issue: --proxy-id: %v", err)
	}
	start := time.Now()
	if *notBefore != "" {
		if start, err = time.Parse(time.RFC3339, *notBefore); err != nil {
			return usagef("issue: --not-before: %v", err)
		}
	}
	var key ed25519.PrivateKey
	var kid string
	if *dev {
		key, kid = devkey.SigningKey()
	} else {
		data, err := os.ReadFile(*keyFile)
		if err != nil {
			return fmt.Errorf("issue: %w", err)
		}
		if key, err = license.ParsePrivateKeyPEM(data); err != nil {
			return fmt.Errorf("issue: %s: %w", *keyFile, err)
		}
		kid = *keyID
		if kid == "" {
			kid = license.KeyIDFor(key.Public().(ed25519.PublicKey))
		}
	}
	var feats []string
	for f := range strings.SplitSeq(*features, ",") {
		if f = strings.TrimSpace(f); f != "" {
			feats = append(feats, f)
		}
	}
	l := license.License{
		ProxyID:     id,
		Customer:    *customer,
		NotBefore:   start,
		NotAfter:    start.Add(time.Duration(*days) * 24 * time.Hour),
		MaxSessions: *maxSessions,
		Features:    feats,
	}
	file, err := license.Sign(l, key, kid)
	if err != nil {
		return fmt.Errorf("issue: %w", err)
	}
	if *out == "-" {
		_, err := stdout.Write(file)
		return err
	}
	if err := refuseOverwrite(*out, *force); err != nil {
		return fmt.Errorf("issue: %w", err)
	}
	if err := pki.WriteFile(*out, file, license.FileMode); err != nil {
		return fmt.Errorf("issue: %w", err)
	}
	fmt.Fprintf(stdout, "wrote license for %s (%s) valid until %s, signed with key %s, to %s\n",
		id, *customer, l.NotAfter.UTC().Truncate(time.Second).Format(time.RFC3339), kid, *out)
	return nil
}

// errNotValid makes inspect exit with status 1 after printing.
var errNotValid = errors.New("license is not valid")

func runInspect(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("inspect", stderr)
	proxyID := fs.String("proxy-id", "", "also check that the license is for this Proxy ID")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		return usagef("inspect: give exactly one license file")
	}
	data, err := os.ReadFile(pos[0])
	if err != nil {
		return fmt.Errorf("inspect: %w", err)
	}
	l, err := license.DecodeUnverified(data)
	if err != nil {
		return fmt.Errorf("inspect: %s: %w", pos[0], err)
	}
	sessions := "unlimited"
	if l.MaxSessions > 0 {
		sessions = fmt.Sprint(l.MaxSessions)
	}
	feats := strings.Join(l.Features, ", ")
	if feats == "" {
		feats = "(none)"
	}
	fmt.Fprintf(stdout, "file:         %s\n", pos[0])
	fmt.Fprintf(stdout, "proxy id:     %s\n", l.ProxyID)
	fmt.Fprintf(stdout, "customer:     %s\n", l.Customer)
	fmt.Fprintf(stdout, "issued at:    %s\n", l.IssuedAt.UTC().Format(time.RFC3339))
	fmt.Fprintf(stdout, "not before:   %s\n", l.NotBefore.UTC().Format(time.RFC3339))
	fmt.Fprintf(stdout, "not after:    %s\n", l.NotAfter.UTC().Format(time.RFC3339))
	fmt.Fprintf(stdout, "max sessions: %s\n", sessions)
	fmt.Fprintf(stdout, "features:     %s\n", feats)
	fmt.Fprintf(stdout, "key id:       %s\n", l.KeyID)

	valid := true
	if _, err := license.Parse(data, license.TrustedKeys()); err != nil {
		fmt.Fprintf(stdout, "signature:    NOT VERIFIED by this binary's keys: %v\n", err)
		valid = false
	} else {
		note := ""
		if l.KeyID == license.DevKeyID {
			note = " (development key: release builds reject it)"
		}
		fmt.Fprintf(stdout, "signature:    verified%s\n", note)
	}
	now := time.Now()
	check := *proxyID
	if check == "" {
		check = l.ProxyID // validity in time only
	}
	if err := l.Check(check, now); err != nil {
		fmt.Fprintf(stdout, "validity:     NOT VALID: %v\n", err)
		valid = false
	} else {
		fmt.Fprintf(stdout, "validity:     valid now, %s left\n", l.NotAfter.Sub(now).Truncate(time.Minute))
	}
	if !valid {
		return errNotValid
	}
	return nil
}
