// Command oftp2 is a stand-alone OFTP2 (RFC 5024) endpoint: it receives files
// as a responder (oftp2 serve) and sends files as an initiator (oftp2 send),
// over TLS with client certificates or over plain TCP. It is built on package
// smartproxy/oftp2/endpoint and serves as the partner and the internal server
// in the proxy's tests, demo and benchmarks.
//
// Run `oftp2 -h` for the full usage.
package main

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/sirupsen/logrus"

	"smartproxy/oftp2"
	"smartproxy/oftp2/endpoint"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "oftp2:", err)
		}
		os.Exit(exitCode(err))
	}
}

// usageError marks errors caused by a bad command line (exit status 2).
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func exitCode(err error) int {
	var ue *usageError
	if errors.As(err, &ue) || errors.Is(err, flag.ErrHelp) {
		return 2
	}
	return 1
}

const overview = `oftp2 is an OFTP2 (RFC 5024) endpoint.

Usage:
  oftp2 serve [flags]             receive files as a responder (the called side)
  oftp2 send [flags] FILE...      send files as an initiator (the calling side)
  oftp2 -h | oftp2 COMMAND -h     this help | the help of one command

serve listens for partners, checks their Odette ID and password (ESID 03 for
an unknown ID, 04 for a wrong password), stores each received file under
--dir once it is complete and verified (never under its final name before),
answers it with an end-to-end response (EERP), and prints one line per file:

  received PATH dataset=NAME originator=ID format=F records=N size=N sha256=HEX

A transfer that breaks off is kept under --dir/.oftp2/partial and resumed
when the partner sends the same file again (restart). Files in --outbox are
sent to callers when they hand over the speaker role: files at its top level
to any partner, files in --outbox/ODETTE-ID/ only to that partner; a file
confirmed with EERP is moved to .sent/ beside it.

send connects, sends each FILE as a Virtual File of --format, waits for the
end-to-end response of each one and prints:

  delivered PATH dataset=NAME units=N restart=N sha256=HEX

It exits with status 1 when any file was not confirmed by EERP. Sending an
unchanged file again after a broken transfer resumes it (the Virtual File's
date and time are the file's modification time).

Local file formats (--format):
  U  unstructured: any octets
  T  text: lines of at most 2048 characters, no control characters but
     CR, LF and TAB; sent as they are
  F  fixed records of --record-size octets, concatenated
  V  variable records, each preceded by its length as 2 octets, big endian
     (RFC 5024 section 6.5); --record-size is the maximum (default: longest)

Passwords may also come from the environment: OFTP2_PASSWORD for
--password, OFTP2_PARTNER_PASSWORD for --partner-password.
`

// run executes one command line and returns when everything it started has
// ended.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, overview)
		return &usageError{"missing command (serve or send)"}
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, overview)
		fmt.Fprintln(stdout, "\nFlags of oftp2 serve:")
		sf, _ := serveFlags(stdout)
		sf.PrintDefaults()
		fmt.Fprintln(stdout, "\nFlags of oftp2 send:")
		df, _ := sendFlags(stdout)
		df.PrintDefaults()
		return nil
	case "serve":
		return runServe(ctx, args[1:], stdout, stderr)
	case "send":
		return runSend(ctx, args[1:], stdout, stderr)
	}
	fmt.Fprint(stderr, overview)
	return &usageError{fmt.Sprintf("unknown command %q (want serve or send)", args[0])}
}

// common holds the flags both commands share.
type common struct {
	odetteID   string
	password   string
	cert, key  string
	ca         string
	plain      bool
	bufferSize int
	credit     int
	noCompress bool
	noRestart  bool
	timeout    time.Duration
	charset    string
	lenient    bool
	logLevel   string
}

func (c *common) register(fs *flag.FlagSet, logLevel string) {
	fs.StringVar(&c.odetteID, "odette-id", "", "own Odette ID, sent in SSID (required)")
	fs.StringVar(&c.password, "password", "", "own password, sent in SSID (default $OFTP2_PASSWORD)")
	fs.StringVar(&c.cert, "cert", "", "PEM certificate chain presented in TLS")
	fs.StringVar(&c.key, "key", "", "PEM private key of --cert")
	fs.BoolVar(&c.plain, "plain", false, "plain TCP without TLS (RFC 5024 port 3305 semantics)")
	fs.IntVar(&c.bufferSize, "buffer-size", 0, fmt.Sprintf("data exchange buffer size offered in SSID, 128-99999 (default %d)", endpoint.DefaultBufferSize))
	fs.IntVar(&c.credit, "credit", 0, fmt.Sprintf("credit window offered in SSID, 1-999 (default %d)", endpoint.DefaultCredit))
	fs.BoolVar(&c.noCompress, "no-compression", false, "do not offer buffer compression")
	fs.BoolVar(&c.noRestart, "no-restart", false, "do not offer restart of interrupted transfers")
	fs.DurationVar(&c.timeout, "timeout", endpoint.DefaultTimeout, "inactivity timer: ESID 09 when the partner stays silent this long")
	fs.StringVar(&c.charset, "charset", "strict", "character set of X(n) fields: strict (RFC 5024 Appendix B) or lenient (printable ASCII)")
	fs.BoolVar(&c.lenient, "lenient", false, "judge the partner by this endpoint's own state machine only, not by the validator the SmartProxy uses (for interop experiments)")
	fs.StringVar(&c.logLevel, "log-level", logLevel, "log level on stderr: trace, debug, info, warning, error")
}

func (c *common) config(role endpoint.Role, stderr io.Writer) (endpoint.Config, *logrus.Logger, error) {
	if c.odetteID == "" {
		return endpoint.Config{}, nil, &usageError{"--odette-id is required"}
	}
	if c.password == "" {
		c.password = os.Getenv("OFTP2_PASSWORD")
	}
	var cs oftp2.Charset
	switch c.charset {
	case "strict":
		cs = oftp2.CharsetStrict
	case "lenient":
		cs = oftp2.CharsetLenient
	default:
		return endpoint.Config{}, nil, &usageError{fmt.Sprintf("--charset %q: want strict or lenient", c.charset)}
	}
	lvl, err := logrus.ParseLevel(c.logLevel)
	if err != nil {
		return endpoint.Config{}, nil, &usageError{"--log-level: " + err.Error()}
	}
	log := logrus.New()
	log.Out = stderr
	log.Level = lvl
	return endpoint.Config{
		Role:               role,
		ID:                 c.odetteID,
		Password:           oftp2.Password(c.password),
		BufferSize:         c.bufferSize,
		Credit:             c.credit,
		DisableCompression: c.noCompress,
		DisableRestart:     c.noRestart,
		Timeout:            c.timeout,
		Charset:            cs,
		Lenient:            c.lenient,
		Logger:             log,
	}, log, nil
}

// loadCA reads a PEM bundle of CA certificates.
func loadCA(path string) (*x509.CertPool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("%s: no PEM certificate found", path)
	}
	return pool, nil
}

// ---- serve ----

type serveOpts struct {
	common
	listen   string
	addrFile string
	dir      string
	outbox   string
	outFmt   string
	mode     string
	partners partnerList
}

// partnerList is the repeatable --partner ID:PASSWORD flag.
type partnerList map[string]oftp2.Password

func (p partnerList) String() string {
	ids := make([]string, 0, len(p))
	for id := range p {
		ids = append(ids, id+":***")
	}
	sort.Strings(ids)
	return strings.Join(ids, ",")
}

func (p partnerList) Set(v string) error {
	id, pw, ok := strings.Cut(v, ":")
	if !ok || id == "" {
		return fmt.Errorf("want ODETTE-ID:PASSWORD, got %q", v)
	}
	p[id] = oftp2.Password(pw)
	return nil
}

func serveFlags(out io.Writer) (*flag.FlagSet, *serveOpts) {
	o := &serveOpts{partners: partnerList{}}
	fs := flag.NewFlagSet("oftp2 serve", flag.ContinueOnError)
	fs.SetOutput(out)
	o.common.register(fs, "info")
	fs.StringVar(&o.listen, "listen", "", "address to listen on (default :6619 with TLS, :3305 with --plain)")
	fs.StringVar(&o.addrFile, "addr-file", "", "write the bound listen address to this file once listening (for scripts using port 0)")
	fs.StringVar(&o.ca, "ca", "", "PEM CA bundle; when given, partners must present a client certificate it verifies")
	fs.StringVar(&o.dir, "dir", "", "directory where received files land (required)")
	fs.StringVar(&o.outbox, "outbox", "", "directory of files to send to callers when they hand over the speaker role")
	fs.StringVar(&o.outFmt, "outbox-format", "U", "Virtual File format of outbox files: U or T")
	fs.StringVar(&o.mode, "mode", "B", "send/receive capability in SSID: B (both), R (receive only) or S (send only)")
	fs.Var(o.partners, "partner", "accepted partner as ODETTE-ID:PASSWORD (repeatable); without any, every ID is accepted")
	fs.Usage = func() {
		fmt.Fprintln(out, "usage: oftp2 serve --dir DIR --odette-id ID [--cert FILE --key FILE [--ca FILE] | --plain] [flags]")
		fs.PrintDefaults()
	}
	return fs, o
}

func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return &usageError{err.Error()}
	}
	return nil
}

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, o := serveFlags(stderr)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return &usageError{fmt.Sprintf("serve: unexpected argument %q", fs.Arg(0))}
	}
	if o.dir == "" {
		return &usageError{"serve: --dir is required"}
	}
	cfg, log, err := o.config(endpoint.Responder, stderr)
	if err != nil {
		return err
	}
	cfg.ReceiveDir = o.dir
	if len(o.partners) > 0 {
		cfg.Partners = o.partners
	}
	switch o.mode {
	case "B", "R", "S":
		cfg.Mode = oftp2.Mode(o.mode[0])
	default:
		return &usageError{fmt.Sprintf("serve: --mode %q: want B, R or S", o.mode)}
	}
	if cfg.Mode == oftp2.ModeSender {
		cfg.ReceiveDir = ""
	}
	var ob *outbox
	if o.outbox != "" {
		if o.outFmt != "U" && o.outFmt != "T" {
			return &usageError{fmt.Sprintf("serve: --outbox-format %q: want U or T", o.outFmt)}
		}
		ob = &outbox{dir: o.outbox, format: oftp2.FileFormat(o.outFmt[0]), claimed: map[string]bool{}}
		cfg.Outbox = ob.files
	}
	var mu sync.Mutex // serialises the report lines of concurrent sessions
	ep, err := endpoint.New(cfg)
	if err != nil {
		return err
	}
	var tlsCfg *tls.Config
	if !o.plain {
		if o.cert == "" || o.key == "" {
			return &usageError{"serve: --cert and --key are required unless --plain"}
		}
		// Loaded per handshake, so that renewed files are used without a restart.
		if _, err := tls.LoadX509KeyPair(o.cert, o.key); err != nil {
			return fmt.Errorf("serve: %w", err)
		}
		certFile, keyFile := o.cert, o.key
		tlsCfg = &tls.Config{
			MinVersion: tls.VersionTLS12, // RFC 8996: no TLS 1.0/1.1
			GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
				c, err := tls.LoadX509KeyPair(certFile, keyFile)
				return &c, err
			},
		}
		if o.ca != "" {
			pool, err := loadCA(o.ca)
			if err != nil {
				return fmt.Errorf("serve: --ca: %w", err)
			}
			tlsCfg.ClientCAs = pool
			tlsCfg.ClientAuth = tls.RequireAndVerifyClientCert
		}
	}
	addr := o.listen
	if addr == "" {
		addr = ":6619"
		if o.plain {
			addr = ":3305"
		}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("serve: %w", err)
	}
	defer ln.Close()
	if o.addrFile != "" {
		if err := os.WriteFile(o.addrFile, []byte(ln.Addr().String()+"\n"), 0o644); err != nil {
			return fmt.Errorf("serve: --addr-file: %w", err)
		}
	}
	tlsState := "TLS"
	switch {
	case tlsCfg == nil:
		tlsState = "plain TCP"
	case tlsCfg.ClientCAs != nil:
		tlsState = "TLS, client certificate required"
	}
	log.WithFields(logrus.Fields{"listen": ln.Addr().String(), "odette_id": cfg.ID, "dir": o.dir, "transport": tlsState}).Info("listening")

	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				log.Info("shutting down")
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("serve: %w", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			serveConn(ctx, c, tlsCfg, ep, ob, cfg.Timeout, log, stdout, &mu)
		}()
	}
}

// serveConn runs one session: the TLS handshake under the inactivity
// timeout, then the OFTP2 session.
func serveConn(ctx context.Context, c net.Conn, tlsCfg *tls.Config, ep *endpoint.Endpoint, ob *outbox, timeout time.Duration, log logrus.FieldLogger, stdout io.Writer, mu *sync.Mutex) {
	l := log.WithField("remote_addr", c.RemoteAddr().String())
	if tlsCfg != nil {
		tc := tls.Server(c, tlsCfg)
		hctx, cancel := context.WithTimeout(ctx, timeout)
		err := tc.HandshakeContext(hctx)
		cancel()
		if err != nil {
			l.WithError(err).WithField("event", "tls_handshake_failed").Warn("TLS handshake failed")
			c.Close()
			return
		}
		st := tc.ConnectionState()
		l = l.WithField("tls_version", tls.VersionName(st.Version))
		if len(st.PeerCertificates) > 0 {
			l = l.WithField("client_cert", st.PeerCertificates[0].Subject.String())
		}
		c = tc
	}
	l.Info("connection accepted")
	res, err := ep.Run(ctx, c)
	mu.Lock()
	defer mu.Unlock()
	for _, rf := range res.Received {
		fmt.Fprintf(stdout, "received %s dataset=%s originator=%s format=%s records=%d size=%d sha256=%s\n",
			rf.Path, rf.DatasetName, rf.Originator, rf.Format, rf.Records, rf.Size, rf.SHA256)
	}
	if ob != nil {
		ob.done(res.Sent, l)
	}
	if err != nil {
		l.WithError(err).Warn("session failed")
	}
}

// outbox offers the files of a directory to callers. It is safe for
// concurrent use by several sessions.
type outbox struct {
	dir    string
	format oftp2.FileFormat

	mu      sync.Mutex
	claimed map[string]bool // paths offered in a running session
}

// files lists the files for partner: DIR/* and DIR/PARTNER/*, not hidden,
// not claimed by another session.
func (o *outbox) files(partner string) ([]endpoint.OutgoingFile, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	var out []endpoint.OutgoingFile
	for _, d := range []string{o.dir, filepath.Join(o.dir, partner)} {
		entries, err := os.ReadDir(d)
		if err != nil {
			if errors.Is(err, os.ErrNotExist) && d != o.dir {
				continue
			}
			return nil, err
		}
		for _, e := range entries {
			p := filepath.Join(d, e.Name())
			if !e.Type().IsRegular() || strings.HasPrefix(e.Name(), ".") || o.claimed[p] {
				continue
			}
			o.claimed[p] = true
			out = append(out, endpoint.OutgoingFile{Path: p, Format: o.format})
		}
	}
	return out, nil
}

// done moves the files confirmed by EERP to .sent/ and releases the others.
func (o *outbox) done(sent []endpoint.Delivery, log logrus.FieldLogger) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, d := range sent {
		delete(o.claimed, d.File.Path)
		if d.Status != endpoint.StatusDelivered {
			log.WithError(d.Err).WithField("path", d.File.Path).Warn("outbox file not delivered; offered again next session")
			continue
		}
		dst := filepath.Join(filepath.Dir(d.File.Path), ".sent", filepath.Base(d.File.Path))
		if err := os.MkdirAll(filepath.Dir(dst), 0o750); err == nil {
			err = os.Rename(d.File.Path, dst)
			if err == nil {
				log.WithField("path", dst).Info("outbox file delivered")
				continue
			}
		}
		log.WithField("path", d.File.Path).Error("outbox file delivered but could not be moved to .sent")
	}
}

// ---- send ----

type sendOpts struct {
	common
	connect         string
	serverName      string
	partnerID       string
	partnerPassword string
	format          string
	recordSize      int
	dataset         string
	description     string
	dir             string
	sourceIP        string
}

func sendFlags(out io.Writer) (*flag.FlagSet, *sendOpts) {
	o := &sendOpts{}
	fs := flag.NewFlagSet("oftp2 send", flag.ContinueOnError)
	fs.SetOutput(out)
	o.common.register(fs, "warning")
	fs.StringVar(&o.connect, "connect", "", "partner address HOST:PORT (required)")
	fs.StringVar(&o.ca, "ca", "", "PEM CA bundle that verifies the partner's certificate (default: the system roots)")
	fs.StringVar(&o.serverName, "server-name", "", "name expected in the partner's certificate (default: the host of --connect)")
	fs.StringVar(&o.partnerID, "partner-id", "", "Odette ID the partner must present in its SSID (default: any)")
	fs.StringVar(&o.partnerPassword, "partner-password", "", "password the partner must present (default $OFTP2_PARTNER_PASSWORD)")
	fs.StringVar(&o.format, "format", "U", "Virtual File format of the files: U, T, F or V")
	fs.IntVar(&o.recordSize, "record-size", 0, "record size: required for F, maximum for V (default: longest record)")
	fs.StringVar(&o.dataset, "dataset", "", "Virtual File dataset name (one FILE only; default: from the file name)")
	fs.StringVar(&o.description, "description", "", "Virtual File description (SFIDDESC)")
	fs.StringVar(&o.dir, "dir", "", "directory for files the partner sends back in the same session (default: send only)")
	fs.StringVar(&o.sourceIP, "source-ip", "", "local IP address to connect from (default: the system chooses)")
	fs.Usage = func() {
		fmt.Fprintln(out, "usage: oftp2 send --connect HOST:PORT --odette-id ID [--cert FILE --key FILE] [--ca FILE | --plain] [flags] FILE...")
		fs.PrintDefaults()
	}
	return fs, o
}

func runSend(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, o := sendFlags(stderr)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	paths := fs.Args()
	if o.connect == "" {
		return &usageError{"send: --connect is required"}
	}
	if len(paths) == 0 && o.dir == "" {
		return &usageError{"send: no FILE given"}
	}
	if o.dataset != "" && len(paths) != 1 {
		return &usageError{"send: --dataset needs exactly one FILE"}
	}
	if len(o.format) != 1 || !oftp2.FileFormat(o.format[0]).Valid() {
		return &usageError{fmt.Sprintf("send: --format %q: want U, T, F or V", o.format)}
	}
	var source netip.Addr
	if o.sourceIP != "" {
		var err error
		if source, err = netip.ParseAddr(o.sourceIP); err != nil {
			return &usageError{fmt.Sprintf("send: --source-ip %q: not an IP address", o.sourceIP)}
		}
	}
	cfg, log, err := o.config(endpoint.Initiator, stderr)
	if err != nil {
		return err
	}
	if o.partnerPassword == "" {
		o.partnerPassword = os.Getenv("OFTP2_PARTNER_PASSWORD")
	}
	cfg.PartnerID = o.partnerID
	cfg.PartnerPassword = oftp2.Password(o.partnerPassword)
	cfg.ReceiveDir = o.dir
	ep, err := endpoint.New(cfg)
	if err != nil {
		return err
	}
	files := make([]endpoint.OutgoingFile, len(paths))
	for i, p := range paths {
		files[i] = endpoint.OutgoingFile{Path: p, Format: oftp2.FileFormat(o.format[0]), RecordSize: o.recordSize, DatasetName: o.dataset, Description: o.description}
	}
	var conn net.Conn
	dialer := &net.Dialer{Timeout: cfg.Timeout}
	if source.IsValid() {
		dialer.LocalAddr = &net.TCPAddr{IP: source.AsSlice()}
	}
	if o.plain {
		conn, err = dialer.DialContext(ctx, "tcp", o.connect)
	} else {
		tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: o.serverName}
		if o.cert != "" || o.key != "" {
			c, err := tls.LoadX509KeyPair(o.cert, o.key)
			if err != nil {
				return fmt.Errorf("send: %w", err)
			}
			tlsCfg.Certificates = []tls.Certificate{c}
		}
		if o.ca != "" {
			if tlsCfg.RootCAs, err = loadCA(o.ca); err != nil {
				return fmt.Errorf("send: --ca: %w", err)
			}
		}
		d := &tls.Dialer{NetDialer: dialer, Config: tlsCfg}
		conn, err = d.DialContext(ctx, "tcp", o.connect)
	}
	if err != nil {
		return fmt.Errorf("send: %w", err)
	}
	log.WithField("connect", o.connect).Debug("connected")
	res, runErr := ep.Run(ctx, conn, files...)
	for _, rf := range res.Received {
		fmt.Fprintf(stdout, "received %s dataset=%s originator=%s format=%s records=%d size=%d sha256=%s\n",
			rf.Path, rf.DatasetName, rf.Originator, rf.Format, rf.Records, rf.Size, rf.SHA256)
	}
	for _, d := range res.Sent {
		if d.Status != endpoint.StatusDelivered {
			continue
		}
		sum, err := fileSHA256(d.File.Path)
		if err != nil {
			sum = "unavailable (" + err.Error() + ")"
		}
		fmt.Fprintf(stdout, "delivered %s dataset=%s units=%d restart=%d sha256=%s\n", d.File.Path, d.File.DatasetName, d.Units, d.RestartPosition, sum)
	}
	if runErr != nil {
		if err := res.Err(); err != nil {
			return fmt.Errorf("send: %w\n%w", runErr, err)
		}
		return fmt.Errorf("send: %w", runErr)
	}
	if err := res.Err(); err != nil {
		return fmt.Errorf("send: not every file was confirmed by EERP:\n%w", err)
	}
	return nil
}

func fileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
