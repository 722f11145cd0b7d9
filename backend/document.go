package backend

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"strconv"
	"strings"

	"smartproxy/api/apiv1"
	"smartproxy/backend/store"
)

// CRLID returns the contract's ID of the stored CRL with row id.
func CRLID(id int64) string { return "crl-" + strconv.FormatInt(id, 10) }

// parseCRLID returns the row id of a CRL ID made by CRLID.
func parseCRLID(s string) (int64, bool) {
	rest, ok := strings.CutPrefix(s, "crl-")
	if !ok {
		return 0, false
	}
	id, err := strconv.ParseInt(rest, 10, 64)
	if err != nil || id <= 0 || strconv.FormatInt(id, 10) != rest {
		return 0, false
	}
	return id, true
}

// CRLETag returns the strong ETag of a stored CRL body.
func CRLETag(c store.CRL) string { return `"` + c.SHA256 + `"` }

// Document builds the configuration document of a snapshot. Private keys
// are included only when withSecrets is set; otherwise they are replaced by
// a note, as `smartproxy-api export` prints them.
func Document(snap *store.Snapshot, withSecrets bool) *apiv1.ConfigDocument {
	secret := func(s string) apiv1.Secret {
		if withSecrets || s == "" {
			return apiv1.Secret(s)
		}
		return "[redacted: export --with-secrets shows it]"
	}
	st := snap.Settings
	doc := &apiv1.ConfigDocument{
		Revision:             snap.Revision,
		PartnerListenAddress: st.PartnerListenAddress,
		CompanyIdentity: apiv1.CompanyIdentity{
			CertificateChainPEM: st.CompanyCertificatePEM,
			PrivateKeyPEM:       secret(st.CompanyKeyPEM),
		},
		TrustedCACertificatesPEM: []string{},
		CRLs:                     []apiv1.CRLInfo{},
		Partners:                 []apiv1.Partner{},
		Limits: apiv1.Limits{
			MaxSessions:      st.Limits.MaxSessions,
			MaxHandshakes:    st.Limits.MaxHandshakes,
			PerIPRate:        st.Limits.PerIPRate,
			PerIPBurst:       st.Limits.PerIPBurst,
			HandshakeTimeout: apiv1.Duration(st.Limits.HandshakeTimeout),
			SSIDTimeout:      apiv1.Duration(st.Limits.SSIDTimeout),
			IdleTimeout:      apiv1.Duration(st.Limits.IdleTimeout),
			MaxCredit:        st.Limits.MaxCredit,
			MaxBufferSize:    st.Limits.MaxBufferSize,

			MaxHandshakesPerSource: st.Limits.MaxHandshakesPerSource,
			MaxHandshakesPerPrefix: st.Limits.MaxHandshakesPerPrefix,
			PrefixLengthV4:         st.Limits.PrefixLengthV4,
			PrefixLengthV6:         st.Limits.PrefixLengthV6,
		},
		OutgoingSourceIP: st.OutgoingSourceIP,
		Routes:           []apiv1.Route{},
		LogLevel:         st.LogLevel,
		Revocation:       apiv1.Revocation(st.Revocation),
		LogIgnoreRules:   []apiv1.LogIgnoreRule{},
	}
	if len(st.ProxyProtocolSources) > 0 {
		doc.ProxyProtocol = &apiv1.ProxyProtocol{AllowedSources: st.ProxyProtocolSources}
	}
	if is := st.InternalServer; is.Address != "" || is.TLS() {
		doc.InternalServer = &apiv1.InternalServer{
			Address:        is.Address,
			ConnectTimeout: apiv1.Duration(is.ConnectTimeout),
			SSRMTimeout:    apiv1.Duration(is.SSRMTimeout),
		}
		if is.TLS() {
			doc.InternalServer.TLS = &apiv1.InternalTLS{
				CAPEM:          is.TLSCAPEM,
				CertificatePEM: is.TLSCertificatePEM,
				PrivateKeyPEM:  secret(is.TLSKeyPEM),
				ServerName:     is.TLSServerName,
			}
		}
	}
	for _, ca := range snap.CAs {
		doc.TrustedCACertificatesPEM = append(doc.TrustedCACertificatesPEM,
			string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.DER})))
	}
	for _, c := range snap.CRLs {
		info := apiv1.CRLInfo{ID: CRLID(c.ID), URL: c.URL, ETag: CRLETag(c), Size: c.Size, SHA256: c.SHA256,
			ThisUpdate: c.ThisUpdate.UTC()}
		if !c.NextUpdate.IsZero() {
			t := c.NextUpdate.UTC()
			info.NextUpdate = &t
		}
		doc.CRLs = append(doc.CRLs, info)
	}
	for i := range snap.Partners {
		p := snap.Partners[i].APIPartner()
		if !withSecrets && p.Password != "" {
			p.Password = "[redacted]"
		}
		doc.Partners = append(doc.Partners, p)
	}
	for _, r := range snap.Routes {
		doc.Routes = append(doc.Routes, apiv1.Route{Name: r.Name, ListenAddress: r.ListenAddress,
			PartnerAddress: r.PartnerAddress, PartnerOdetteID: r.PartnerOdetteID, ServerName: r.ServerName})
	}
	for _, r := range snap.IgnoreRules {
		doc.LogIgnoreRules = append(doc.LogIgnoreRules, r.APIRule())
	}
	return doc
}

// encodeDocument returns the JSON body of doc and its strong ETag, the
// quoted SHA-256 of the body.
func encodeDocument(doc *apiv1.ConfigDocument) ([]byte, string, error) {
	b, err := json.Marshal(doc)
	if err != nil {
		return nil, "", fmt.Errorf("encode configuration: %w", err)
	}
	b = append(b, '\n')
	sum := sha256.Sum256(b)
	return b, `"` + hex.EncodeToString(sum[:]) + `"`, nil
}
