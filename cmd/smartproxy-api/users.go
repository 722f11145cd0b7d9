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

// adminPassword returns the password of --password-file, or a new random
// one when no file is given (generated true).
func adminPassword(file string) (pw string, generated bool, err error) {
	if file == "" {
		return newAdminPassword(), true, nil
	}
	b, err := readFile("--password-file", file, 4096)
	if err != nil {
		return "", false, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	return strings.TrimSuffix(line, "\r"), false, nil
}

func runUserAdd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, c := newFlags("user add", "user add NAME [--password-file FILE]", stderr)
	file := fs.String("password-file", "", "file whose first line is the password (default: a random password is generated and printed once)")
	pos, err := parseExact(fs, args, 1, "a user name")
	if err != nil {
		return err
	}
	pw, generated, err := adminPassword(*file)
	if err != nil {
		return err
	}
	return c.withStore(ctx, func(st *store.Store) error {
		if err := st.AddAdminUser(ctx, pos[0], pw); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "web admin user %s added\n", pos[0])
		if generated {
			fmt.Fprintf(stdout, "password (shown once): %s\n", pw)
		}
		return nil
	})
}

func runUserPasswd(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs, c := newFlags("user passwd", "user passwd NAME [--password-file FILE]", stderr)
	file := fs.String("password-file", "", "file whose first line is the new password (default: a random password is generated and printed once)")
	pos, err := parseExact(fs, args, 1, "a user name")
	if err != nil {
		return err
	}
	pw, generated, err := adminPassword(*file)
	if err != nil {
		return err
	}
	return c.withStore(ctx, func(st *store.Store) error {
		if err := st.SetAdminPassword(ctx, pos[0], pw); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "password of %s changed; its sessions are ended\n", pos[0])
		if generated {
			fmt.Fprintf(stdout, "password (shown once): %s\n", pw)
		}
		return nil
	})
}

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
