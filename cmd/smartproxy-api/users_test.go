package main

import (
	"context"
	"regexp"
	"strings"
	"testing"

	"smartproxy/backend/store"
)

var adminPasswordRE = regexp.MustCompile(`password \(shown once\): ([A-Z2-7]{26})\n`)

func TestUserCommands(t *testing.T) {
	dir, _ := initDir(t)
	st := openStore(t, dir)
	ctx := context.Background()

	out := mustCLI(t, dir, "user", "add", "alice")
	m := adminPasswordRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("user add without a password file printed no generated password:\n%s", out)
	}
	if _, ok, err := st.CheckAdminLogin(ctx, "alice", m[1], "192.0.2.1"); !ok || err != nil {
		t.Errorf("the printed password does not log in: %v %v", ok, err)
	}
	pwFile := writeFile(t, dir, "pw", []byte("bob's long pass phrase\nignored line\n"))
	if out := mustCLI(t, dir, "user", "add", "bob", "--password-file", pwFile); strings.Contains(out, "shown once") {
		t.Errorf("user add --password-file printed a password:\n%s", out)
	}
	if _, ok, _ := st.CheckAdminLogin(ctx, "bob", "bob's long pass phrase", "192.0.2.1"); !ok {
		t.Error("bob's password from the file does not log in")
	}
	short := writeFile(t, dir, "short", []byte("short\n"))
	if msg := failCLI(t, dir, "user", "add", "carol", "--password-file", short); !strings.Contains(msg, "too short") || strings.Contains(msg, "short\n") {
		t.Errorf("user add with a short password: %q", msg)
	}
	if msg := failCLI(t, dir, "user", "add", "alice"); !strings.Contains(msg, "already exists") {
		t.Errorf("user add twice: %q", msg)
	}
	if out := mustCLI(t, dir, "user", "list"); !strings.Contains(out, "alice") || !strings.Contains(out, "bob") || strings.Contains(out, "argon2") {
		t.Errorf("user list:\n%s", out)
	}

	out = mustCLI(t, dir, "user", "passwd", "alice")
	m2 := adminPasswordRE.FindStringSubmatch(out)
	if m2 == nil || m2[1] == m[1] {
		t.Fatalf("user passwd printed no new password:\n%s", out)
	}
	if _, ok, _ := st.CheckAdminLogin(ctx, "alice", m[1], "192.0.2.2"); ok {
		t.Error("the old password still logs in after user passwd")
	}
	mustCLI(t, dir, "user", "remove", "bob")
	if msg := failCLI(t, dir, "user", "remove", "bob"); !strings.Contains(msg, "not found") {
		t.Errorf("user remove twice: %q", msg)
	}

	// Every change above is in the audit log, as the CLI's, without the password file's path.
	list, err := st.AuditLog(ctx, store.AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for i := len(list) - 1; i >= 0; i-- {
		e := list[i]
		if !strings.HasPrefix(e.Actor, "cli:") || e.RemoteAddr != "" || strings.Contains(e.Target, pwFile) {
			t.Errorf("audit entry %+v", e)
		}
		got = append(got, e.Action+" "+strings.Fields(e.Target)[0])
	}
	want := "user add alice,user add bob,user passwd alice,user remove bob"
	if strings.Join(got, ",") != want {
		t.Errorf("audit log = %q, want %q", got, want)
	}
}
