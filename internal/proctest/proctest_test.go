package proctest

import (
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestProc(t *testing.T) {
	p := Start(t, "sh", "/bin/sh", "-c", `echo out; echo "ready 1" >&2; echo "ready 2" >&2; exec sleep 30`)
	p.WaitLog(t, regexp.MustCompile(`ready \d`), 2)
	if got := p.Stdout.String(); got != "out\n" {
		t.Errorf("Stdout = %q, want %q", got, "out\n")
	}
	p.Stop(t)
	select {
	case <-p.Done():
	default:
		t.Fatal("Done not closed after Stop")
	}
	if p.Err() == nil || !strings.Contains(p.Err().Error(), "terminated") {
		t.Errorf("Err() after SIGTERM = %v, want a terminated exit", p.Err())
	}
	q := Start(t, "true", "/bin/true")
	if err := q.Wait(t, 10*time.Second); err != nil {
		t.Errorf("Wait(true) = %v, want nil", err)
	}
}

func TestTail(t *testing.T) {
	if got := Tail("a\nb\nc\n", 2); got != "b\nc" {
		t.Errorf("Tail = %q, want %q", got, "b\nc")
	}
}
