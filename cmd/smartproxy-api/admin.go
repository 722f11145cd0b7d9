package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"smartproxy/backend"
	"smartproxy/backend/store"
	"smartproxy/internal/license"
	"smartproxy/internal/pki"
)

// maxInputFile is the largest certificate, key or license file read.
const maxInputFile = 1 << 20

// maxCRLFile is the largest CRL file imported.
const maxCRLFile = 256 << 20

func table(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 4, 2, ' ', 0) }

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// --- init and fingerprint ---

func runInit(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, c := newFlags("init", "init [--client NAME] [--host NAME]...", stderr)
	client := fs.String("client", "proxy-1", "name of the first proxy client, which gets a token")
	var hosts listFlag
	fs.Var(&hosts, "host", "extra DNS name or IP address for the generated TLS certificate (repeatable)")
	if _, err := parseExact(fs, args, 0, ""); err != nil {
		return err
	}
	if err := store.ValidateClientName(*client); err != nil {
		return usagef("init: --client: %v", err)
	}
	path := c.dbPath()
	if _, err := os.Stat(path); err == nil {
		return fmt.Errorf("init: the database %s exists already; use \"token create --client NAME\" for another token", path)
	}
	if err := os.MkdirAll(c.dataDir, 0o700); err != nil {
		return fmt.Errorf("init: %w", err)
	}
	st, err := store.Open(ctx, path, store.Options{Create: true})
	if err != nil {
		return err
	}
	defer st.Close()
	token, _, err := st.CreateToken(ctx, *client)
	if err != nil {
		return err
	}
	certFile, _, created, err := backend.EnsureSelfSigned(c.dataDir, hosts, time.Now())
	if err != nil {
		return fmt.Errorf("init: TLS certificate: %w", err)
	}
	fp, err := certFingerprint(certFile)
	if err != nil {
		return err
	}
	state := "existing"
	if created {
		state = "generated"
	}
	fmt.Fprintf(stdout, "database:        %s (schema %d)\n", st.Path(), store.SchemaVersion())
	fmt.Fprintf(stdout, "TLS certificate: %s (%s, self-signed)\n", certFile, state)
	fmt.Fprintf(stdout, "  SHA-256:       %s\n", fp)
	fmt.Fprintf(stdout, "token of proxy client %q (shown only now; give it to smartproxy-client -T):\n%s\n", *client, token)
	return nil
}

// certFingerprint returns the fingerprint of the first certificate in a PEM
// file.
func certFingerprint(path string) (string, error) {
	b, err := readFile("certificate", path, maxInputFile)
	if err != nil {
		return "", err
	}
	certs, err := pki.ParseCertificatesPEM(b)
	if err != nil {
		return "", fmt.Errorf("certificate %s: %w", path, err)
	}
	return backend.Fingerprint(certs[0]), nil
}

func runFingerprint(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, c := newFlags("fingerprint", "fingerprint [--cert FILE]", stderr)
	certFile := fs.String("cert", "", "certificate file of the API (default: the generated one in the data directory)")
	if _, err := parseExact(fs, args, 0, ""); err != nil {
		return err
	}
	path := *certFile
	if path == "" {
		var err error
		if path, _, _, err = backend.EnsureSelfSigned(c.dataDir, nil, time.Now()); err != nil {
			return err
		}
	}
	fp, err := certFingerprint(path)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s  %s\n", fp, path)
	return nil
}

// --- tokens ---

func runTokenCreate(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, c := newFlags("token create", "token create --client NAME", stderr)
	client := fs.String("client", "", "name of the proxy client (created when new)")
	if _, err := parseExact(fs, args, 0, ""); err != nil {
		return err
	}
	if *client == "" {
		return usagef("token create: --client is required")
	}
	return c.withStore(ctx, func(st *store.Store) error {
		token, info, err := st.CreateToken(ctx, *client)
		if err != nil {
			return err
		}
		fmt.Fprintf(stderr, "token %d of proxy client %q (shown only now):\n", info.ID, info.Client)
		fmt.Fprintln(stdout, token)
		return nil
	})
}

func runTokenList(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, c := newFlags("token list", "token list", stderr)
	if _, err := parseExact(fs, args, 0, ""); err != nil {
		return err
	}
	return c.withStore(ctx, func(st *store.Store) error {
		list, err := st.Tokens(ctx)
		if err != nil {
			return err
		}
		w := table(stdout)
		fmt.Fprintln(w, "ID\tCLIENT\tTOKEN\tCREATED\tREVOKED")
		for _, t := range list {
			fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\n", t.ID, t.Client, t.Hint, fmtTime(t.CreatedAt), fmtTime(t.RevokedAt))
		}
		return w.Flush()
	})
}

func parseID(cmd, s string) (int64, error) {
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil || id <= 0 {
		return 0, usagef("%s: %q is not an id (see the list command)", cmd, s)
	}
	return id, nil
}

func runTokenRevoke(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, c := newFlags("token revoke", "token revoke ID", stderr)
	pos, err := parseExact(fs, args, 1, "the token's ID (see token list)")
	if err != nil {
		return err
	}
	id, err := parseID("token revoke", pos[0])
	if err != nil {
		return err
	}
	return c.withStore(ctx, func(st *store.Store) error {
		if err := st.RevokeToken(ctx, id); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "token %d revoked\n", id)
		return nil
	})
}

// --- partners ---

// bindingFlags are the flags that describe one certificate binding.
type bindingFlags struct {
	serial, fingerprint, subject, certificate *string
}

func addBindingFlags(fs *flag.FlagSet) bindingFlags {
	return bindingFlags{
		serial:      fs.String("serial", "", "certificate binding: expected subject serialNumber attribute"),
		fingerprint: fs.String("fingerprint", "", "certificate binding: expected SHA-256 fingerprint of the certificate (64 hex digits)"),
		subject:     fs.String("subject", "", "certificate binding: expected subject DN, e.g. \"CN=edi.partner.example,O=Partner AG,C=DE\""),
		certificate: fs.String("certificate", "", "certificate binding: PEM or DER file of the partner's certificate (its fingerprint is bound)"),
	}
}

// binding returns the binding the flags describe, or nil when none is given.
func (b bindingFlags) binding() (*store.CertificateBinding, error) {
	if *b.serial == "" && *b.fingerprint == "" && *b.subject == "" && *b.certificate == "" {
		return nil, nil
	}
	out := &store.CertificateBinding{SubjectSerialNumber: *b.serial, SHA256Fingerprint: *b.fingerprint, Subject: *b.subject}
	if *b.certificate != "" {
		if *b.fingerprint != "" {
			return nil, usagef("--certificate and --fingerprint cannot be combined")
		}
		data, err := readFile("--certificate", *b.certificate, maxInputFile)
		if err != nil {
			return nil, err
		}
		cert, err := backend.ParseOneCertificate(data)
		if err != nil {
			return nil, fmt.Errorf("--certificate %s: %w", *b.certificate, err)
		}
		out.SHA256Fingerprint = store.Fingerprint(cert)
	}
	return out, nil
}

// readPasswordFile returns the first line of a --password-file.
func readPasswordFile(path string) (string, error) {
	b, err := readFile("--password-file", path, 4096)
	if err != nil {
		return "", err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	return strings.TrimSuffix(line, "\r"), nil
}

// passwordFlags are --password and --password-file.
type passwordFlags struct{ value, file *string }

func addPasswordFlags(fs *flag.FlagSet) passwordFlags {
	return passwordFlags{
		value: fs.String("password", "", "SSID password the partner must send (up to 8 characters); visible in the process list, prefer --password-file"),
		file:  fs.String("password-file", "", "file whose first line is the SSID password"),
	}
}

// password returns the password given and whether one was given.
func (p passwordFlags) password() (string, bool, error) {
	switch {
	case *p.value != "" && *p.file != "":
		return "", false, usagef("--password and --password-file cannot be combined")
	case *p.file != "":
		pw, err := readPasswordFile(*p.file)
		return pw, err == nil, err
	case *p.value != "":
		return *p.value, true, nil
	}
	return "", false, nil
}

func runPartnerAdd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, c := newFlags("partner add", "partner add --odette-id ID [--name NAME] [--password PW | --password-file FILE] "+
		"[--serial SN] [--fingerprint HEX | --certificate FILE] [--subject DN] [--network CIDR]... "+
		"[--direction both|incoming|outgoing] [--charset strict|lenient] [--revocation soft|hard] [--disabled] [--max-credit N] [--max-buffer N]", stderr)
	id := fs.String("odette-id", "", "the partner's Odette ID (SSIDCODE); required")
	name := fs.String("name", "", "a name for logs")
	pw := addPasswordFlags(fs)
	bf := addBindingFlags(fs)
	var nets listFlag
	fs.Var(&nets, "network", "network (CIDR) the partner may connect from (repeatable; default any)")
	direction := fs.String("direction", "both", "sessions allowed: both, incoming or outgoing")
	charset := fs.String("charset", "strict", "character set of the partner's SSID fields: strict or lenient")
	revocation := fs.String("revocation", "", "certificates of unknown revocation state: soft (accept) or hard (refuse); default: the setting revocation")
	disabled := fs.Bool("disabled", false, "add the partner disabled")
	maxCredit := fs.Uint("max-credit", 0, "cap of the SSID credit passed on (1-999; 0: no cap)")
	maxBuffer := fs.Uint("max-buffer", 0, "cap of the SSID exchange buffer size passed on (128-99999; 0: no cap)")
	if _, err := parseExact(fs, args, 0, ""); err != nil {
		return err
	}
	if *id == "" {
		return usagef("partner add: --odette-id is required")
	}
	password, _, err := pw.password()
	if err != nil {
		return err
	}
	b, err := bf.binding()
	if err != nil {
		return err
	}
	if *maxCredit > 999 || *maxBuffer > 99999 {
		return usagef("partner add: --max-credit must be 0-999 and --max-buffer 0 or 128-99999")
	}
	p := store.Partner{OdetteID: *id, Name: *name, Enabled: !*disabled, Password: password, Direction: *direction,
		Charset: *charset, MaxCredit: uint32(*maxCredit), MaxBufferSize: uint32(*maxBuffer), AllowedNetworks: nets, Revocation: *revocation}
	if b != nil {
		p.CertificateBindings = []store.CertificateBinding{*b}
	}
	return c.withStore(ctx, func(st *store.Store) error {
		if err := st.AddPartner(ctx, p); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "partner %s added (%s)\n", p.OdetteID, enabledWord(p.Enabled))
		return nil
	})
}

func enabledWord(on bool) string {
	if on {
		return "enabled"
	}
	return "disabled"
}

func runPartnerList(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, c := newFlags("partner list", "partner list", stderr)
	if _, err := parseExact(fs, args, 0, ""); err != nil {
		return err
	}
	return c.withStore(ctx, func(st *store.Store) error {
		list, err := st.Partners(ctx)
		if err != nil {
			return err
		}
		w := table(stdout)
		fmt.Fprintln(w, "ODETTE ID\tNAME\tSTATE\tDIRECTION\tCHARSET\tBINDINGS\tNETWORKS")
		for _, p := range list {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%d\t%s\n", p.OdetteID, dash(p.Name), enabledWord(p.Enabled), p.Direction, p.Charset,
				len(p.CertificateBindings), dash(strings.Join(p.AllowedNetworks, ",")))
		}
		return w.Flush()
	})
}

func runPartnerShow(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, c := newFlags("partner show", "partner show ODETTE-ID", stderr)
	pos, err := parseExact(fs, args, 1, "the partner's Odette ID")
	if err != nil {
		return err
	}
	return c.withStore(ctx, func(st *store.Store) error {
		p, err := st.Partner(ctx, pos[0])
		if err != nil {
			return err
		}
		w := table(stdout)
		pw := "(not checked)"
		if p.Password != "" {
			pw = "(set)"
		}
		credit, buffer := "no cap", "no cap"
		if p.MaxCredit != 0 {
			credit = strconv.Itoa(int(p.MaxCredit))
		}
		if p.MaxBufferSize != 0 {
			buffer = strconv.Itoa(int(p.MaxBufferSize))
		}
		fmt.Fprintf(w, "Odette ID:\t%s\n", p.OdetteID)
		fmt.Fprintf(w, "name:\t%s\n", dash(p.Name))
		fmt.Fprintf(w, "state:\t%s\n", enabledWord(p.Enabled))
		fmt.Fprintf(w, "password:\t%s\n", pw)
		fmt.Fprintf(w, "direction:\t%s\n", p.Direction)
		fmt.Fprintf(w, "charset:\t%s\n", p.Charset)
		if p.Revocation == "" {
			fmt.Fprintf(w, "revocation:\tthe setting revocation\n")
		} else {
			fmt.Fprintf(w, "revocation:\t%s\n", p.Revocation)
		}
		fmt.Fprintf(w, "max credit:\t%s\n", credit)
		fmt.Fprintf(w, "max buffer:\t%s\n", buffer)
		fmt.Fprintf(w, "networks:\t%s\n", dash(strings.Join(p.AllowedNetworks, ", ")))
		if len(p.CertificateBindings) == 0 {
			fmt.Fprintf(w, "bindings:\tnone: the certificate's subject serialNumber must be the Odette ID\n")
		}
		for i, b := range p.CertificateBindings {
			var parts []string
			if b.SubjectSerialNumber != "" {
				parts = append(parts, "serialNumber="+b.SubjectSerialNumber)
			}
			if b.SHA256Fingerprint != "" {
				parts = append(parts, "sha256="+b.SHA256Fingerprint)
			}
			if b.Subject != "" {
				parts = append(parts, "subject="+b.Subject)
			}
			fmt.Fprintf(w, "binding %d:\t%s\n", i+1, strings.Join(parts, " "))
		}
		fmt.Fprintf(w, "created:\t%s\n", fmtTime(p.CreatedAt))
		fmt.Fprintf(w, "updated:\t%s\n", fmtTime(p.UpdatedAt))
		return w.Flush()
	})
}

func partnerToggle(name string, enable bool) command {
	return func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
		fs, c := newFlags(name, name+" ODETTE-ID", stderr)
		pos, err := parseExact(fs, args, 1, "the partner's Odette ID")
		if err != nil {
			return err
		}
		return c.withStore(ctx, func(st *store.Store) error {
			if err := st.UpdatePartner(ctx, pos[0], func(p *store.Partner) error { p.Enabled = enable; return nil }); err != nil {
				return err
			}
			fmt.Fprintf(stdout, "partner %s %s\n", pos[0], enabledWord(enable))
			return nil
		})
	}
}

var (
	runPartnerEnable  = partnerToggle("partner enable", true)
	runPartnerDisable = partnerToggle("partner disable", false)
)

func runPartnerRemove(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, c := newFlags("partner remove", "partner remove ODETTE-ID", stderr)
	pos, err := parseExact(fs, args, 1, "the partner's Odette ID")
	if err != nil {
		return err
	}
	return c.withStore(ctx, func(st *store.Store) error {
		if err := st.RemovePartner(ctx, pos[0]); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "partner %s removed\n", pos[0])
		return nil
	})
}

func runPartnerSet(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, c := newFlags("partner set", "partner set ODETTE-ID [--name NAME] [--password PW | --password-file FILE | --clear-password] "+
		"[--direction D] [--charset C] [--revocation soft|hard|default] [--max-credit N] [--max-buffer N] [--network CIDR]... [--clear-networks] "+
		"[--serial SN] [--fingerprint HEX | --certificate FILE] [--subject DN] [--clear-bindings]", stderr)
	name := fs.String("name", "", "a name for logs")
	pw := addPasswordFlags(fs)
	clearPW := fs.Bool("clear-password", false, "stop checking the SSID password")
	direction := fs.String("direction", "", "sessions allowed: both, incoming or outgoing")
	charset := fs.String("charset", "", "character set of the partner's SSID fields: strict or lenient")
	revocation := fs.String("revocation", "", "certificates of unknown revocation state: soft (accept), hard (refuse) or default (the setting revocation)")
	maxCredit := fs.Uint("max-credit", 0, "cap of the SSID credit passed on (1-999; 0: no cap)")
	maxBuffer := fs.Uint("max-buffer", 0, "cap of the SSID exchange buffer size passed on (128-99999; 0: no cap)")
	var nets listFlag
	fs.Var(&nets, "network", "network (CIDR) the partner may connect from; replaces the list (repeatable)")
	clearNets := fs.Bool("clear-networks", false, "allow any network")
	bf := addBindingFlags(fs)
	clearBindings := fs.Bool("clear-bindings", false, "remove every certificate binding (before adding the one given, if any)")
	pos, err := parseExact(fs, args, 1, "the partner's Odette ID")
	if err != nil {
		return err
	}
	given := setFlags(fs)
	delete(given, "data-dir")
	delete(given, "db")
	if len(given) == 0 {
		return usagef("partner set: nothing to change; see partner set -h")
	}
	password, hasPW, err := pw.password()
	if err != nil {
		return err
	}
	if hasPW && *clearPW {
		return usagef("partner set: --clear-password cannot be combined with a new password")
	}
	if len(nets) > 0 && *clearNets {
		return usagef("partner set: --clear-networks cannot be combined with --network")
	}
	b, err := bf.binding()
	if err != nil {
		return err
	}
	if *maxCredit > 999 || *maxBuffer > 99999 {
		return usagef("partner set: --max-credit must be 0-999 and --max-buffer 0 or 128-99999")
	}
	return c.withStore(ctx, func(st *store.Store) error {
		err := st.UpdatePartner(ctx, pos[0], func(p *store.Partner) error {
			if given["name"] {
				p.Name = *name
			}
			if hasPW {
				p.Password = password
			}
			if *clearPW {
				p.Password = ""
			}
			if given["direction"] {
				p.Direction = *direction
			}
			if given["charset"] {
				p.Charset = *charset
			}
			if given["revocation"] {
				p.Revocation = *revocation
				if p.Revocation == "default" {
					p.Revocation = ""
				}
			}
			if given["max-credit"] {
				p.MaxCredit = uint32(*maxCredit)
			}
			if given["max-buffer"] {
				p.MaxBufferSize = uint32(*maxBuffer)
			}
			if len(nets) > 0 {
				p.AllowedNetworks = nets
			}
			if *clearNets {
				p.AllowedNetworks = nil
			}
			if *clearBindings {
				p.CertificateBindings = nil
			}
			if b != nil {
				p.CertificateBindings = append(p.CertificateBindings, *b)
			}
			return nil
		})
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "partner %s updated\n", pos[0])
		return nil
	})
}

// --- trusted CAs ---

func runCAAdd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, c := newFlags("ca add", "ca add FILE (PEM with one or more CA certificates, or DER)", stderr)
	pos, err := parseExact(fs, args, 1, "a certificate file")
	if err != nil {
		return err
	}
	data, err := readFile("certificate file", pos[0], maxInputFile)
	if err != nil {
		return err
	}
	return c.withStore(ctx, func(st *store.Store) error {
		added, err := backend.AddCAs(ctx, st, data)
		if err != nil {
			return fmt.Errorf("ca add: %s: %w", pos[0], err)
		}
		for _, ca := range added {
			fmt.Fprintf(stdout, "CA %d added: %s (sha256 %s, until %s)\n", ca.ID, ca.Subject, ca.SHA256, fmtTime(ca.NotAfter))
		}
		return nil
	})
}

func runCAList(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, c := newFlags("ca list", "ca list", stderr)
	if _, err := parseExact(fs, args, 0, ""); err != nil {
		return err
	}
	return c.withStore(ctx, func(st *store.Store) error {
		list, err := st.CAs(ctx)
		if err != nil {
			return err
		}
		w := table(stdout)
		fmt.Fprintln(w, "ID\tSUBJECT\tNOT AFTER\tSHA-256")
		for _, ca := range list {
			fmt.Fprintf(w, "%d\t%s\t%s\t%s\n", ca.ID, ca.Subject, fmtTime(ca.NotAfter), ca.SHA256)
		}
		return w.Flush()
	})
}

func runCARemove(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, c := newFlags("ca remove", "ca remove ID|FINGERPRINT", stderr)
	pos, err := parseExact(fs, args, 1, "the CA's ID or SHA-256 fingerprint")
	if err != nil {
		return err
	}
	return c.withStore(ctx, func(st *store.Store) error {
		ca, err := st.RemoveCA(ctx, pos[0])
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "CA %d removed: %s\n", ca.ID, ca.Subject)
		return nil
	})
}

// --- CRL URLs and CRLs ---

func runCRLURLAdd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, c := newFlags("crl-url add", "crl-url add URL", stderr)
	pos, err := parseExact(fs, args, 1, "a CRL URL")
	if err != nil {
		return err
	}
	return c.withStore(ctx, func(st *store.Store) error {
		u, err := st.AddCRLURL(ctx, pos[0])
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "CRL URL %d added: %s (a running smartproxy-api downloads it within seconds)\n", u.ID, u.URL)
		return nil
	})
}

func runCRLURLList(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, c := newFlags("crl-url list", "crl-url list", stderr)
	if _, err := parseExact(fs, args, 0, ""); err != nil {
		return err
	}
	return c.withStore(ctx, func(st *store.Store) error {
		list, err := st.CRLURLs(ctx)
		if err != nil {
			return err
		}
		w := table(stdout)
		fmt.Fprintln(w, "ID\tURL\tSOURCE\tLAST STATUS\tLAST ATTEMPT\tLAST SUCCESS\tFAILURES\tERROR")
		for _, u := range list {
			var src []string
			if u.Configured {
				src = append(src, "configured")
			}
			if u.Reported {
				src = append(src, "reported by "+u.ReportedBy)
			}
			status := u.LastStatus
			if status == "" {
				status = "not fetched yet"
			}
			fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%s\t%d\t%s\n", u.ID, u.URL, strings.Join(src, ", "), status,
				fmtTime(u.LastAttemptAt), fmtTime(u.LastSuccessAt), u.Failures, dash(u.LastError))
		}
		return w.Flush()
	})
}

func runCRLURLRemove(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, c := newFlags("crl-url remove", "crl-url remove ID|URL", stderr)
	pos, err := parseExact(fs, args, 1, "the URL's ID or the URL")
	if err != nil {
		return err
	}
	return c.withStore(ctx, func(st *store.Store) error {
		u, err := st.RemoveCRLURL(ctx, pos[0])
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "CRL URL %d removed with its CRL: %s\n", u.ID, u.URL)
		return nil
	})
}

func runCRLImport(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, c := newFlags("crl import", "crl import FILE [--url URL]", stderr)
	url := fs.String("url", "", "distribution point the CRL belongs to (default: the CRL's own issuing distribution point, if any)")
	pos, err := parseExact(fs, args, 1, "a CRL file (PEM or DER)")
	if err != nil {
		return err
	}
	data, err := readFile("CRL", pos[0], maxCRLFile)
	if err != nil {
		return err
	}
	return c.withStore(ctx, func(st *store.Store) error {
		res, err := backend.ImportCRL(ctx, st, data, *url, time.Now())
		if err != nil {
			return fmt.Errorf("crl import: %s: %w", pos[0], err)
		}
		if res.Stale != nil {
			fmt.Fprintf(stderr, "warning: %v; stored anyway\n", res.Stale)
		}
		stored := res.CRL
		if !res.Changed {
			fmt.Fprintf(stdout, "CRL %s of %s is stored already\n", backend.CRLID(stored.ID), stored.Issuer)
			return nil
		}
		fmt.Fprintf(stdout, "CRL %s stored: %s, %d entries, this update %s, next update %s\n", backend.CRLID(stored.ID),
			stored.Issuer, stored.Entries, fmtTime(stored.ThisUpdate), fmtTime(stored.NextUpdate))
		return nil
	})
}

func runCRLList(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, c := newFlags("crl list", "crl list", stderr)
	if _, err := parseExact(fs, args, 0, ""); err != nil {
		return err
	}
	return c.withStore(ctx, func(st *store.Store) error {
		list, err := st.CRLs(ctx)
		if err != nil {
			return err
		}
		w := table(stdout)
		fmt.Fprintln(w, "ID\tISSUER\tENTRIES\tTHIS UPDATE\tNEXT UPDATE\tSIZE\tSOURCE\tURL")
		for _, c := range list {
			fmt.Fprintf(w, "%s\t%s\t%d\t%s\t%s\t%d\t%s\t%s\n", backend.CRLID(c.ID), c.Issuer, c.Entries, fmtTime(c.ThisUpdate),
				fmtTime(c.NextUpdate), c.Size, c.Source, dash(c.URL))
		}
		return w.Flush()
	})
}

func runCRLRemove(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, c := newFlags("crl remove", "crl remove ID", stderr)
	pos, err := parseExact(fs, args, 1, "the CRL's ID (see crl list)")
	if err != nil {
		return err
	}
	id, err := parseID("crl remove", strings.TrimPrefix(pos[0], "crl-"))
	if err != nil {
		return err
	}
	return c.withStore(ctx, func(st *store.Store) error {
		if err := st.RemoveCRL(ctx, id); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "CRL %s removed\n", backend.CRLID(id))
		return nil
	})
}

// --- ignore rules ---

func runIgnoreAdd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, c := newFlags("ignore add", "ignore add --substring TEXT [--description TEXT] [--valid-from T] [--valid-until T]", stderr)
	sub := fs.String("substring", "", "text matched case-insensitively against the event's line; required")
	desc := fs.String("description", "", "why the rule exists")
	from := fs.String("valid-from", "", "start of validity: RFC 3339 time or a duration from now (default: now)")
	until := fs.String("valid-until", "", "end of validity: RFC 3339 time or a duration from now, e.g. 8h (default: no end)")
	if _, err := parseExact(fs, args, 0, ""); err != nil {
		return err
	}
	if *sub == "" {
		return usagef("ignore add: --substring is required")
	}
	now := time.Now()
	vf, err := parseTime("valid-from", *from, now)
	if err != nil {
		return err
	}
	vu, err := parseTime("valid-until", *until, now)
	if err != nil {
		return err
	}
	return c.withStore(ctx, func(st *store.Store) error {
		r, err := st.AddIgnoreRule(ctx, store.IgnoreRule{Substring: *sub, Description: *desc, ValidFrom: vf, ValidUntil: vu})
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "ignore rule %d added (valid %s to %s)\n", r.ID, timeOr(r.ValidFrom, "now"), timeOr(r.ValidUntil, "no end"))
		return nil
	})
}

func timeOr(t time.Time, s string) string {
	if t.IsZero() {
		return s
	}
	return fmtTime(t)
}

func runIgnoreList(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, c := newFlags("ignore list", "ignore list", stderr)
	if _, err := parseExact(fs, args, 0, ""); err != nil {
		return err
	}
	return c.withStore(ctx, func(st *store.Store) error {
		list, err := st.IgnoreRules(ctx)
		if err != nil {
			return err
		}
		now := time.Now()
		w := table(stdout)
		fmt.Fprintln(w, "ID\tSTATE\tVALID FROM\tVALID UNTIL\tSUBSTRING\tDESCRIPTION")
		for _, r := range list {
			state := "active"
			switch {
			case !r.ValidUntil.IsZero() && !now.Before(r.ValidUntil):
				state = "expired"
			case !r.ValidFrom.IsZero() && now.Before(r.ValidFrom):
				state = "pending"
			}
			fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%s\n", r.ID, state, fmtTime(r.ValidFrom), fmtTime(r.ValidUntil),
				strconv.Quote(r.Substring), dash(r.Description))
		}
		return w.Flush()
	})
}

func runIgnoreRemove(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, c := newFlags("ignore remove", "ignore remove ID", stderr)
	pos, err := parseExact(fs, args, 1, "the rule's ID (see ignore list)")
	if err != nil {
		return err
	}
	id, err := parseID("ignore remove", pos[0])
	if err != nil {
		return err
	}
	return c.withStore(ctx, func(st *store.Store) error {
		r, err := st.RemoveIgnoreRule(ctx, id)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "ignore rule %d removed (%q)\n", r.ID, r.Substring)
		return nil
	})
}

// --- settings ---

func runConfigSet(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, c := newFlags("config set", "config set KEY VALUE [KEY VALUE...] (see config keys; file keys take a file name)", stderr)
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) == 0 || len(pos)%2 != 0 {
		return usagef("config set: want KEY VALUE pairs (see config keys)")
	}
	var changes []store.SettingChange
	for i := 0; i < len(pos); i += 2 {
		key, value := pos[i], pos[i+1]
		def, ok := store.LookupSetting(key)
		if !ok {
			return usagef("config set: unknown key %q; known keys: %s", key, strings.Join(store.SettingKeys(), ", "))
		}
		if value == "" {
			return usagef("config set: %s: empty value; use config unset %s", key, key)
		}
		if def.Kind.FromFile() {
			b, err := readFile(key, value, maxInputFile)
			if err != nil {
				return err
			}
			value = string(b)
		}
		changes = append(changes, store.SettingChange{Key: key, Value: value})
	}
	return c.withStore(ctx, func(st *store.Store) error {
		if err := st.SetSettings(ctx, changes); err != nil {
			return err
		}
		for _, ch := range changes {
			fmt.Fprintf(stdout, "%s set\n", ch.Key)
		}
		return nil
	})
}

func runConfigUnset(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, c := newFlags("config unset", "config unset KEY...", stderr)
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		return usagef("config unset: want at least one key")
	}
	var changes []store.SettingChange
	for _, k := range pos {
		changes = append(changes, store.SettingChange{Key: k})
	}
	return c.withStore(ctx, func(st *store.Store) error {
		if err := st.SetSettings(ctx, changes); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "unset: %s\n", strings.Join(pos, ", "))
		return nil
	})
}

func runConfigShow(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, c := newFlags("config show", "config show", stderr)
	if _, err := parseExact(fs, args, 0, ""); err != nil {
		return err
	}
	return c.withStore(ctx, func(st *store.Store) error {
		values, err := st.SettingValues(ctx)
		if err != nil {
			return err
		}
		set := map[string]store.SettingValue{}
		for _, v := range values {
			set[v.Key] = v
		}
		w := table(stdout)
		for _, d := range store.SettingDefs {
			v, ok := set[d.Key]
			switch {
			case !ok:
				fmt.Fprintf(w, "%s\t(unset)\n", d.Key)
			case d.Kind.FromFile():
				fmt.Fprintf(w, "%s\t%s\n", d.Key, store.DescribePEM(d.Kind, v.Value))
			default:
				fmt.Fprintf(w, "%s\t%s\n", d.Key, v.Value)
			}
		}
		return w.Flush()
	})
}

func runConfigKeys(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, _ := newFlags("config keys", "config keys", stderr)
	if _, err := parseExact(fs, args, 0, ""); err != nil {
		return err
	}
	w := table(stdout)
	for _, d := range store.SettingDefs {
		arg := "VALUE"
		if d.Kind.FromFile() {
			arg = "FILE"
		}
		fmt.Fprintf(w, "%s %s\t%s\n", d.Key, arg, d.Doc)
	}
	return w.Flush()
}

// --- routes ---

func runRouteAdd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, c := newFlags("route add", "route add --name NAME --listen ADDR --partner-address ADDR --partner-odette-id ID [--server-name NAME]", stderr)
	name := fs.String("name", "", "unique name of the route; required")
	listen := fs.String("listen", "", "host:port the proxy client listens on for the internal OFTP2 server; required")
	partner := fs.String("partner-address", "", "host:port of the partner the DMZ server dials; required")
	odette := fs.String("partner-odette-id", "", "Odette ID of the partner; required")
	serverName := fs.String("server-name", "", "name the partner's certificate is verified against (default: the host of --partner-address)")
	if _, err := parseExact(fs, args, 0, ""); err != nil {
		return err
	}
	if *name == "" || *listen == "" || *partner == "" || *odette == "" {
		return usagef("route add: --name, --listen, --partner-address and --partner-odette-id are required")
	}
	return c.withStore(ctx, func(st *store.Store) error {
		if err := st.AddRoute(ctx, store.Route{Name: *name, ListenAddress: *listen, PartnerAddress: *partner,
			PartnerOdetteID: *odette, ServerName: *serverName}); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "route %s added\n", *name)
		return nil
	})
}

func runRouteList(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, c := newFlags("route list", "route list", stderr)
	if _, err := parseExact(fs, args, 0, ""); err != nil {
		return err
	}
	return c.withStore(ctx, func(st *store.Store) error {
		list, err := st.Routes(ctx)
		if err != nil {
			return err
		}
		w := table(stdout)
		fmt.Fprintln(w, "NAME\tLISTEN\tPARTNER ADDRESS\tPARTNER ODETTE ID\tSERVER NAME")
		for _, r := range list {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", r.Name, r.ListenAddress, r.PartnerAddress, r.PartnerOdetteID, dash(r.ServerName))
		}
		return w.Flush()
	})
}

func runRouteRemove(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, c := newFlags("route remove", "route remove NAME", stderr)
	pos, err := parseExact(fs, args, 1, "the route's name")
	if err != nil {
		return err
	}
	return c.withStore(ctx, func(st *store.Store) error {
		if err := st.RemoveRoute(ctx, pos[0]); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "route %s removed\n", pos[0])
		return nil
	})
}

// --- licenses ---

func runLicenseImport(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, c := newFlags("license import", "license import FILE", stderr)
	pos, err := parseExact(fs, args, 1, "a license file")
	if err != nil {
		return err
	}
	file, err := readFile("license", pos[0], license.MaxFileSize)
	if err != nil {
		return err
	}
	return c.withStore(ctx, func(st *store.Store) error {
		l, err := backend.ImportLicense(ctx, st, file)
		if err != nil {
			return fmt.Errorf("license import: %s: %w", pos[0], err)
		}
		if now := time.Now(); !now.Before(l.NotAfter) {
			fmt.Fprintf(stderr, "warning: the license expired at %s; stored anyway\n", fmtTime(l.NotAfter))
		}
		fmt.Fprintf(stdout, "license for %s (%s) stored, valid %s to %s; proxy clients push it to their server\n",
			l.ProxyID, l.Customer, fmtTime(l.NotBefore), fmtTime(l.NotAfter))
		return nil
	})
}

func runLicenseShow(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, c := newFlags("license show", "license show", stderr)
	if _, err := parseExact(fs, args, 0, ""); err != nil {
		return err
	}
	return c.withStore(ctx, func(st *store.Store) error {
		list, err := st.Licenses(ctx)
		if err != nil {
			return err
		}
		w := table(stdout)
		fmt.Fprintln(w, "PROXY ID\tCUSTOMER\tNOT BEFORE\tNOT AFTER\tIMPORTED")
		for _, l := range list {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", l.ProxyID, l.Customer, fmtTime(l.NotBefore), fmtTime(l.NotAfter), fmtTime(l.ImportedAt))
		}
		if err := w.Flush(); err != nil {
			return err
		}
		clients, err := st.Clients(ctx)
		if err != nil {
			return err
		}
		fmt.Fprintln(stdout)
		w = table(stdout)
		fmt.Fprintln(w, "CLIENT\tPROXY ID\tVALID\tEXPIRES\tREASON\tREPORTED")
		for _, cl := range clients {
			if cl.License == nil {
				fmt.Fprintf(w, "%s\t-\t-\t-\tnot reported yet\t-\n", cl.Name)
				continue
			}
			l := cl.License
			fmt.Fprintf(w, "%s\t%s\t%v\t%s\t%s\t%s\n", cl.Name, l.ProxyID, l.Valid, fmtTime(l.ExpiresAt), dash(l.Reason), fmtTime(l.ReportedAt))
		}
		return w.Flush()
	})
}

// --- events, status, export ---

func runEventsList(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, c := newFlags("events list", "events list [--since T] [--name NAME] [--limit N]", stderr)
	since := fs.String("since", "", "only events at or after T: RFC 3339 time or a duration back from now, e.g. 24h")
	name := fs.String("name", "", "only events of this name")
	limit := fs.Int("limit", 100, "at most this many of the newest events")
	if _, err := parseExact(fs, args, 0, ""); err != nil {
		return err
	}
	var from time.Time
	if *since != "" {
		if d, err := time.ParseDuration(*since); err == nil {
			from = time.Now().Add(-d.Abs())
		} else if t, err := time.Parse(time.RFC3339, *since); err == nil {
			from = t
		} else {
			return usagef("events list: --since %q is neither an RFC 3339 time nor a duration", *since)
		}
	}
	if *limit <= 0 {
		return usagef("events list: --limit must be positive")
	}
	return c.withStore(ctx, func(st *store.Store) error {
		list, err := st.Events(ctx, store.EventFilter{Since: from, Name: *name, Limit: *limit})
		if err != nil {
			return err
		}
		w := table(stdout)
		fmt.Fprintln(w, "TIME\tSEVERITY\tNAME\tCLIENT\tODETTE ID\tREMOTE ADDR\tMESSAGE\tOUTCOME")
		for _, e := range list {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Time.UTC().Format(time.RFC3339Nano), e.Severity, e.Name, dash(e.Client),
				dash(e.OdetteID), dash(e.RemoteAddr), strconv.Quote(e.Message), dash(e.Outcome))
		}
		return w.Flush()
	})
}

func runStatus(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, c := newFlags("status", "status", stderr)
	if _, err := parseExact(fs, args, 0, ""); err != nil {
		return err
	}
	return c.withStore(ctx, func(st *store.Store) error {
		rev, err := st.Revision(ctx)
		if err != nil {
			return err
		}
		counts, err := st.TableCounts(ctx)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "database %s, schema %d, configuration revision %d\n", st.Path(), store.SchemaVersion(), rev)
		fmt.Fprintf(stdout, "%d partners, %d trusted CAs, %d CRLs, %d CRL URLs, %d routes, %d ignore rules, %d events\n\n",
			counts["partners"], counts["trusted_cas"], counts["crls"], counts["crl_urls"], counts["routes"], counts["ignore_rules"], counts["events"])
		clients, err := st.Clients(ctx)
		if err != nil {
			return err
		}
		w := table(stdout)
		fmt.Fprintln(w, "CLIENT\tTOKENS\tLAST SEEN\tFROM\tCONFIG\tLICENSE")
		for _, cl := range clients {
			cfg := "not reported yet"
			if s := cl.Config; s != nil {
				cfg = fmt.Sprintf("revision %d applied", s.Revision)
				if !s.Applied {
					var parts []string
					for _, e := range s.Errors {
						parts = append(parts, e.Field+": "+e.Message)
					}
					cfg = fmt.Sprintf("revision %d REFUSED: %s", s.Revision, strings.Join(parts, "; "))
				}
			}
			lic := "not reported yet"
			if l := cl.License; l != nil {
				lic = fmt.Sprintf("%s valid until %s", l.ProxyID, fmtTime(l.ExpiresAt))
				if !l.Valid {
					lic = fmt.Sprintf("%s NOT VALID: %s", l.ProxyID, l.Reason)
				}
			}
			fmt.Fprintf(w, "%s\t%d\t%s\t%s\t%s\t%s\n", cl.Name, cl.Tokens, fmtTime(cl.LastSeenAt), dash(cl.LastRemoteAddr), cfg, lic)
		}
		return w.Flush()
	})
}

func runExport(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, c := newFlags("export", "export [--with-secrets]", stderr)
	secrets := fs.Bool("with-secrets", false, "include private keys and partner passwords")
	if _, err := parseExact(fs, args, 0, ""); err != nil {
		return err
	}
	return c.withStore(ctx, func(st *store.Store) error {
		snap, err := st.Snapshot(ctx)
		if err != nil {
			return err
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(backend.Document(snap, *secrets))
	})
}
