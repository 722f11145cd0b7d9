// Command demosetup prepares what scripts/demo.sh needs besides the tunnel certificates that
// `smartproxy-server pki init` makes: the company's certificate (its own CA), a partner CA
// with a partner certificate whose subject serialNumber is the partner's Odette ID and an
// (empty) CRL of that CA, and the client configuration file, made from the example
// examples/client.json with the demo's addresses, files and partner. It also chooses the ports
// of the demo.
//
//	go run ./scripts/demosetup certs --dir DIR --partner-id ID --company-id ID
//	go run ./scripts/demosetup config --dir DIR --template examples/client.json \
//	    --listen ADDR --internal ADDR --partner-id ID --partner-password PW
//	go run ./scripts/demosetup port PREFERRED
//
// `port` prints "127.0.0.1:PREFERRED" when that port is free on the loopback address, else a
// free high port chosen by the system.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"smartproxy/client/configfile"
	"smartproxy/internal/pki"
)

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "demosetup:", err)
		os.Exit(1)
	}
}

// Files written by the certs command, relative to --dir.
const (
	fileCompanyCA  = "company-ca.pem"
	fileCompany    = "company.pem"
	fileCompanyKey = "company-key.pem"
	filePartnerCA  = "partner-ca.pem"
	filePartnerCRL = "partner-ca.crl"
	filePartner    = "partner.pem"
	filePartnerKey = "partner-key.pem"
	fileConfig     = "client.json"
)

// crlURL is the distribution point named for the partner CA's CRL in the configuration.
const crlURL = "http://crl.partner-ca.demo/partner-ca.crl"

func run(args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New("usage: demosetup certs|config|port [flags]")
	}
	switch args[0] {
	case "certs":
		return certs(args[1:], stdout)
	case "config":
		return config(args[1:], stdout)
	case "port":
		if len(args) != 2 {
			return errors.New("usage: demosetup port PREFERRED")
		}
		return port(args[1], stdout)
	}
	return fmt.Errorf("unknown command %q", args[0])
}

// certs writes the company and partner certificates.
func certs(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("certs", flag.ContinueOnError)
	dir := fs.String("dir", "", "directory to write into (required)")
	partnerID := fs.String("partner-id", "", "the partner's Odette ID (required)")
	companyID := fs.String("company-id", "", "the company's Odette ID (required)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" || *partnerID == "" || *companyID == "" {
		return errors.New("certs: --dir, --partner-id and --company-id are required")
	}
	companyCA, err := pki.NewCA("SmartProxy demo company CA")
	if err != nil {
		return err
	}
	company, err := companyCA.Issue(pki.Request{
		CommonName: "oftp.company.demo", SerialNumber: *companyID, Organization: []string{"Demo Company"},
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}, Usage: pki.UsageServer,
	})
	if err != nil {
		return err
	}
	partnerCA, err := pki.NewCA("SmartProxy demo partner CA")
	if err != nil {
		return err
	}
	partner, err := partnerCA.Issue(pki.Request{
		CommonName: "oftp.partner.demo", SerialNumber: *partnerID, Organization: []string{"Demo Partner"},
		Usage: pki.UsageClient | pki.UsageServer,
	})
	if err != nil {
		return err
	}
	// A CRL that lists a certificate other than the partner's, so that the server really
	// checks revocation on the way in.
	now := time.Now()
	crl, err := partnerCA.CRL([]pki.RevokedCert{{SerialNumber: big.NewInt(4711), ReasonCode: 1}}, now.Add(-time.Hour), now.Add(7*24*time.Hour))
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*dir, 0o700); err != nil {
		return err
	}
	files := []struct {
		name string
		data []byte
		mode os.FileMode
		what string
	}{
		{fileCompanyCA, companyCA.CertPEM, pki.CertFileMode, "company CA (partners trust it)"},
		{fileCompany, company.CertPEM, pki.CertFileMode, "company certificate partners see (" + *companyID + ")"},
		{fileCompanyKey, company.KeyPEM, pki.KeyFileMode, "its private key"},
		{filePartnerCA, partnerCA.CertPEM, pki.CertFileMode, "partner CA (the proxy trusts it)"},
		{filePartnerCRL, crl, pki.CertFileMode, "CRL of the partner CA"},
		{filePartner, partner.CertPEM, pki.CertFileMode, "partner certificate (subject serialNumber " + *partnerID + ")"},
		{filePartnerKey, partner.KeyPEM, pki.KeyFileMode, "its private key"},
	}
	for _, f := range files {
		path := filepath.Join(*dir, f.name)
		if err := pki.WriteFile(path, f.data, f.mode); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%-40s %s\n", path, f.what)
	}
	return nil
}

// config writes the client configuration file from the example.
func config(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("config", flag.ContinueOnError)
	dir := fs.String("dir", "", "directory of the certificate files; the configuration is written there (required)")
	template := fs.String("template", "", "the example configuration file (required)")
	listen := fs.String("listen", "", "partner listen address (required)")
	internal := fs.String("internal", "", "internal OFTP2 server address (required)")
	partnerID := fs.String("partner-id", "", "the partner's Odette ID (required)")
	partnerPassword := fs.String("partner-password", "", "the partner's SSID password")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" || *template == "" || *listen == "" || *internal == "" || *partnerID == "" {
		return errors.New("config: --dir, --template, --listen, --internal and --partner-id are required")
	}
	data, err := os.ReadFile(*template)
	if err != nil {
		return err
	}
	var f configfile.File
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return fmt.Errorf("template %s: %w", *template, err)
	}
	if len(f.Partners) == 0 || f.InternalServer == nil {
		return fmt.Errorf("template %s: no partners or no internal_server", *template)
	}
	f.PartnerListenAddress = *listen
	f.CompanyCertificate, f.CompanyKey = fileCompany, fileCompanyKey
	f.TrustedCAFiles = []string{filePartnerCA}
	f.CRLs = []configfile.CRL{{File: filePartnerCRL, URL: crlURL}}
	// The example's first partner becomes the demo partner; the example's others name files
	// and networks the demo does not have, except a disabled one, which is kept.
	p := f.Partners[0]
	p.OdetteID, p.Name, p.Password = *partnerID, "Demo Partner", *partnerPassword
	partners := []configfile.Partner{p}
	for _, q := range f.Partners[1:] {
		if q.Enabled != nil && !*q.Enabled {
			partners = append(partners, q)
		}
	}
	f.Partners = partners
	f.InternalServer.Address = *internal
	f.InternalServer.TLS = nil
	f.LogIgnoreRules = nil
	out, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	path := filepath.Join(*dir, fileConfig)
	if err := pki.WriteFile(path, append(out, '\n'), 0o600); err != nil {
		return err
	}
	fmt.Fprintln(stdout, path)
	return nil
}

// port prints 127.0.0.1:preferred when that port is free, else a free port.
func port(preferred string, stdout io.Writer) error {
	if _, err := strconv.ParseUint(preferred, 10, 16); err != nil {
		return fmt.Errorf("port %q: %w", preferred, err)
	}
	ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", preferred))
	if err != nil {
		if ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
			return err
		}
	}
	addr := ln.Addr().String()
	ln.Close()
	fmt.Fprintln(stdout, addr)
	return nil
}
