package configfile

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"smartproxy/client/configspec"
)

// maxFileSize bounds every file the configuration names, so that a wrong path (a device, a huge
// log) cannot exhaust memory. The largest real CRLs are tens of MiB.
const maxFileSize = 256 << 20

// spec turns f, whose relative paths are resolved against dir, into the source-neutral form:
// it reads every file the document names. A file that cannot be read becomes a blob with an
// error, which configspec.Build reports with the file's field in the order of the document.
func spec(f *File, dir string) *configspec.Spec {
	r := &reader{dir: dir}
	s := &configspec.Spec{
		PartnerListenAddress: f.PartnerListenAddress,
		CompanyCertificate:   r.read("company_certificate", f.CompanyCertificate),
		CompanyKey:           r.read("company_key", f.CompanyKey),
		TrustedCAsField:      "trusted_ca_files",
		LogLevel:             f.LogLevel,
		Revocation:           f.Revocation,
	}
	if s.CompanyKey.Err == nil {
		if st, err := os.Stat(s.CompanyKey.Name); err == nil && st.Mode().Perm()&0o077 != 0 {
			s.CompanyKey.Warnings = append(s.CompanyKey.Warnings,
				fmt.Sprintf("%s is readable by others (mode %04o); use mode 0600", s.CompanyKey.Name, st.Mode().Perm()))
		}
	}
	for i, name := range f.TrustedCAFiles {
		s.TrustedCAs = append(s.TrustedCAs, r.read(fmt.Sprintf("trusted_ca_files[%d]", i), name))
	}
	for i, c := range f.CRLs {
		field := fmt.Sprintf("crls[%d]", i)
		s.CRLs = append(s.CRLs, configspec.CRL{Blob: r.read(field+".file", c.File), URL: c.URL, URLField: field + ".url"})
	}
	for i := range f.Partners {
		p := &f.Partners[i]
		sp := configspec.Partner{OdetteID: p.OdetteID, Name: p.Name, Enabled: p.Enabled == nil || *p.Enabled, Password: p.Password,
			AllowedNetworks: p.AllowedNetworks, Direction: p.Direction, Charset: p.Charset, MaxCredit: p.MaxCredit, MaxBufferSize: p.MaxBufferSize,
			Revocation: p.Revocation}
		for j, cb := range p.CertificateBindings {
			b := configspec.CertificateBinding{SubjectSerialNumber: cb.SubjectSerialNumber, SHA256Fingerprint: cb.SHA256Fingerprint, Subject: cb.Subject}
			if cb.CertificateFile != "" {
				bl := r.read(fmt.Sprintf("partners[%d].certificate_bindings[%d].certificate_file", i, j), cb.CertificateFile)
				b.Certificate = &bl
			}
			sp.CertificateBindings = append(sp.CertificateBindings, b)
		}
		s.Partners = append(s.Partners, sp)
	}
	l := &f.Limits
	s.Limits = configspec.Limits{MaxSessions: l.MaxSessions, MaxHandshakes: l.MaxHandshakes, PerIPRate: l.PerIPRate,
		PerIPBurst: l.PerIPBurst, HandshakeTimeout: time.Duration(l.HandshakeTimeout), SSIDTimeout: time.Duration(l.SSIDTimeout),
		IdleTimeout: time.Duration(l.IdleTimeout), MaxCredit: l.MaxCredit, MaxBufferSize: l.MaxBufferSize,
		ConnectTimeout:         time.Duration(l.ConnectTimeout),
		MaxHandshakesPerSource: l.MaxHandshakesPerSource, MaxHandshakesPerPrefix: l.MaxHandshakesPerPrefix,
		PrefixLengthV4: l.PrefixLengthV4, PrefixLengthV6: l.PrefixLengthV6}
	s.OutgoingSourceIP = f.OutgoingSourceIP
	if pp := f.ProxyProtocol; pp != nil {
		s.ProxyProtocol = &configspec.ProxyProtocol{Field: "proxy_protocol.allowed_sources", AllowedSources: pp.AllowedSources}
	}
	for _, r := range f.Routes {
		s.Routes = append(s.Routes, configspec.Route{Name: r.Name, ListenAddress: r.ListenAddress, PartnerAddress: r.PartnerAddress,
			PartnerOdetteID: r.PartnerOdetteID, ServerName: r.ServerName, PreferredServer: r.PreferredServer})
	}
	if in := f.InternalServer; in != nil {
		s.InternalServer = &configspec.InternalServer{Address: in.Address, ConnectTimeout: time.Duration(in.ConnectTimeout),
			SSRMTimeout: time.Duration(in.SSRMTimeout)}
		if t := in.TLS; t != nil {
			const tf = "internal_server.tls"
			st := &configspec.InternalTLS{ServerName: t.ServerName,
				Certificate: configspec.Blob{Field: tf + ".certificate"}, Key: configspec.Blob{Field: tf + ".key"}}
			for i, name := range t.CAFiles {
				st.CAs = append(st.CAs, r.read(fmt.Sprintf("%s.ca_files[%d]", tf, i), name))
			}
			if t.Certificate != "" {
				st.Certificate = r.read(tf+".certificate", t.Certificate)
			}
			if t.Key != "" {
				st.Key = r.read(tf+".key", t.Key)
			}
			s.InternalServer.TLS = st
		}
	}
	for _, rule := range f.LogIgnoreRules {
		s.LogIgnoreRules = append(s.LogIgnoreRules, configspec.LogIgnoreRule{Substring: rule.Substring, Description: rule.Description,
			ValidFrom: rule.ValidFrom.Time, ValidUntil: rule.ValidUntil.Time})
	}
	return s
}

// reader reads the files a configuration names, resolving relative names against the
// configuration file's directory.
type reader struct {
	dir string
}

// read returns the blob of the file name for field; a file that cannot be used gives a blob
// whose Err says why.
func (r *reader) read(field, name string) configspec.Blob {
	bl := configspec.Blob{Field: field}
	if name == "" {
		bl.Err = errors.New("a file name is required")
		return bl
	}
	path := name
	if !filepath.IsAbs(path) {
		path = filepath.Join(r.dir, path)
	}
	bl.Name = path
	st, err := os.Stat(path)
	switch {
	case err != nil:
		bl.Err = err
	case !st.Mode().IsRegular():
		bl.Err = fmt.Errorf("%s is not a regular file", path)
	case st.Size() > maxFileSize:
		bl.Err = fmt.Errorf("%s has %d bytes, more than the %d allowed", path, st.Size(), maxFileSize)
	default:
		bl.Data, bl.Err = os.ReadFile(path)
	}
	return bl
}
