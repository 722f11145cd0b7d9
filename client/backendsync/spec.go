package backendsync

import (
	"encoding/hex"
	"errors"
	"fmt"

	"smartproxy/api/apiv1"
	"smartproxy/client/configspec"
)

// checkCRLInfo checks the metadata of a CRL before it is used to name a file or a download.
func checkCRLInfo(c *apiv1.CRLInfo, maxBytes int64) error {
	if err := apiv1.ValidateCRLID(c.ID); err != nil {
		return err
	}
	if len(c.SHA256) != 64 {
		return &apiv1.FieldError{Field: "sha256", Message: fmt.Sprintf("%q is not 64 hexadecimal digits", c.SHA256)}
	}
	if _, err := hex.DecodeString(c.SHA256); err != nil {
		return &apiv1.FieldError{Field: "sha256", Message: fmt.Sprintf("%q is not 64 hexadecimal digits", c.SHA256)}
	}
	if c.Size <= 0 || c.Size > maxBytes {
		return &apiv1.FieldError{Field: "size", Message: fmt.Sprintf("%d is out of range 1 to %d", c.Size, maxBytes)}
	}
	return nil
}

// pemBlob is the blob of a PEM text field of the document; an empty required field is an error.
func pemBlob(field, text string, required bool) configspec.Blob {
	bl := configspec.Blob{Field: field, Data: []byte(text)}
	if text == "" && required {
		bl.Err = errors.New("required")
	}
	return bl
}

// specOf turns a configuration document into the source-neutral form. crl completes the spec of
// the CRL described by its argument (its content, or that it was verified before).
func specOf(doc *apiv1.ConfigDocument, crl func(info *apiv1.CRLInfo, c *configspec.CRL)) *configspec.Spec {
	s := &configspec.Spec{
		PartnerListenAddress: doc.PartnerListenAddress,
		CompanyCertificate:   pemBlob("company_identity.certificate_chain_pem", doc.CompanyIdentity.CertificateChainPEM, true),
		CompanyKey:           pemBlob("company_identity.private_key_pem", string(doc.CompanyIdentity.PrivateKeyPEM), true),
		TrustedCAsField:      "trusted_ca_certificates_pem",
		OutgoingSourceIP:     doc.OutgoingSourceIP,
		LogLevel:             doc.LogLevel,
		Revocation:           string(doc.Revocation),
	}
	if pp := doc.ProxyProtocol; pp != nil {
		s.ProxyProtocol = &configspec.ProxyProtocol{Field: "proxy_protocol.allowed_sources", AllowedSources: pp.AllowedSources}
	}
	for i, text := range doc.TrustedCACertificatesPEM {
		s.TrustedCAs = append(s.TrustedCAs, pemBlob(fmt.Sprintf("trusted_ca_certificates_pem[%d]", i), text, true))
	}
	for i := range doc.CRLs {
		info := &doc.CRLs[i]
		field := fmt.Sprintf("crls[%d]", i)
		c := configspec.CRL{Blob: configspec.Blob{Field: field, Name: "CRL " + info.ID}, URL: info.URL, URLField: field + ".url"}
		crl(info, &c)
		s.CRLs = append(s.CRLs, c)
	}
	for i := range doc.Partners {
		p := &doc.Partners[i]
		sp := configspec.Partner{OdetteID: p.OdetteID, Name: p.Name, Enabled: p.Enabled, Password: string(p.Password),
			AllowedNetworks: p.AllowedNetworks, Direction: string(p.Direction), Charset: string(p.Charset),
			MaxCredit: p.MaxCredit, MaxBufferSize: p.MaxBufferSize, Revocation: string(p.Revocation)}
		for _, b := range p.CertificateBindings {
			sp.CertificateBindings = append(sp.CertificateBindings, configspec.CertificateBinding{
				SubjectSerialNumber: b.SubjectSerialNumber, SHA256Fingerprint: b.SHA256Fingerprint, Subject: b.Subject})
		}
		s.Partners = append(s.Partners, sp)
	}
	l := &doc.Limits
	s.Limits = configspec.Limits{MaxSessions: l.MaxSessions, MaxHandshakes: l.MaxHandshakes, PerIPRate: l.PerIPRate,
		PerIPBurst: l.PerIPBurst, HandshakeTimeout: l.HandshakeTimeout.Std(), SSIDTimeout: l.SSIDTimeout.Std(),
		IdleTimeout: l.IdleTimeout.Std(), MaxCredit: l.MaxCredit, MaxBufferSize: l.MaxBufferSize,
		ConnectTimeout:         l.ConnectTimeout.Std(),
		MaxHandshakesPerSource: l.MaxHandshakesPerSource, MaxHandshakesPerPrefix: l.MaxHandshakesPerPrefix,
		PrefixLengthV4: l.PrefixLengthV4, PrefixLengthV6: l.PrefixLengthV6}
	if in := doc.InternalServer; in != nil {
		s.InternalServer = &configspec.InternalServer{Address: in.Address, ConnectTimeout: in.ConnectTimeout.Std(),
			SSRMTimeout: in.SSRMTimeout.Std()}
		if t := in.TLS; t != nil {
			const tf = "internal_server.tls"
			st := &configspec.InternalTLS{ServerName: t.ServerName,
				Certificate: pemBlob(tf+".certificate_pem", t.CertificatePEM, false),
				Key:         pemBlob(tf+".private_key_pem", string(t.PrivateKeyPEM), false)}
			if t.CAPEM != "" {
				st.CAs = []configspec.Blob{pemBlob(tf+".ca_pem", t.CAPEM, true)}
			}
			s.InternalServer.TLS = st
		}
	}
	for _, r := range doc.Routes {
		s.Routes = append(s.Routes, configspec.Route{Name: r.Name, ListenAddress: r.ListenAddress, PartnerAddress: r.PartnerAddress,
			PartnerOdetteID: r.PartnerOdetteID, ServerName: r.ServerName, PreferredServer: r.PreferredServer})
	}
	for _, r := range doc.LogIgnoreRules {
		rule := configspec.LogIgnoreRule{Substring: r.Substring, Description: r.Description}
		if r.ValidFrom != nil {
			rule.ValidFrom = *r.ValidFrom
		}
		if r.ValidUntil != nil {
			rule.ValidUntil = *r.ValidUntil
		}
		s.LogIgnoreRules = append(s.LogIgnoreRules, rule)
	}
	return s
}
