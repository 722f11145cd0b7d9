package oftp2

import (
	"strings"
	"testing"
	"time"
)

func TestSummary(t *testing.T) {
	enc := func(c interface{ Append([]byte) ([]byte, error) }) []byte {
		t.Helper()
		b, err := c.Append(nil)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	tests := []struct {
		name   string
		buf    []byte
		want   []string
		absent []string
	}{
		{"SSID without its password", enc(&SSID{ID: "O0013000000000PARTNER", Password: "S3CRET", BufferSize: 4096, Mode: ModeBoth, Credit: 16, Restart: true}),
			[]string{"SSID len=61", `id="O0013000000000PARTNER"`, "buffer=4096", "credit=16", "restart=true", "password_set=true"}, []string{"S3CRET"}},
		{"SFID", enc(&SFID{DatasetName: "INVOICES", Stamp: Timestamp{Time: time.Date(2026, 12, 6, 10, 0, 0, 0, time.UTC), Counter: 1},
			Destination: "O0013000000000PARTNER", Originator: "O0013000000COMPANY", Format: FormatText, FileSize: 12, RestartPosition: 3}),
			[]string{"SFID len=", `dataset="INVOICES"`, "format=T", "size_kib=12", "restart=3", `dest="O0013000000000PARTNER"`}, nil},
		{"ESID", enc(&ESID{Reason: ESIDProtocolViolation, Text: "bad"}), []string{"ESID len=", "reason=02", `text="bad"`}, nil},
		{"DATA by length only", []byte{byte(CodeDATA), 0x80 | 3, 'a', 'b', 'c'}, []string{"DATA len=5"}, []string{"abc"}},
		{"invalid", []byte{byte(CodeSSID), '5'}, []string{"SSID len=2 invalid="}, nil},
		{"empty", nil, []string{"empty buffer"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Summary(tt.buf, nil)
			for _, w := range tt.want {
				if !strings.Contains(got, w) {
					t.Errorf("Summary = %q, want it to contain %q", got, w)
				}
			}
			for _, a := range tt.absent {
				if strings.Contains(got, a) {
					t.Errorf("Summary = %q shows %q", got, a)
				}
			}
		})
	}
}
