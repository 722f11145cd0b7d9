package endpoint

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"

	"github.com/sirupsen/logrus"

	"smartproxy/oftp2"
)

// Endpoint is an OFTP2 peer. It runs sessions over connections the caller
// establishes (Run); several sessions may run concurrently and share the
// receive directory. Its configuration is immutable after New.
type Endpoint struct {
	cfg   Config // immutable
	inbox *inbox // nil when the endpoint cannot receive; safe for concurrent use
}

// New checks cfg and returns an Endpoint. It creates the receive directory
// and its state directory when cfg.ReceiveDir is set.
func New(cfg Config) (*Endpoint, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	e := &Endpoint{cfg: cfg}
	if cfg.ReceiveDir != "" {
		if e.inbox, err = openInbox(cfg.ReceiveDir, cfg.CheckpointInterval, cfg.Now); err != nil {
			return nil, err
		}
	}
	return e, nil
}

// DeliveryStatus is the state of a file the endpoint offered to a partner.
type DeliveryStatus uint8

const (
	// StatusNotSent: the file was not offered, or its transfer did not end
	// with EFPA (the session ended first, or the file could not be read).
	StatusNotSent DeliveryStatus = iota
	// StatusRefused: the partner refused the file with SFNA or EFNA.
	StatusRefused
	// StatusStored: the partner stored the file (EFPA); its end-to-end
	// response had not arrived when the session ended.
	StatusStored
	// StatusDelivered: the final destination confirmed the file with EERP.
	StatusDelivered
	// StatusNegative: the final destination answered with NERP.
	StatusNegative
)

// String returns the status in words.
func (s DeliveryStatus) String() string {
	switch s {
	case StatusNotSent:
		return "not sent"
	case StatusRefused:
		return "refused"
	case StatusStored:
		return "stored, end-to-end response outstanding"
	case StatusDelivered:
		return "delivered"
	case StatusNegative:
		return "negative end response"
	}
	return fmt.Sprintf("DeliveryStatus(%d)", uint8(s))
}

// Delivery is the outcome of one file offered in a session.
type Delivery struct {
	// File is the file with its defaults filled in (dataset name, stamp,
	// originator, destination).
	File OutgoingFile
	// Status is how far the file got.
	Status DeliveryStatus
	// Err is nil for StatusDelivered and says why otherwise: a
	// *FileRefusedError, *FileRejectedError or *NERPError, ErrNotConfirmed,
	// ErrNotSent, or a local error reading the file.
	Err error
	// RestartPosition is the position the transfer resumed at (SFPAACNT):
	// records for F and V, 1K blocks for U and T; zero for a full transfer.
	RestartPosition int64
	// Records and Units are the EFID counts sent.
	Records, Units int64
}

// Response is an end-to-end response (EERP or NERP) received for a file
// that was not sent in the same session.
type Response struct {
	// DatasetName, Stamp, Destination (the file's originator) and
	// Originator (the final recipient) identify the file.
	DatasetName string
	Stamp       oftp2.Timestamp
	Destination string
	Originator  string
	// Negative is nil for an EERP and the NERP's content for a NERP.
	Negative *NERPError
}

// Result is what one session did.
type Result struct {
	// Partner is the partner's Odette ID from its SSID; empty when the
	// session ended before.
	Partner string
	// Sent has one entry per file offered in the session, in order.
	Sent []Delivery
	// Received lists the files received and stored.
	Received []ReceivedFile
	// Responses lists end-to-end responses for files of earlier sessions.
	Responses []Response
}

// Err returns nil when every file of r.Sent was delivered (EERP), and
// otherwise an error that names each file that was not.
func (r *Result) Err() error {
	if r == nil {
		return nil
	}
	var errs []error
	for _, d := range r.Sent {
		if d.Status != StatusDelivered {
			err := d.Err
			if err == nil {
				err = errors.New(d.Status.String())
			}
			errs = append(errs, fmt.Errorf("%s (%s): %w", d.File.Path, d.File.DatasetName, err))
		}
	}
	return errors.Join(errs...)
}

// Run runs one OFTP2 session over conn in the configured role and returns
// when it has ended; conn is closed before Run returns. files are sent to the
// partner (after any files Config.Outbox returns); Run prepares them before
// the session starts and returns an error without touching conn's protocol
// when one of them cannot be sent as described.
//
// The returned error is nil when the session ended with a normal ESID, a
// *SessionError when either side ended it with another reason (timeouts
// are ESID 09; a cancelled ctx makes the endpoint send ESID 05), and an
// error wrapping ErrConnectionLost when the connection broke. The Result is
// valid in every case; files not delivered have their reason in
// Delivery.Err (see Result.Err).
func (e *Endpoint) Run(ctx context.Context, conn net.Conn, files ...OutgoingFile) (*Result, error) {
	s := &session{
		e:    e,
		cfg:  &e.cfg,
		ctx:  ctx,
		conn: conn,
		rd:   oftp2.NewReader(conn, oftp2.MaxExchangeBuffer),
		wr:   oftp2.NewWriter(conn),
		opts: oftp2.ParseOptions{Charset: e.cfg.Charset},
		res:  &Result{},

		interrupted: make(chan struct{}),
	}
	if !e.cfg.Lenient {
		s.v = oftp2.NewValidator(oftp2.ValidatorConfig{Parse: s.opts})
		s.own, s.peer = oftp2.Initiator, oftp2.Responder
		if e.cfg.Role == Responder {
			s.own, s.peer = oftp2.Responder, oftp2.Initiator
		}
	}
	s.log = e.cfg.Logger.WithFields(logrus.Fields{"role": e.cfg.Role.String(), "remote_addr": remoteAddr(conn)})
	if len(files) > 0 && e.cfg.Mode == oftp2.ModeReceiver {
		conn.Close()
		return s.res, errors.New("endpoint: files to send, but the endpoint is receiver-only")
	}
	for _, f := range files {
		p, err := prepare(f, e.cfg.ID, e.cfg.PartnerID)
		if err != nil {
			conn.Close()
			return s.res, err
		}
		s.queue = append(s.queue, s.addDelivery(p))
	}
	stop := context.AfterFunc(ctx, s.interrupt)
	err := s.run()
	if !stop() {
		<-s.interrupted
	}
	s.finish(err)
	return s.res, err
}

func remoteAddr(c net.Conn) string {
	if a := c.RemoteAddr(); a != nil {
		return a.String()
	}
	return ""
}

// Serve accepts connections on ln and runs a session in the configured role
// (normally Responder) on each, until ctx is cancelled or ln fails. With a
// TLS listener the handshake runs within the session's first write, under
// the inactivity timer. done, if not nil, is called with each session's
// outcome from that session's goroutine. Serve closes ln and returns only
// after every session it started has ended: nil after ctx was cancelled,
// the accept error otherwise.
func (e *Endpoint) Serve(ctx context.Context, ln net.Listener, done func(*Result, error)) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer ln.Close()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("endpoint: accept: %w", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := e.Run(ctx, c)
			if done != nil {
				done(res, err)
			}
		}()
	}
}
