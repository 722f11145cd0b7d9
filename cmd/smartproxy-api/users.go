package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"os/user"
	"strings"

	"smartproxy/backend/store"
)

// --- web admin users ---

// newAdminPassword returns a random password: 26 base32 characters, 130
// bits.
func newAdminPassword() string { return rand.Text() }

// userPasswordCommand is "user add" or "user passwd": a user name and a
// password from --password-file, or a random one printed once; set stores
// it.
func userPasswordCommand(name string, set func(ctx context.Context, st *store.Store, user, pw string) error, done string) command {
	return func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
		fs, c := newFlags(name, name+" NAME [--password-file FILE]", stderr)
		file := fs.String("password-file", "", "file whose first line is the password (default: a random password is generated and printed once)")
		pos, err := parseExact(fs, args, 1, "a user name")
		if err != nil {
			return err
		}
		pw, generated := newAdminPassword(), true
		if *file != "" {
			if pw, err = readPasswordFile(*file); err != nil {
				return err
			}
			generated = false
		}
		return c.withStore(ctx, func(st *store.Store) error {
			if err := set(ctx, st, pos[0], pw); err != nil {
				return err
			}
			fmt.Fprintf(stdout, done+"\n", pos[0])
			if generated {
				fmt.Fprintf(stdout, "password (shown once): %s\n", pw)
			}
			return nil
		})
	}
}

var (
	runUserAdd = userPasswordCommand("user add", func(ctx context.Context, st *store.Store, user, pw string) error {
		return st.AddAdminUser(ctx, user, pw)
	}, "web admin user %s added")
	runUserPasswd = userPasswordCommand("user passwd", func(ctx context.Context, st *store.Store, user, pw string) error {
		return st.SetAdminPassword(ctx, user, pw)
	}, "password of %s changed; its sessions are ended")
)

func runUserRemove(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, c := newFlags("user remove", "user remove NAME", stderr)
	pos, err := parseExact(fs, args, 1, "a user name")
	if err != nil {
		return err
	}
	return c.withStore(ctx, func(st *store.Store) error {
		if err := st.RemoveAdminUser(ctx, pos[0]); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "web admin user %s removed\n", pos[0])
		return nil
	})
}

func runUserList(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, c := newFlags("user list", "user list", stderr)
	if _, err := parseExact(fs, args, 0, ""); err != nil {
		return err
	}
	return c.withStore(ctx, func(st *store.Store) error {
		list, err := st.AdminUsers(ctx)
		if err != nil {
			return err
		}
		w := table(stdout)
		fmt.Fprintln(w, "NAME\tCREATED\tPASSWORD CHANGED")
		for _, u := range list {
			fmt.Fprintf(w, "%s\t%s\t%s\n", u.Name, fmtTime(u.CreatedAt), fmtTime(u.PasswordChangedAt))
		}
		return w.Flush()
	})
}

// cliAudit returns ctx recording the changes of an admin command in the
// audit log: the operating-system user as actor, the command as action and
// its arguments as target, with the values of password flags left out.
func cliAudit(ctx context.Context, action string, args []string) context.Context {
	who := "unknown"
	if u, err := user.Current(); err == nil {
		who = u.Username
	}
	var target []string
	hide := false
	for _, a := range args {
		switch {
		case hide:
			a, hide = "…", false
		case strings.HasPrefix(strings.TrimLeft(a, "-"), "password") && strings.HasPrefix(a, "-"):
			if k, _, ok := strings.Cut(a, "="); ok {
				a = k + "=…"
			} else {
				hide = true
			}
		}
		target = append(target, a)
	}
	return store.WithAudit(ctx, store.Audit{Actor: "cli:" + who, Action: action, Target: strings.Join(target, " ")})
}
