package store

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestAdminUsersAndSessions(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	const pw = "correct horse battery"
	if err := s.AddAdminUser(ctx, "alice", "short"); err == nil {
		t.Error("AddAdminUser with a 5-character password = nil, want a refusal")
	}
	if err := s.AddAdminUser(ctx, "<b>", pw); err == nil {
		t.Error("AddAdminUser(\"<b>\") = nil, want a refusal")
	}
	if err := s.AddAdminUser(ctx, "alice", pw); err != nil {
		t.Fatalf("AddAdminUser = %v", err)
	}
	if err := s.AddAdminUser(ctx, "alice", pw); !errors.Is(err, ErrConflict) {
		t.Errorf("AddAdminUser twice = %v, want ErrConflict", err)
	}
	var stored string
	if err := s.r.QueryRow(`SELECT password FROM admin_users WHERE name = 'alice'`).Scan(&stored); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(stored, "$argon2id$v=19$m=19456,t=2,p=1$") || strings.Contains(stored, pw) {
		t.Errorf("stored password = %q, want an argon2id hash", stored)
	}

	for _, tc := range []struct{ user, pw string }{{"alice", "wrong password!"}, {"nobody", pw}, {"alice", ""}} {
		if _, ok, err := s.CheckAdminLogin(ctx, tc.user, tc.pw, "192.0.2.1"); ok || err != nil {
			t.Errorf("CheckAdminLogin(%q, %q) = %v, %v; want false, nil", tc.user, tc.pw, ok, err)
		}
	}
	byUser, byAddr, err := s.LoginFailures(ctx, "alice", "192.0.2.1", time.Now().Add(-time.Minute))
	if err != nil || byUser != 2 || byAddr != 3 {
		t.Errorf("LoginFailures = %d, %d, %v; want 2 by user, 3 by address", byUser, byAddr, err)
	}
	u, ok, err := s.CheckAdminLogin(ctx, "alice", pw, "192.0.2.1")
	if !ok || err != nil || u.Name != "alice" {
		t.Fatalf("CheckAdminLogin(right password) = %+v, %v, %v", u, ok, err)
	}
	secret, err := s.CreateAdminSession(ctx, u.ID, "192.0.2.1")
	if err != nil {
		t.Fatal(err)
	}
	if byUser, byAddr, _ := s.LoginFailures(ctx, "alice", "192.0.2.1", time.Time{}); byUser+byAddr != 0 {
		t.Errorf("failures after a login = %d, %d; want them cleared", byUser, byAddr)
	}
	sess, err := s.AdminSessionBySecret(ctx, secret)
	if err != nil || sess.User.Name != "alice" || sess.RemoteAddr != "192.0.2.1" {
		t.Fatalf("AdminSessionBySecret = %+v, %v", sess, err)
	}
	if _, err := s.AdminSessionBySecret(ctx, strings.Repeat("A", 43)); !errors.Is(err, ErrNotFound) {
		t.Errorf("AdminSessionBySecret(unknown) = %v, want ErrNotFound", err)
	}
	// A new password ends every session of the user.
	if err := s.SetAdminPassword(ctx, "alice", "another long password"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AdminSessionBySecret(ctx, secret); !errors.Is(err, ErrNotFound) {
		t.Errorf("session after a password change = %v, want ErrNotFound", err)
	}
	if _, ok, _ := s.CheckAdminLogin(ctx, "alice", pw, "192.0.2.2"); ok {
		t.Error("the old password still logs in")
	}
	if err := s.RemoveAdminUser(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	if err := s.RemoveAdminUser(ctx, "alice"); !errors.Is(err, ErrNotFound) {
		t.Errorf("RemoveAdminUser twice = %v, want ErrNotFound", err)
	}
}

func TestAuditIsPartOfTheChange(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	actx := WithAudit(ctx, Audit{Actor: "alice", RemoteAddr: "192.0.2.9", Action: "partner add", Target: "O0013PARTNER"})
	if err := s.AddPartner(actx, Partner{OdetteID: "O0013PARTNER", Enabled: true}); err != nil {
		t.Fatal(err)
	}
	// A refused change records nothing.
	if err := s.AddPartner(actx, Partner{OdetteID: "O0013PARTNER"}); !errors.Is(err, ErrConflict) {
		t.Fatalf("AddPartner twice = %v", err)
	}
	// A change without audit context (an API request of a proxy client) records nothing.
	if err := s.AddPartner(ctx, Partner{OdetteID: "O0013OTHER"}); err != nil {
		t.Fatal(err)
	}
	list, err := s.AuditLog(ctx, AuditFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 1 || list[0].Actor != "alice" || list[0].RemoteAddr != "192.0.2.9" || list[0].Action != "partner add" ||
		list[0].Target != "O0013PARTNER" || time.Since(list[0].Time) > time.Minute {
		t.Errorf("AuditLog = %+v, want the one successful audited change", list)
	}
	if list, _ := s.AuditLog(ctx, AuditFilter{Query: "100%_"}); len(list) != 0 {
		t.Errorf("AuditLog(query with wildcards) = %+v, want none", list)
	}
}

func TestEventPageAndPartnerSearch(t *testing.T) {
	ctx := context.Background()
	s := open(t)
	if _, _, err := s.CreateToken(ctx, "proxy-1"); err != nil {
		t.Fatal(err)
	}
	base := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	sev := []string{"info", "warning", "critical"}
	var evs []Event
	for i := range 30 {
		evs = append(evs, Event{ID: fmt.Sprintf("e%02d", i), Time: base.Add(time.Duration(i%10) * time.Minute), Severity: sev[i%3],
			Name: "partner_unknown", OdetteID: fmt.Sprintf("O%d", i%2)})
	}
	if _, _, err := s.AddEvents(ctx, 1, evs); err != nil {
		t.Fatal(err)
	}
	// Page through everything, newest first, 7 at a time.
	var seen []Event
	f := EventPageFilter{Limit: 7}
	for range 10 {
		page, err := s.EventPage(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		seen = append(seen, page...)
		if len(page) < 7 {
			break
		}
		last := page[len(page)-1]
		f.BeforeTime, f.BeforeSeq = last.Time, last.Seq
	}
	if len(seen) != 30 {
		t.Fatalf("paging saw %d events, want 30", len(seen))
	}
	for i := 1; i < len(seen); i++ {
		a, b := seen[i-1], seen[i]
		if a.Time.Before(b.Time) || (a.Time.Equal(b.Time) && a.Seq < b.Seq) {
			t.Fatalf("events %d and %d out of order: %v/%d before %v/%d", i-1, i, a.Time, a.Seq, b.Time, b.Seq)
		}
	}
	page, err := s.EventPage(ctx, EventPageFilter{Severity: "warning", OdetteID: "O1", Client: "proxy-1",
		From: base.Add(2 * time.Minute), Until: base.Add(8 * time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	want := 0
	for _, e := range evs {
		m := int(e.Time.Sub(base) / time.Minute)
		if e.Severity != "info" && e.OdetteID == "O1" && m >= 2 && m < 8 {
			want++
		}
	}
	if len(page) != want || want == 0 {
		t.Errorf("filtered page has %d events, want %d", len(page), want)
	}
	for _, e := range page {
		if e.Severity == "info" || e.OdetteID != "O1" || e.Client != "proxy-1" {
			t.Errorf("filtered page holds %+v", e)
		}
	}
	// A severity filter alone merges one index walk per severity.
	want = 0
	for _, e := range evs {
		if e.Severity != "info" {
			want++
		}
	}
	var sevSeen []Event
	f = EventPageFilter{Severity: "warning", Limit: 4}
	for range 20 {
		page, err := s.EventPage(ctx, f)
		if err != nil {
			t.Fatal(err)
		}
		sevSeen = append(sevSeen, page...)
		if len(page) < 4 {
			break
		}
		last := page[len(page)-1]
		f.BeforeTime, f.BeforeSeq = last.Time, last.Seq
	}
	if len(sevSeen) != want {
		t.Errorf("paging warning or worse saw %d events, want %d", len(sevSeen), want)
	}
	for i, e := range sevSeen {
		if e.Severity == "info" || (i > 0 && (sevSeen[i-1].Time.Before(e.Time) || (sevSeen[i-1].Time.Equal(e.Time) && sevSeen[i-1].Seq < e.Seq))) {
			t.Fatalf("warning-or-worse event %d out of order or of severity %s", i, e.Severity)
		}
	}
	if _, err := s.EventPage(ctx, EventPageFilter{Severity: "loud"}); err == nil {
		t.Error("EventPage(severity loud) = nil error")
	}
	if e, err := s.EventBySeq(ctx, seen[0].Seq); err != nil || e.ID != seen[0].ID {
		t.Errorf("EventBySeq = %+v, %v", e, err)
	}

	for i := range 12 {
		if err := s.AddPartner(ctx, Partner{OdetteID: fmt.Sprintf("O0013P%02d", i), Name: fmt.Sprintf("Partner %d", i%3)}); err != nil {
			t.Fatal(err)
		}
	}
	list, total, err := s.SearchPartners(ctx, PartnerFilter{Query: "partner 1", Offset: 2, Limit: 2})
	if err != nil || total != 4 || len(list) != 2 || list[0].OdetteID != "O0013P07" {
		t.Errorf("SearchPartners = %+v, %d, %v; want 2 of 4 from O0013P07", list, total, err)
	}
}
