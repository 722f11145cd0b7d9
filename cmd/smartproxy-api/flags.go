package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"smartproxy/backend/store"
	"smartproxy/internal/buildinfo"
)

// command runs one (sub)command with its arguments.
type command func(ctx context.Context, args []string, stdout, stderr io.Writer) error

// group is a command with subcommands, or a single command.
type group struct {
	subs   map[string]command
	single command
}

func (g group) names() string {
	var n []string
	for k := range g.subs {
		n = append(n, k)
	}
	sort.Strings(n)
	return strings.Join(n, ", ")
}

// groups are the admin commands that work on the database.
var groups = map[string]group{
	"token":   {subs: map[string]command{"create": runTokenCreate, "list": runTokenList, "revoke": runTokenRevoke}},
	"partner": {subs: map[string]command{"add": runPartnerAdd, "list": runPartnerList, "show": runPartnerShow, "enable": runPartnerEnable, "disable": runPartnerDisable, "remove": runPartnerRemove, "set": runPartnerSet}},
	"ca":      {subs: map[string]command{"add": runCAAdd, "list": runCAList, "remove": runCARemove}},
	"crl-url": {subs: map[string]command{"add": runCRLURLAdd, "list": runCRLURLList, "remove": runCRLURLRemove}},
	"crl":     {subs: map[string]command{"import": runCRLImport, "list": runCRLList, "remove": runCRLRemove}},
	"ignore":  {subs: map[string]command{"add": runIgnoreAdd, "list": runIgnoreList, "remove": runIgnoreRemove}},
	"config":  {subs: map[string]command{"set": runConfigSet, "unset": runConfigUnset, "show": runConfigShow, "keys": runConfigKeys}},
	"route":   {subs: map[string]command{"add": runRouteAdd, "list": runRouteList, "remove": runRouteRemove}},
	"license": {subs: map[string]command{"import": runLicenseImport, "show": runLicenseShow}},
	"events":  {subs: map[string]command{"list": runEventsList}},
	"user":    {subs: map[string]command{"add": runUserAdd, "passwd": runUserPasswd, "remove": runUserRemove, "list": runUserList}},
	"status":  {single: runStatus},
	"export":  {single: runExport},
}

func runVersion(stdout io.Writer) error {
	fmt.Fprintln(stdout, "smartproxy-api", buildinfo.String(), "schema", store.SchemaVersion())
	return nil
}

// defaultDataDir is $STATE_DIRECTORY (set by systemd's StateDirectory=) or
// /var/lib/smartproxy-api.
func defaultDataDir() string {
	if d := os.Getenv("STATE_DIRECTORY"); d != "" {
		// systemd may list several directories separated by colons.
		first, _, _ := strings.Cut(d, ":")
		return first
	}
	return "/var/lib/smartproxy-api"
}

// DBFileName is the database file's name in the data directory.
const DBFileName = "smartproxy-api.db"

// common are the flags every command has.
type common struct {
	dataDir string
	db      string
}

// dbPath is --db, or the database file in --data-dir.
func (c *common) dbPath() string {
	if c.db != "" {
		return c.db
	}
	return filepath.Join(c.dataDir, DBFileName)
}

// newFlags returns a flag set for a command with the common flags. synopsis
// is printed by -h above the flags.
func newFlags(name, synopsis string, stderr io.Writer) (*flag.FlagSet, *common) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	c := &common{}
	fs.StringVar(&c.dataDir, "data-dir", defaultDataDir(), "directory of the database and the generated TLS certificate")
	fs.StringVar(&c.db, "db", "", "database file (default DATA-DIR/"+DBFileName+")")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: smartproxy-api %s\n", synopsis)
		fs.PrintDefaults()
	}
	return fs, c
}

// parseFlags parses args with fs, allowing flags after positional
// arguments, and returns the positional arguments.
func parseFlags(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, &usageError{fs.Name() + ": " + err.Error()}
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// parseExact parses flags and requires exactly n positional arguments.
func parseExact(fs *flag.FlagSet, args []string, n int, what string) ([]string, error) {
	pos, err := parseFlags(fs, args)
	if err != nil {
		return nil, err
	}
	if len(pos) != n {
		if n == 0 {
			return nil, usagef("%s: unexpected argument %q", fs.Name(), pos[0])
		}
		return nil, usagef("%s: want %s", fs.Name(), what)
	}
	return pos, nil
}

// openStore opens the existing database of c.
func (c *common) openStore(ctx context.Context) (*store.Store, error) {
	return store.Open(ctx, c.dbPath(), store.Options{})
}

// withStore opens the database, runs fn and closes it.
func (c *common) withStore(ctx context.Context, fn func(st *store.Store) error) error {
	st, err := c.openStore(ctx)
	if err != nil {
		return err
	}
	defer st.Close()
	return fn(st)
}

// listFlag is a repeatable string flag.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(s string) error {
	*l = append(*l, s)
	return nil
}

// timeFlag parses a time given as RFC 3339 ("2026-03-01T00:00:00Z") or as a
// duration relative to now ("2h" in the future, "-30m" in the past).
func parseTime(flagName, s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(s); err == nil {
		return now.Add(d), nil
	}
	return time.Time{}, usagef("--%s: %q is neither an RFC 3339 time (2026-03-01T00:00:00Z) nor a duration from now (2h, -30m)", flagName, s)
}

// setFlags returns the names of the flags given on the command line.
func setFlags(fs *flag.FlagSet) map[string]bool {
	m := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { m[f.Name] = true })
	return m
}

// readFile reads a file given on the command line, with a clear error.
func readFile(what, path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: %s is not a regular file", what, path)
	}
	if st.Size() > max {
		return nil, fmt.Errorf("%s: %s has %d bytes, more than the %d allowed", what, path, st.Size(), max)
	}
	return io.ReadAll(io.LimitReader(f, max))
}
