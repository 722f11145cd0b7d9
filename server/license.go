package server

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io/fs"
	"smartproxy/internal/event"
	"time"

	"github.com/sirupsen/logrus"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	tunnelv1 "smartproxy/gen/smartproxy/tunnel/v1"
	"smartproxy/internal/license"
)

// licenseState is the installed license and its load outcome. It is immutable; the server
// swaps whole states.
type licenseState struct {
	lic     *license.License // nil when none could be loaded
	loadErr error            // why no license is loaded; nil when lic is set
}

// status summarises the state for proxyID at now.
func (ls *licenseState) status(proxyID string, now time.Time) license.Status {
	return license.StatusOf(ls.lic, ls.loadErr, proxyID, now)
}

// check returns nil when the license permits partner sessions at now.
func (ls *licenseState) check(proxyID string, now time.Time) error {
	if ls.lic == nil {
		return ls.loadErr
	}
	return ls.lic.Check(proxyID, now)
}

// loadLicense reads the license file at path. A missing file, a file that does not verify and a
// license for another host or time all leave the server running without a valid license.
func loadLicense(path string, keys map[string]ed25519.PublicKey) *licenseState {
	if path == "" {
		return &licenseState{loadErr: errors.New("no license file configured")}
	}
	lic, err := license.Load(path, keys)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			err = fmt.Errorf("no license file at %s", path)
		}
		return &licenseState{loadErr: err}
	}
	return &licenseState{lic: lic}
}

// licenseStatusProto returns st as a tunnel LicenseStatus.
func licenseStatusProto(st license.Status) *tunnelv1.LicenseStatus {
	out := &tunnelv1.LicenseStatus{ProxyId: st.ProxyID, Valid: st.Valid, Reason: st.Reason}
	if !st.NotAfter.IsZero() {
		out.ExpiresAt = timestamppb.New(st.NotAfter)
	}
	return out
}

// LicenseStatus returns the license state now.
func (s *Server) LicenseStatus() license.Status {
	return s.license.Load().status(s.cfg.ProxyID, s.now())
}

// currentLicenseProto returns the license state as a tunnel LicenseStatus.
func (s *Server) currentLicenseProto() *tunnelv1.LicenseStatus {
	return licenseStatusProto(s.LicenseStatus())
}

// noteLicense logs the license state when it differs from the last one noted and reports it to
// every tunnel. why says what caused the check.
func (s *Server) noteLicense(why string) {
	s.licenseMu.Lock()
	st := s.LicenseStatus()
	msg := licenseStatusProto(st)
	changed := s.licenseStatus == nil || !proto.Equal(s.licenseStatus, msg)
	s.licenseStatus = msg
	s.licenseMu.Unlock()
	s.updateHealth()
	if st.Valid {
		s.metrics.licenseValid.Set(1)
	} else {
		s.metrics.licenseValid.Set(0)
	}
	if !changed {
		return
	}
	f := logrus.Fields{"event": "license_status", "proxy_id": st.ProxyID, "valid": st.Valid, "checked_by": why}
	if !st.NotAfter.IsZero() {
		f["expires_at"] = st.NotAfter.UTC().Format(time.RFC3339)
	}
	if st.Valid {
		s.log.WithFields(f).WithField("customer", st.Customer).Info("license valid")
	} else {
		s.log.WithFields(f).WithField("reason", st.Reason).Error("license not valid: partner sessions are refused until a valid license is installed")
	}
	s.broadcast(&tunnelv1.Frame{Kind: &tunnelv1.Frame_LicenseStatus{LicenseStatus: msg}})
}

// ReloadLicense reads the license file again (SIGHUP) and reports a changed state. It returns
// the reason when the license is not valid afterwards.
func (s *Server) ReloadLicense() error {
	ls := loadLicense(s.cfg.LicensePath, s.cfg.LicenseKeys)
	s.license.Store(ls)
	s.noteLicense("reload")
	return ls.check(s.cfg.ProxyID, s.now())
}

// updateLicense handles a LicenseUpdate: the file is verified and checked for this proxy and
// time before it replaces the installed one (atomically on disk), so that a wrong push never
// destroys a valid license. It returns the resulting status for the answer.
func (s *Server) updateLicense(file []byte, from string) *tunnelv1.LicenseStatus {
	lic, err := license.Parse(file, s.cfg.LicenseKeys)
	if err == nil {
		err = lic.Check(s.cfg.ProxyID, s.now())
	}
	if err == nil && s.cfg.LicensePath != "" {
		_, err = license.Store(s.cfg.LicensePath, file, s.cfg.LicenseKeys)
	}
	if err != nil {
		s.emit(event.Event{Name: EventLicenseUpdated, Severity: errorSeverity, Reason: "refused",
			Message: "pushed license refused; the installed license stays: " + err.Error()}.With("from_tunnel", from))
		return s.currentLicenseProto()
	}
	s.license.Store(&licenseState{lic: lic})
	where := s.cfg.LicensePath
	if where == "" {
		where = "memory only (no license file configured)"
	}
	s.emit(event.Event{Name: EventLicenseUpdated, Severity: infoSeverity, Reason: "installed",
		Message: "pushed license installed"}.With("from_tunnel", from).With("stored_at", where).With("customer", lic.Customer).
		With("expires_at", lic.NotAfter.UTC().Format(time.RFC3339)))
	s.noteLicense("license update")
	return s.currentLicenseProto()
}

// licenseLoop re-evaluates the license every Config.LicenseCheckInterval (expiry) until ctx
// ends.
func (s *Server) licenseLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.LicenseCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.noteLicense("timer")
		}
	}
}
