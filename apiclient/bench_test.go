package apiclient_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"testing"

	"smartproxy/api/apiv1"
)

// BenchmarkConfig measures one GET /v1/config of a document with 100 partners over TLS on
// loopback, decoding included, on a kept-alive connection.
func BenchmarkConfig(b *testing.B) {
	f := newFakeBackend(b)
	f.setConfig(func(d *apiv1.ConfigDocument) {
		for i := range 100 {
			d.Partners = append(d.Partners, apiv1.Partner{OdetteID: fmt.Sprintf("O00130000000%09d", i), Name: "Partner", Enabled: true,
				AllowedNetworks: []string{"192.0.2.0/24"}, Direction: apiv1.DirectionBoth, Charset: apiv1.CharsetStrict})
		}
	})
	srv := f.start(false)
	c := newClient(b, srv, nil)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, _, _, err := c.Config(ctx, "", 0); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCRLStream measures streaming an 8 MiB CRL into a writer; B/op shows that the body is
// not held in memory.
func BenchmarkCRLStream(b *testing.B) {
	f := newFakeBackend(b)
	body := bytes.Repeat([]byte{0x30, 0x82, 0x01, 0x00}, 2<<20)
	f.crls["big"] = body
	srv := f.start(false)
	c := newClient(b, srv, nil)
	ctx := context.Background()
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := c.CRL(ctx, "big", "", io.Discard); err != nil {
			b.Fatal(err)
		}
	}
}
