// Command benche2e measures OFTP2 transfers end to end through three paths (four with --one-thread) and writes the
// results into docs/benchmarks.md. scripts/bench-e2e.sh (make bench-e2e) builds the binaries,
// makes the certificates and calls it; see that script for the set-up.
//
// The paths, each from `oftp2 send` (the partner, TLS 1.3 with a client certificate) to
// `oftp2 serve` (the receiver), everything on 127.0.0.1:
//
//	direct     oftp2 send ──TLS──► oftp2 serve (TLS, client certificate required)
//	haproxy    oftp2 send ──TLS──► haproxy ──TLS leg (mTLS)──► haproxy ──TCP──► oftp2 serve --plain
//	smartproxy oftp2 send ──TLS──► smartproxy-server ══tunnel (mTLS gRPC)══ smartproxy-client ──TCP──► oftp2 serve --plain
//	smartproxy-1t  the same with GOMAXPROCS=1 in both daemons (--one-thread)
//
// HAProxy relays over two TLS legs, so it does as many TLS operations per byte as the
// SmartProxy pair (partner TLS plus the tunnel). For each path it runs three workloads — one
// 1 GiB file, 8 × 128 MiB and 100 × 16 MiB concurrent sessions — in several rounds, the paths
// interleaved within each round, and reports the aggregate MB/s, the proxy processes' CPU
// seconds (user + system from /proc) per GiB, their peak resident set (VmHWM, reset before each
// run), the Jain fairness index of the per-session throughputs, and the ratios to HAProxy and to
// the direct path.
//
// The head-of-line check (--hol) starts a second SmartProxy pair whose client reaches the
// receivers through a small forwarder in this process: in each round seven sessions run alone,
// then again while an eighth session's receiver (a second `oftp2 serve`) is frozen with SIGSTOP
// in the middle of its file. The seven must not lose throughput, and the proxies' memory must
// stay bounded by the tunnel window per session.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "benche2e:", err)
		os.Exit(1)
	}
}

const (
	partnerID  = "O0013000000PARTNER"
	partnerPW  = "PARTNPW"
	companyID  = "O0013000000COMPANY"
	companyPW  = "COMPANY"
	mib        = 1 << 20
	clockTicks = 100 // USER_HZ: the unit of utime and stime in /proc/PID/stat on Linux
)

type options struct {
	bin, dir, certs, tunnel, license string
	haproxy                          string
	rounds                           int
	scale                            float64
	doc, svg                         string
	hol                              bool
	holRounds                        int
	workloads                        string
	profile                          string
	oneThread                        bool
}

// workload is a number of concurrent sessions, each sending one file of size bytes.
type workload struct {
	name     string
	sessions int
	size     int64
}

func (w workload) total() int64 { return int64(w.sessions) * w.size }

func run(args []string) error {
	var o options
	fs := flag.NewFlagSet("benche2e", flag.ContinueOnError)
	fs.StringVar(&o.bin, "bin", "bin", "`DIR` with oftp2, smartproxy-server and smartproxy-client")
	fs.StringVar(&o.dir, "dir", "", "work `DIR` (tmpfs, e.g. under /dev/shm); required")
	fs.StringVar(&o.certs, "certs", "", "`DIR` written by demosetup certs; required")
	fs.StringVar(&o.tunnel, "tunnel", "", "`DIR` written by smartproxy-server pki init; required")
	fs.StringVar(&o.license, "license", "", "license `FILE` for this host's proxy ID; required")
	fs.StringVar(&o.haproxy, "haproxy", "haproxy", "HAProxy `BINARY`")
	fs.IntVar(&o.rounds, "rounds", 3, "rounds; each runs every workload on every path")
	fs.Float64Var(&o.scale, "scale", 1, "`FACTOR` for every file size (less than 1 for a quick trial)")
	fs.StringVar(&o.workloads, "workloads", "1x1024,8x128,100x16", "`LIST` of SESSIONSxMIB")
	fs.StringVar(&o.doc, "doc", "", "Markdown `FILE` whose bench-e2e section is replaced with the results (none: stdout)")
	fs.StringVar(&o.svg, "svg", "", "SVG `FILE` for the plot (none: no plot)")
	fs.BoolVar(&o.hol, "hol", true, "run the head-of-line check too")
	fs.IntVar(&o.holRounds, "hol-rounds", 6, "rounds of the head-of-line check (its figure is a ratio of wall-clock rates, which a shared machine disturbs most: more rounds, alternating which run goes first)")
	fs.BoolVar(&o.oneThread, "one-thread", true, "also run a SmartProxy pair whose daemons run with GOMAXPROCS=1 (path smartproxy-1t): two threads of Go code for the pair, as HAProxy's two")
	fs.StringVar(&o.profile, "profile", "", "after the rounds, take 15 s CPU profiles of both daemons during one more run of the second workload on the SmartProxy path and write them into `DIR`")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if o.dir == "" || o.certs == "" || o.tunnel == "" || o.license == "" {
		return errors.New("--dir, --certs, --tunnel and --license are required")
	}
	wls, err := parseWorkloads(o.workloads, o.scale)
	if err != nil {
		return err
	}
	ctx, cancel := signalContext()
	defer cancel()
	b := &bench{o: o, started: time.Now()}
	defer b.stopAll()
	if err := b.setUp(ctx, wls); err != nil {
		return err
	}
	for r := 0; r < o.rounds; r++ {
		for _, w := range wls {
			for i := range b.paths {
				p := b.paths[(r+i)%len(b.paths)]
				res, err := b.runWorkload(ctx, p, w, r)
				if err != nil {
					return fmt.Errorf("round %d, %s, %s: %w", r+1, p.name, w.name, err)
				}
				fmt.Fprintf(os.Stderr, "round %d %-10s %-12s %8.1f MB/s  %5.2f CPU s/GiB  RSS %6.1f MiB  Jain %.3f\n",
					r+1, p.name, w.name, res.mbps, res.cpuPerGiB, res.rssMiB, res.jain)
				b.results = append(b.results, res)
			}
		}
	}
	if o.profile != "" {
		if err := b.profileRun(ctx, wls[min(1, len(wls)-1)]); err != nil {
			return fmt.Errorf("profile: %w", err)
		}
	}
	if o.hol {
		for _, p := range b.paths {
			if strings.HasPrefix(p.name, "smartproxy") {
				b.stopPath(p)
			}
		}
		if err := b.headOfLine(ctx); err != nil {
			return fmt.Errorf("head-of-line check: %w", err)
		}
	}
	b.finished = time.Now()
	report := b.report(wls)
	if o.svg != "" {
		if err := os.WriteFile(o.svg, []byte(b.plot(wls)), 0o644); err != nil {
			return err
		}
	}
	if o.doc == "" {
		fmt.Print(report)
		return nil
	}
	return replaceSection(o.doc, report)
}

func signalContext() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	go func() {
		select {
		case <-ch:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

func parseWorkloads(s string, scale float64) ([]workload, error) {
	var out []workload
	for _, f := range strings.Split(s, ",") {
		n, m, ok := strings.Cut(strings.TrimSpace(f), "x")
		sessions, err1 := strconv.Atoi(n)
		size, err2 := strconv.Atoi(m)
		if !ok || err1 != nil || err2 != nil || sessions < 1 || size < 1 {
			return nil, fmt.Errorf("workload %q: want SESSIONSxMIB", f)
		}
		bytes := int64(float64(size) * mib * scale)
		name := fmt.Sprintf("%d × %d MiB", sessions, size)
		if scale != 1 {
			name = fmt.Sprintf("%d × %.1f MiB", sessions, float64(bytes)/mib)
		}
		out = append(out, workload{name: name, sessions: sessions, size: max(bytes, 1)})
	}
	return out, nil
}

// path is one way from the partner to the receiver.
type path struct {
	name    string
	connect string  // partner address
	procs   []*proc // the proxy processes (none for direct)
	inbox   string  // where the receiver stores files
}

type bench struct {
	o                 options
	started, finished time.Time
	all               []*proc
	paths             []*path
	files             map[int64]string // source file per size
	results           []result
	hol               []holResult
	loads             []float64 // the 1-minute load average before each measured run
	plainAddr         string
	plainInbox        string
}

// result is one workload on one path in one round.
type result struct {
	path, workload string
	round          int
	mbps           float64 // aggregate: all bytes / wall time from first start to last end
	cpuPerGiB      float64 // CPU seconds of the proxy processes per GiB relayed
	rssMiB         float64 // sum of the proxy processes' peak resident sets
	jain           float64
	perSession     []float64 // MB/s of each session
}

func (b *bench) path(name string) string { return filepath.Join(b.o.dir, name) }

func (b *bench) setUp(ctx context.Context, wls []workload) error {
	if err := os.MkdirAll(b.path("logs"), 0o700); err != nil {
		return err
	}
	b.files = map[int64]string{}
	for _, w := range wls {
		if _, ok := b.files[w.size]; ok {
			continue
		}
		name := b.path(fmt.Sprintf("source-%d.bin", w.size))
		if err := randomFile(name, w.size); err != nil {
			return err
		}
		b.files[w.size] = name
	}
	cert := func(n string) string { return filepath.Join(b.o.certs, n) }
	tun := func(n string) string { return filepath.Join(b.o.tunnel, n) }

	// The receivers: plain for both proxies, TLS with client certificates for the direct path.
	_, plainAddr, err := b.serve(ctx, "serve-plain", "--plain")
	if err != nil {
		return err
	}
	b.plainAddr, b.plainInbox = plainAddr, b.path("serve-plain")
	_, tlsAddr, err := b.serve(ctx, "serve-tls", "--cert", cert("company.pem"), "--key", cert("company-key.pem"), "--ca", cert("partner-ca.pem"))
	if err != nil {
		return err
	}
	b.paths = append(b.paths, &path{name: "direct", connect: tlsAddr, inbox: b.path("serve-tls")})

	// HAProxy: partner TLS (company certificate, partner CA) → TLS leg with the tunnel
	// certificates → TLS frontend → plain receiver.
	ha, err := b.startHAProxy(ctx, cert, tun, plainAddr)
	if err != nil {
		return err
	}
	b.paths = append(b.paths, ha)

	sp, err := b.startSmartProxy(ctx, "smartproxy", plainAddr, b.plainInbox, nil)
	if err != nil {
		return err
	}
	b.paths = append(b.paths, sp)
	if b.o.oneThread {
		sp, err := b.startSmartProxy(ctx, "smartproxy-1t", plainAddr, b.plainInbox, []string{"GOMAXPROCS=1"})
		if err != nil {
			return err
		}
		b.paths = append(b.paths, sp)
	}
	return nil
}

// serve starts an oftp2 serve that stores into DIR/name and returns its address.
func (b *bench) serve(ctx context.Context, name string, extra ...string) (*proc, string, error) {
	addrFile := b.path(name + ".addr")
	os.Remove(addrFile)
	args := append([]string{"serve", "--listen", "127.0.0.1:0", "--addr-file", addrFile,
		"--odette-id", companyID, "--password", companyPW, "--partner", partnerID + ":" + partnerPW,
		"--dir", b.path(name), "--timeout", "10m", "--log-level", "warning"}, extra...)
	p, err := b.start(name, filepath.Join(b.o.bin, "oftp2"), args...)
	if err != nil {
		return nil, "", err
	}
	var addr string
	err = waitUntil(ctx, 30*time.Second, []*proc{p}, func() bool {
		d, _ := os.ReadFile(addrFile)
		addr = strings.TrimSpace(string(d))
		return addr != ""
	})
	return p, addr, err
}

func (b *bench) startHAProxy(ctx context.Context, cert, tun func(string) string, plainAddr string) (*path, error) {
	// HAProxy wants the certificate and its key in one file.
	cat := func(out string, files ...string) error {
		var buf bytes.Buffer
		for _, f := range files {
			d, err := os.ReadFile(f)
			if err != nil {
				return err
			}
			buf.Write(d)
		}
		return os.WriteFile(out, buf.Bytes(), 0o600)
	}
	frontPEM, legPEM, innerPEM := b.path("ha-front.pem"), b.path("ha-leg.pem"), b.path("ha-inner.pem")
	if err := cat(frontPEM, cert("company.pem"), cert("company-key.pem")); err != nil {
		return nil, err
	}
	if err := cat(legPEM, tun("client.pem"), tun("client-key.pem")); err != nil {
		return nil, err
	}
	if err := cat(innerPEM, tun("server.pem"), tun("server-key.pem")); err != nil {
		return nil, err
	}
	front, err := freeAddr()
	if err != nil {
		return nil, err
	}
	inner, err := freeAddr()
	if err != nil {
		return nil, err
	}
	cfg := fmt.Sprintf(`global
    maxconn 4000
    ssl-default-bind-options ssl-min-ver TLSv1.3
    ssl-default-server-options ssl-min-ver TLSv1.3
defaults
    mode tcp
    timeout connect 10s
    timeout client 10m
    timeout server 10m
frontend partner
    bind %s ssl crt %s ca-file %s verify required
    default_backend leg
backend leg
    server inner %s ssl crt %s ca-file %s verify required sni str(localhost) verifyhost localhost
frontend inner
    bind %s ssl crt %s ca-file %s verify required
    default_backend receiver
backend receiver
    server receiver %s
`, front, frontPEM, cert("partner-ca.pem"), inner, legPEM, tun("tunnel-ca.pem"), inner, innerPEM, tun("tunnel-ca.pem"), plainAddr)
	cfgFile := b.path("haproxy.cfg")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	p, err := b.start("haproxy", b.o.haproxy, "-db", "-f", cfgFile)
	if err != nil {
		return nil, err
	}
	if err := waitUntil(ctx, 30*time.Second, []*proc{p}, func() bool {
		c, err := net.DialTimeout("tcp", front, time.Second)
		if err == nil {
			c.Close()
		}
		return err == nil
	}); err != nil {
		return nil, err
	}
	return &path{name: "haproxy", connect: front, procs: []*proc{p}, inbox: b.plainInbox}, nil
}

// clientConfig is the part of smartproxy-client's JSON configuration (docs/configuration.md)
// the benchmark sets.
type clientConfig struct {
	PartnerListenAddress string           `json:"partner_listen_address"`
	CompanyCertificate   string           `json:"company_certificate"`
	CompanyKey           string           `json:"company_key"`
	TrustedCAFiles       []string         `json:"trusted_ca_files"`
	Partners             []map[string]any `json:"partners"`
	Limits               map[string]any   `json:"limits"`
	InternalServer       map[string]any   `json:"internal_server"`
	LogLevel             string           `json:"log_level"`
}

var (
	tunnelAddrRE  = regexp.MustCompile(`tunnel_addr="?([0-9.:\[\]]+)`)
	listenAddrRE  = regexp.MustCompile(`event=partner_listener_opened.*listen_addr="?([0-9.:\[\]]+)`)
	listenAddrRE2 = regexp.MustCompile(`listen_addr="?([0-9.:\[\]]+).*event=partner_listener_opened`)
)

// startSmartProxy starts smartproxy-server and smartproxy-client (with a JSON configuration
// whose internal server is internal) and waits until the partner listener is open.
// env is added to both daemons' environment.
func (b *bench) startSmartProxy(ctx context.Context, name, internal, inbox string, env []string) (*path, error) {
	cert := func(n string) string { return filepath.Join(b.o.certs, n) }
	tun := func(n string) string { return filepath.Join(b.o.tunnel, n) }
	cfg := clientConfig{
		PartnerListenAddress: "127.0.0.1:0",
		CompanyCertificate:   cert("company.pem"),
		CompanyKey:           cert("company-key.pem"),
		TrustedCAFiles:       []string{cert("partner-ca.pem")},
		Partners:             []map[string]any{{"odette_id": partnerID, "name": "Benchmark partner", "password": partnerPW}},
		Limits: map[string]any{"max_sessions": 1000, "max_handshakes": 1000, "per_ip_rate": 100000, "per_ip_burst": 100000,
			"max_handshakes_per_source": 1000, "max_handshakes_per_prefix": 1000, "idle_timeout": "10m"},
		InternalServer: map[string]any{"address": internal, "connect_timeout": "10s", "ssrm_timeout": "30s"},
		LogLevel:       "info",
	}
	data, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return nil, err
	}
	cfgFile := b.path(name + "-client.json")
	if err := os.WriteFile(cfgFile, data, 0o600); err != nil {
		return nil, err
	}
	metrics := []string{"--metrics="}
	if b.o.profile != "" {
		metrics = []string{"--metrics", "127.0.0.1:0", "--pprof"}
	}
	server, err := b.startEnv(name+"-server", env, filepath.Join(b.o.bin, "smartproxy-server"), append([]string{"-i", "127.0.0.1:0", "-l", b.o.license,
		"--tunnel-cert", tun("server.pem"), "--tunnel-key", tun("server-key.pem"), "--tunnel-ca", tun("tunnel-ca.pem"),
		"--admin=", "--pid-file="}, metrics...)...)
	if err != nil {
		return nil, err
	}
	tunnelAddr, err := b.waitLog(ctx, server, tunnelAddrRE)
	if err != nil {
		return nil, err
	}
	client, err := b.startEnv(name+"-client", env, filepath.Join(b.o.bin, "smartproxy-client"), append([]string{"-S", tunnelAddr,
		"--tunnel-server-name", "localhost", "--config", cfgFile,
		"--tunnel-cert", tun("client.pem"), "--tunnel-key", tun("client-key.pem"), "--tunnel-ca", tun("tunnel-ca.pem"),
		"--admin=", "--pid-file=", "--state-dir", b.path(name + "-client-state")}, metrics...)...)
	if err != nil {
		return nil, err
	}
	listen, err := b.waitLog(ctx, server, listenAddrRE, listenAddrRE2)
	if err != nil {
		return nil, err
	}
	return &path{name: name, connect: listen, procs: []*proc{server, client}, inbox: inbox}, nil
}

var metricsAddrRE = regexp.MustCompile(`metrics_addr="?([0-9.:\[\]]+)`)

// profileRun runs w once more on the SmartProxy path and fetches a 15 s CPU profile of each
// daemon meanwhile.
func (b *bench) profileRun(ctx context.Context, w workload) error {
	var sp *path
	for _, p := range b.paths {
		if p.name == "smartproxy" {
			sp = p
		}
	}
	if err := os.MkdirAll(b.o.profile, 0o755); err != nil {
		return err
	}
	var wg sync.WaitGroup
	errs := make([]error, len(sp.procs))
	for i, p := range sp.procs {
		addr, err := b.waitLog(ctx, p, metricsAddrRE)
		if err != nil {
			return err
		}
		out := filepath.Join(b.o.profile, strings.TrimPrefix(p.name, "smartproxy-")+".cpu.pprof")
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = fetch(ctx, "http://"+addr+"/debug/pprof/profile?seconds=15", out)
		}()
	}
	_, _, err := b.sendAll(ctx, sp.connect, w, "PROF", nil)
	clearInbox(sp.inbox)
	wg.Wait()
	return errors.Join(append(errs, err)...)
}

func fetch(ctx context.Context, url, out string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// waitLog waits until p's stderr matches one of res and returns the first submatch.
func (b *bench) waitLog(ctx context.Context, p *proc, res ...*regexp.Regexp) (string, error) {
	var got string
	err := waitUntil(ctx, 30*time.Second, b.all, func() bool {
		d, _ := os.ReadFile(p.logFile)
		for _, re := range res {
			if m := re.FindSubmatch(d); m != nil {
				got = string(m[1])
				return true
			}
		}
		return false
	})
	if err != nil {
		return "", fmt.Errorf("%s: waiting for %v: %w", p.name, res[0], err)
	}
	return got, nil
}

// runWorkload sends w's files concurrently over p and measures the run.
func (b *bench) runWorkload(ctx context.Context, p *path, w workload, round int) (result, error) {
	tag := fmt.Sprintf("R%d%s%d", round+1, strings.ToUpper(p.name[:2]), w.sessions)
	b.sampleLoad()
	before, err := b.resetProcs(p.procs)
	if err != nil {
		return result{}, err
	}
	rates, wall, err := b.sendAll(ctx, p.connect, w, tag, nil)
	if err != nil {
		return result{}, err
	}
	cpu, rss, err := b.procUsage(p.procs, before)
	if err != nil {
		return result{}, err
	}
	clearInbox(p.inbox)
	res := result{path: p.name, workload: w.name, round: round, perSession: rates, jain: jain(rates),
		mbps: float64(w.total()) / 1e6 / wall.Seconds(), rssMiB: float64(rss) / mib}
	if len(p.procs) > 0 {
		res.cpuPerGiB = cpu / (float64(w.total()) / (1 << 30))
	}
	return res, nil
}

// sendAll runs w.sessions oftp2 send processes at once and returns each session's MB/s and the
// wall time from the first start to the last end. started, if not nil, is called once every
// sender has been started.
func (b *bench) sendAll(ctx context.Context, connect string, w workload, tag string, started func()) ([]float64, time.Duration, error) {
	cert := func(n string) string { return filepath.Join(b.o.certs, n) }
	rates := make([]float64, w.sessions)
	errs := make([]error, w.sessions)
	var wg sync.WaitGroup
	t0 := time.Now()
	for i := range w.sessions {
		cmd := exec.CommandContext(ctx, filepath.Join(b.o.bin, "oftp2"), "send", "--connect", connect, "--server-name", "localhost",
			"--cert", cert("partner.pem"), "--key", cert("partner-key.pem"), "--ca", cert("company-ca.pem"),
			"--odette-id", partnerID, "--password", partnerPW, "--partner-id", companyID, "--partner-password", companyPW,
			"--format", "U", "--no-compression", "--timeout", "10m", "--dataset", fmt.Sprintf("%sS%03d", tag, i), b.files[w.size])
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		start := time.Now()
		if err := cmd.Start(); err != nil {
			return nil, 0, err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := cmd.Wait(); err != nil {
				errs[i] = fmt.Errorf("oftp2 send %d: %v: %s", i, err, strings.TrimSpace(stderr.String()))
				return
			}
			rates[i] = float64(w.size) / 1e6 / time.Since(start).Seconds()
		}()
	}
	if started != nil {
		started()
	}
	wg.Wait()
	return rates, time.Since(t0), errors.Join(errs...)
}

// cpuTicks is a process's user + system time in clock ticks.
func cpuTicks(pid int) (int64, error) {
	d, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may contain spaces; the fields after its ')' are fixed.
	rest := d[bytes.LastIndexByte(d, ')')+2:]
	f := strings.Fields(string(rest))
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %q", pid, d)
	}
	return utime + stime, nil
}

// peakRSS is VmHWM of a process in bytes.
func peakRSS(pid int) (int64, error) {
	d, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(d))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("/proc/%d/status: no VmHWM", pid)
}

// resetProcs resets the peak resident set of ps and returns their CPU ticks.
func (b *bench) resetProcs(ps []*proc) ([]int64, error) {
	ticks := make([]int64, len(ps))
	for i, p := range ps {
		// Writing 5 to clear_refs resets VmHWM to the current resident set.
		if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", p.pid()), []byte("5"), 0); err != nil {
			return nil, err
		}
		t, err := cpuTicks(p.pid())
		if err != nil {
			return nil, err
		}
		ticks[i] = t
	}
	return ticks, nil
}

// procUsage returns the CPU seconds ps used since before and the sum of their peak RSS.
func (b *bench) procUsage(ps []*proc, before []int64) (cpu float64, rss int64, err error) {
	for i, p := range ps {
		t, err := cpuTicks(p.pid())
		if err != nil {
			return 0, 0, err
		}
		cpu += float64(t-before[i]) / clockTicks
		r, err := peakRSS(p.pid())
		if err != nil {
			return 0, 0, err
		}
		rss += r
	}
	return cpu, rss, nil
}

// jain is (Σx)² / (n·Σx²): 1 when every session got the same throughput, 1/n when one got all.
func jain(xs []float64) float64 {
	var s, s2 float64
	for _, x := range xs {
		s += x
		s2 += x * x
	}
	if s2 == 0 {
		return 0
	}
	return s * s / (float64(len(xs)) * s2)
}

// clearInbox removes the received files (and their metadata) below dir.
func clearInbox(dir string) {
	filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			os.Remove(p)
		}
		return nil
	})
}

func randomFile(name string, size int64) error {
	f, err := os.Create(name)
	if err != nil {
		return err
	}
	if _, err := io.CopyN(f, rand.Reader, size); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// waitUntil polls cond every 50 ms until it holds, ctx ends, timeout passes or one of ps exits.
func waitUntil(ctx context.Context, timeout time.Duration, ps []*proc, cond func() bool) error {
	deadline := time.Now().Add(timeout)
	for !cond() {
		for _, p := range ps {
			if !p.stopped && p.exited() {
				return fmt.Errorf("%s exited: %s", p.name, p.tail())
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not within %v", timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

// proc is a long-running process the benchmark started.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logFile string
	done    chan struct{}
	stopped bool // stopped on purpose
}

func (b *bench) start(name, bin string, args ...string) (*proc, error) {
	return b.startEnv(name, nil, bin, args...)
}

// startEnv is start with env added to the process's environment.
func (b *bench) startEnv(name string, env []string, bin string, args ...string) (*proc, error) {
	logFile := b.path(filepath.Join("logs", name+".log"))
	lf, err := os.Create(logFile)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = lf, lf
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	p := &proc{name: name, cmd: cmd, logFile: logFile, done: make(chan struct{})}
	go func() { cmd.Wait(); lf.Close(); close(p.done) }()
	b.all = append(b.all, p)
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *proc) tail() string {
	d, _ := os.ReadFile(p.logFile)
	if len(d) > 2000 {
		d = d[len(d)-2000:]
	}
	return string(d)
}

func (p *proc) stop() {
	p.stopped = true
	p.cmd.Process.Signal(syscall.SIGCONT)
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-p.done
	}
}

func (b *bench) stopPath(pa *path) {
	for _, p := range pa.procs {
		p.stop()
	}
}

func (b *bench) stopAll() {
	for i := len(b.all) - 1; i >= 0; i-- {
		b.all[i].stop()
	}
}

// holResult is one round of the head-of-line check.
type holResult struct {
	aloneMBps, frozenMBps  float64 // aggregate of the seven sessions
	aloneRSS, frozenRSS    float64 // peak RSS of the two daemons, MiB
	frozenBuffered         int64   // bytes the forwarder had passed to the frozen receiver
	aloneRates, withFrozen []float64
}

// headOfLine runs the seven sessions alone and next to a session whose receiver is frozen.
func (b *bench) headOfLine(ctx context.Context) error {
	frozen, frozenAddr, err := b.serve(ctx, "serve-frozen", "--plain")
	if err != nil {
		return err
	}
	fw, err := newForwarder(b.plainAddr, frozenAddr)
	if err != nil {
		return err
	}
	defer fw.close()
	sp, err := b.startSmartProxy(ctx, "hol", fw.addr(), b.plainInbox, nil)
	if err != nil {
		return err
	}
	defer b.stopPath(sp)
	size := b.holSize()
	seven := workload{name: fmt.Sprintf("7 × %.0f MiB", float64(size)/mib), sessions: 7, size: size}
	if _, ok := b.files[size]; !ok {
		name := b.path(fmt.Sprintf("source-%d.bin", size))
		if err := randomFile(name, size); err != nil {
			return err
		}
		b.files[size] = name
	}
	for r := 0; r < b.o.holRounds; r++ {
		var h holResult
		alone := func() error {
			b.sampleLoad()
			before, err := b.resetProcs(sp.procs)
			if err != nil {
				return err
			}
			rates, wall, err := b.sendAll(ctx, sp.connect, seven, fmt.Sprintf("H%dA", r+1), nil)
			if err != nil {
				return err
			}
			_, rss, err := b.procUsage(sp.procs, before)
			if err != nil {
				return err
			}
			h.aloneMBps, h.aloneRSS, h.aloneRates = float64(seven.total())/1e6/wall.Seconds(), float64(rss)/mib, rates
			clearInbox(b.plainInbox)
			return nil
		}
		beside := func() error {
			// The eighth session goes to the frozen receiver, which stops once its file is flowing.
			fw.arm()
			stuck, err := b.startSender(ctx, sp.connect, size, fmt.Sprintf("H%dF", r+1))
			if err != nil {
				return err
			}
			defer func() {
				stuck.Process.Kill()
				stuck.Wait()
				frozen.cmd.Process.Signal(syscall.SIGCONT)
				clearInbox(b.plainInbox)
				clearInbox(b.path("serve-frozen"))
			}()
			if err := waitUntil(ctx, time.Minute, b.all, func() bool { return fw.frozenBytes() > 4*mib }); err != nil {
				return fmt.Errorf("frozen session: %w", err)
			}
			frozen.cmd.Process.Signal(syscall.SIGSTOP)
			b.sampleLoad()
			before, err := b.resetProcs(sp.procs)
			if err != nil {
				return err
			}
			rates, wall, err := b.sendAll(ctx, sp.connect, seven, fmt.Sprintf("H%dB", r+1), nil)
			if err != nil {
				return err
			}
			_, rss, err := b.procUsage(sp.procs, before)
			if err != nil {
				return err
			}
			h.frozenMBps, h.frozenRSS, h.withFrozen = float64(seven.total())/1e6/wall.Seconds(), float64(rss)/mib, rates
			h.frozenBuffered = fw.frozenBytes()
			return nil
		}
		// Alternate which run goes first, so that a trend in the machine's load does not count
		// for or against the frozen session.
		runs := []func() error{alone, beside}
		if r%2 == 1 {
			runs[0], runs[1] = beside, alone
		}
		for _, run := range runs {
			if err := run(); err != nil {
				return err
			}
		}
		fmt.Fprintf(os.Stderr, "hol round %d: seven alone %.1f MB/s (RSS %.1f MiB), beside a frozen session %.1f MB/s (RSS %.1f MiB)\n",
			r+1, h.aloneMBps, h.aloneRSS, h.frozenMBps, h.frozenRSS)
		b.hol = append(b.hol, h)
	}
	return nil
}

// sampleLoad records the 1-minute load average, for the report.
func (b *bench) sampleLoad() {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return
	}
	var l float64
	if _, err := fmt.Sscan(string(data), &l); err == nil {
		b.loads = append(b.loads, l)
	}
}

func (b *bench) holSize() int64 { return max(int64(128*mib*b.o.scale), 8*mib) }

func (b *bench) startSender(ctx context.Context, connect string, size int64, dataset string) (*exec.Cmd, error) {
	cert := func(n string) string { return filepath.Join(b.o.certs, n) }
	if _, ok := b.files[size]; !ok {
		return nil, fmt.Errorf("no source file of %d bytes", size)
	}
	cmd := exec.CommandContext(ctx, filepath.Join(b.o.bin, "oftp2"), "send", "--connect", connect, "--server-name", "localhost",
		"--cert", cert("partner.pem"), "--key", cert("partner-key.pem"), "--ca", cert("company-ca.pem"),
		"--odette-id", partnerID, "--password", partnerPW, "--partner-id", companyID, "--partner-password", companyPW,
		"--format", "U", "--no-compression", "--timeout", "10m", "--dataset", dataset, b.files[size])
	return cmd, cmd.Start()
}

// forwarder passes the client's connections to the internal receivers: the first connection
// after arm to the frozen one, every other to the normal one.
type forwarder struct {
	ln             net.Listener
	normal, frozen string
	armed          atomic.Bool
	toFrozen       atomic.Int64
	wg             sync.WaitGroup
	mu             sync.Mutex
	conns          []net.Conn
}

func newForwarder(normal, frozen string) (*forwarder, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	f := &forwarder{ln: ln, normal: normal, frozen: frozen}
	f.wg.Add(1)
	go f.serve()
	return f, nil
}

func (f *forwarder) addr() string { return f.ln.Addr().String() }

func (f *forwarder) arm() { f.toFrozen.Store(0); f.armed.Store(true) }

func (f *forwarder) frozenBytes() int64 { return f.toFrozen.Load() }

func (f *forwarder) serve() {
	defer f.wg.Done()
	for {
		c, err := f.ln.Accept()
		if err != nil {
			return
		}
		target := f.normal
		toFrozen := f.armed.CompareAndSwap(true, false)
		if toFrozen {
			target = f.frozen
		}
		d, err := net.Dial("tcp", target)
		if err != nil {
			c.Close()
			continue
		}
		f.mu.Lock()
		f.conns = append(f.conns, c, d)
		f.mu.Unlock()
		f.wg.Add(2)
		go func() {
			defer f.wg.Done()
			if toFrozen {
				io.Copy(countingWriter{d, &f.toFrozen}, c)
			} else {
				io.Copy(d, c)
			}
			d.(*net.TCPConn).CloseWrite()
		}()
		go func() {
			defer f.wg.Done()
			io.Copy(c, d)
			c.(*net.TCPConn).CloseWrite()
		}()
	}
}

func (f *forwarder) close() {
	f.ln.Close()
	f.mu.Lock()
	for _, c := range f.conns {
		c.Close()
	}
	f.mu.Unlock()
	f.wg.Wait()
}

type countingWriter struct {
	w io.Writer
	n *atomic.Int64
}

func (c countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n.Add(int64(n))
	return n, err
}

// summary of one path and workload over the rounds.
type summary struct {
	mbps, cpu, rss, jain []float64
}

func (b *bench) summaries(wls []workload) map[[2]string]*summary {
	m := map[[2]string]*summary{}
	for _, r := range b.results {
		k := [2]string{r.workload, r.path}
		s := m[k]
		if s == nil {
			s = &summary{}
			m[k] = s
		}
		s.mbps = append(s.mbps, r.mbps)
		s.cpu = append(s.cpu, r.cpuPerGiB)
		s.rss = append(s.rss, r.rssMiB)
		s.jain = append(s.jain, r.jain)
	}
	return m
}

// pathRatios returns, for each round that ran workload wl on both paths, path a's CPU per GiB
// divided by path b's.
func (b *bench) pathRatios(wl, a, bp string) []float64 {
	byRound := map[[2]any]result{}
	for _, r := range b.results {
		if r.workload == wl {
			byRound[[2]any{r.round, r.path}] = r
		}
	}
	var cpu []float64
	for round := 0; round < b.o.rounds; round++ {
		ra, okA := byRound[[2]any{round, a}]
		rb, okB := byRound[[2]any{round, bp}]
		if okA && okB && rb.cpuPerGiB > 0 {
			cpu = append(cpu, ra.cpuPerGiB/rb.cpuPerGiB)
		}
	}
	return cpu
}

// roundRatios returns, for each round that ran both workloads on path, the aggregate MB/s and
// the CPU per GiB of workload a divided by those of workload b.
func (b *bench) roundRatios(a, bw, path string) (mbps, cpu []float64) {
	byRound := map[[2]any]result{}
	for _, r := range b.results {
		if r.path == path {
			byRound[[2]any{r.round, r.workload}] = r
		}
	}
	for round := 0; round < b.o.rounds; round++ {
		ra, okA := byRound[[2]any{round, a}]
		rb, okB := byRound[[2]any{round, bw}]
		if okA && okB {
			mbps = append(mbps, ra.mbps/rb.mbps)
			cpu = append(cpu, ra.cpuPerGiB/rb.cpuPerGiB)
		}
	}
	return mbps, cpu
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func rangeOf(xs []float64, format string) string {
	return fmt.Sprintf(format+"–"+format, slices.Min(xs), slices.Max(xs))
}

const (
	sectionBegin = "<!-- bench-e2e:begin (written by make bench-e2e) -->"
	sectionEnd   = "<!-- bench-e2e:end -->"
)

func (b *bench) report(wls []workload) string {
	var w strings.Builder
	fmt.Fprintln(&w, sectionBegin)
	fmt.Fprintln(&w, "### Results")
	fmt.Fprintln(&w)
	fmt.Fprintf(&w, "Run of %s to %s UTC: %d rounds, paths interleaved within each round (the first path\n",
		b.started.UTC().Format("2006-01-02 15:04"), b.finished.UTC().Format("15:04"), b.o.rounds)
	fmt.Fprintf(&w, "rotates). Machine: %s, %d CPUs, %s memory, %s, %s. The machine was shared with\n",
		cpuModel(), runtime.NumCPU(), memTotal(), runtime.Version(), haproxyVersion(b.o.haproxy))
	fmt.Fprintln(&w, "other engineers' builds and tests, so wall-clock figures vary between rounds; CPU seconds per")
	fmt.Fprintln(&w, "GiB and ratios within a round are the robust figures. Medians over the rounds, ranges in brackets.")
	if len(b.loads) > 0 {
		fmt.Fprintf(&w, "Load average (1 minute) before the measured runs: median %.1f, %s.\n", median(b.loads), rangeOf(b.loads, "%.1f"))
	}
	fmt.Fprintln(&w)
	fmt.Fprintln(&w, "| workload | path | MB/s | proxy CPU s/GiB | proxy peak RSS MiB | Jain | MB/s ÷ HAProxy | CPU ÷ HAProxy | MB/s ÷ direct |")
	fmt.Fprintln(&w, "|---|---|---|---|---|---|---|---|---|")
	sums := b.summaries(wls)
	for _, wl := range wls {
		ha, di := sums[[2]string{wl.name, "haproxy"}], sums[[2]string{wl.name, "direct"}]
		for _, p := range b.paths {
			s := sums[[2]string{wl.name, p.name}]
			if s == nil {
				continue
			}
			cpu, rss, rHA, cHA := "—", "—", "—", "—"
			if p.name != "direct" {
				cpu = fmt.Sprintf("%.2f (%s)", median(s.cpu), rangeOf(s.cpu, "%.2f"))
				rss = fmt.Sprintf("%.0f (%s)", median(s.rss), rangeOf(s.rss, "%.0f"))
			}
			if ha != nil && p.name != "haproxy" {
				rHA = fmt.Sprintf("%.2f", median(s.mbps)/median(ha.mbps))
				if p.name != "direct" {
					cHA = fmt.Sprintf("%.2f", median(s.cpu)/median(ha.cpu))
				}
			}
			rDi := "—"
			if di != nil && p.name != "direct" {
				rDi = fmt.Sprintf("%.2f", median(s.mbps)/median(di.mbps))
			}
			fmt.Fprintf(&w, "| %s | %s | %.0f (%s) | %s | %s | %.3f | %s | %s | %s |\n", wl.name, p.name,
				median(s.mbps), rangeOf(s.mbps, "%.0f"), cpu, rss, median(s.jain), rHA, cHA, rDi)
		}
	}
	fmt.Fprintln(&w, "\nCPU per GiB ÷ HAProxy's, within each round (the figure least disturbed by the machine's load):")
	fmt.Fprintln(&w)
	for _, wl := range wls {
		for _, p := range b.paths {
			if !strings.HasPrefix(p.name, "smartproxy") {
				continue
			}
			if r := b.pathRatios(wl.name, p.name, "haproxy"); len(r) > 0 {
				parts := make([]string, len(r))
				for i, x := range r {
					parts[i] = fmt.Sprintf("%.2f", x)
				}
				fmt.Fprintf(&w, "- %s, %s: median %.2f (rounds %s)\n", wl.name, p.name, median(r), strings.Join(parts, ", "))
			}
		}
	}
	if len(wls) > 1 {
		last, prev := wls[len(wls)-1], wls[len(wls)-2]
		for _, p := range b.paths {
			if !strings.HasPrefix(p.name, "smartproxy") {
				continue
			}
			if mb, cpu := b.roundRatios(last.name, prev.name, p.name); len(mb) > 0 {
				fmt.Fprintf(&w, "\n%s, %s ÷ %s, ratios within each round (median, range): aggregate MB/s %.2f (%s);\n",
					p.name, last.name, prev.name, median(mb), rangeOf(mb, "%.2f"))
				fmt.Fprintf(&w, "CPU per GiB %.2f (%s), the same comparison by the CPU each byte costs, which the machine's load\n",
					median(cpu), rangeOf(cpu, "%.2f"))
				fmt.Fprintln(&w, "distorts far less than wall-clock rates.")
			}
		}
	}
	if b.o.svg != "" {
		fmt.Fprintf(&w, "\n![MB/s and proxy CPU seconds per GiB per path](%s)\n", filepath.Base(b.o.svg))
	}
	if len(b.hol) > 0 {
		fmt.Fprintln(&w)
		fmt.Fprintln(&w, "### Head of line: one frozen receiver")
		fmt.Fprintln(&w)
		fmt.Fprintf(&w, "Seven %.0f MiB sessions through a second SmartProxy pair, alone and then beside an eighth\n", float64(b.holSize())/mib)
		fmt.Fprintln(&w, "session whose receiver (its own `oftp2 serve`) was stopped with SIGSTOP once its file was")
		fmt.Fprintln(&w, "flowing and stayed stopped for the whole run (the client reaches both receivers through a")
		fmt.Fprintln(&w, "small forwarder in the benchmark program). RSS is the two daemons' peak resident sets together.")
		fmt.Fprintln(&w, "Odd rounds run the seven alone first, even rounds beside the frozen session first.")
		fmt.Fprintln(&w)
		fmt.Fprintln(&w, "| round | seven alone MB/s | beside the frozen one MB/s | ratio | RSS alone MiB | RSS beside MiB | Jain (beside) |")
		fmt.Fprintln(&w, "|---|---|---|---|---|---|---|")
		var ratios []float64
		for i, h := range b.hol {
			ratios = append(ratios, h.frozenMBps/h.aloneMBps)
			fmt.Fprintf(&w, "| %d | %.0f | %.0f | %.2f | %.0f | %.0f | %.3f |\n", i+1, h.aloneMBps, h.frozenMBps,
				h.frozenMBps/h.aloneMBps, h.aloneRSS, h.frozenRSS, jain(h.withFrozen))
		}
		if m := median(ratios); m < 1 {
			fmt.Fprintf(&w, "\nMedian ratio %.2f (%s): the seven lose %.1f %% beside the frozen session.\n", m, rangeOf(ratios, "%.2f"), 100*(1-m))
		} else {
			fmt.Fprintf(&w, "\nMedian ratio %.2f (%s): the seven lose nothing measurable beside the frozen session.\n", m, rangeOf(ratios, "%.2f"))
		}
	}
	fmt.Fprintln(&w, sectionEnd)
	return w.String()
}

func cpuModel() string {
	d, _ := os.ReadFile("/proc/cpuinfo")
	for _, l := range strings.Split(string(d), "\n") {
		if v, ok := strings.CutPrefix(l, "model name"); ok {
			return strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
		}
	}
	return runtime.GOARCH
}

func memTotal() string {
	d, _ := os.ReadFile("/proc/meminfo")
	for _, l := range strings.Split(string(d), "\n") {
		if v, ok := strings.CutPrefix(l, "MemTotal:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 64)
			return fmt.Sprintf("%.0f GiB", kb/(1<<20))
		}
	}
	return "?"
}

func haproxyVersion(bin string) string {
	out, err := exec.Command(bin, "-v").Output()
	if err != nil {
		return "HAProxy ?"
	}
	first, _, _ := strings.Cut(string(out), "\n")
	f := strings.Fields(first)
	if len(f) >= 3 {
		return "HAProxy " + f[2]
	}
	return first
}

// replaceSection puts report between the section markers of doc, or appends it.
func replaceSection(doc, report string) error {
	d, err := os.ReadFile(doc)
	if err != nil {
		return err
	}
	s := string(d)
	i, j := strings.Index(s, sectionBegin), strings.Index(s, sectionEnd)
	if i < 0 || j < i {
		s = strings.TrimRight(s, "\n") + "\n\n" + report
	} else {
		s = s[:i] + report + s[j+len(sectionEnd)+1:]
	}
	return os.WriteFile(doc, []byte(s), 0o644)
}
