package oftp2

import (
	"fmt"
	"strconv"
	"strings"
)

// Summary describes one exchange buffer in a line for a trace log: the command, its length and
// its key fields as key=value pairs, e.g.
//
//	SFID len=94 dataset="INVOICES" format=T size_kib=12 restart=0 dest=O0013000000000PARTNER orig=O0013000000COMPANY
//
// It never shows a password (SSIDPSWD), AUCH challenges or AURP responses, nor any file
// content: DATA is described by its length alone. A buffer that does not parse is described by
// its code and the parse error. opts are the parse options of the session (nil: strict).
func Summary(buf []byte, opts *ParseOptions) string {
	if len(buf) == 0 {
		return "empty buffer"
	}
	code := CommandCode(buf[0])
	var b strings.Builder
	fmt.Fprintf(&b, "%s len=%d", code, len(buf))
	if code == CodeDATA {
		return b.String()
	}
	cmd, err := Parse(buf, opts)
	if err != nil {
		fmt.Fprintf(&b, " invalid=%q", err.Error())
		return b.String()
	}
	kv := func(k string, v any) {
		b.WriteByte(' ')
		b.WriteString(k)
		b.WriteByte('=')
		switch v := v.(type) {
		case string:
			b.WriteString(strconv.Quote(strings.TrimRight(v, " ")))
		default:
			fmt.Fprint(&b, v)
		}
	}
	switch c := cmd.(type) {
	case *SSRM:
	case *SSID:
		kv("id", c.ID)
		kv("level", c.Level)
		kv("mode", c.Mode)
		kv("buffer", c.BufferSize)
		kv("credit", c.Credit)
		kv("compression", c.Compression)
		kv("restart", c.Restart)
		kv("secure_auth", c.SecureAuth)
		kv("password_set", c.Password != "")
	case *SFID:
		kv("dataset", c.DatasetName)
		kv("format", c.Format)
		kv("size_kib", c.FileSize)
		kv("restart", c.RestartPosition)
		kv("dest", c.Destination)
		kv("orig", c.Originator)
		kv("security", c.Security)
		kv("signed_eerp", c.SignedEERP)
	case *SFPA:
		kv("answer_count", c.AnswerCount)
	case *SFNA:
		kv("reason", int(c.Reason))
		kv("retry", c.Retry)
		kv("text", c.Text)
	case *EFID:
		kv("records", c.RecordCount)
		kv("units", c.UnitCount)
	case *EFPA:
		kv("change_direction", c.ChangeDirection)
	case *EFNA:
		kv("reason", int(c.Reason))
		kv("text", c.Text)
	case *ESID:
		fmt.Fprintf(&b, " reason=%02d", int(c.Reason))
		kv("text", c.Text)
	case *EERP:
		kv("dataset", c.DatasetName)
		kv("dest", c.Destination)
		kv("orig", c.Originator)
		kv("signed", len(c.Signature) > 0)
	case *NERP:
		kv("dataset", c.DatasetName)
		kv("dest", c.Destination)
		kv("orig", c.Originator)
		kv("reason", int(c.Reason))
	case *AUCH:
		kv("challenge_len", len(c.Challenge))
	}
	return b.String()
}
