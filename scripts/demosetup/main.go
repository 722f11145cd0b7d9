// Command demosetup makes what scripts/demo.sh needs and neither `smartproxy-server pki init`
// (the tunnel certificates) nor the backend's admin CLI (`smartproxy-api`, which holds the whole
// configuration) can make: the company's certificate (its own CA), a partner CA with a partner
// certificate whose subject serialNumber is the partner's Odette ID, and a CRL of that CA. The
// demo imports them into the backend with `smartproxy-api config set`, `ca add` and `crl
// import`. It also chooses the ports of the demo.
//
//	go run ./scripts/demosetup certs --dir DIR --partner-id ID --company-id ID
//	go run ./scripts/demosetup port PREFERRED
//
// `port` prints "127.0.0.1:PREFERRED" when that port is free on the loopback address, else a
// free high port chosen by the system.
package main

import (
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
)

func run(args []string, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New("usage: demosetup certs|port [flags]")
	}
	switch args[0] {
	case "certs":
		return certs(args[1:], stdout)
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
		// Server certificate for partners that call, client certificate when the DMZ server
		// calls a partner (outgoing sessions).
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}, Usage: pki.UsageServer | pki.UsageClient,
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
		// The partner's OFTP2 server of the demo's outgoing session runs on loopback too.
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
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
