package webadmin

import (
	"errors"
	"fmt"
	"html/template"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"smartproxy/backend"
	"smartproxy/backend/store"
)

// pageSize is the number of rows of a list page.
const pageSize = 50

func (h *Handler) funcs() template.FuncMap {
	return template.FuncMap{
		"time": func(t time.Time) string {
			if t.IsZero() {
				return "—"
			}
			return t.UTC().Format("2006-01-02 15:04:05Z")
		},
		"rfc3339": func(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) },
		"ago": func(t time.Time) string {
			if t.IsZero() {
				return "never"
			}
			d := h.now().Sub(t).Round(time.Second)
			if d < 0 {
				return "in " + (-d).String()
			}
			return d.String() + " ago"
		},
		"days":   func(t time.Time) int { return int(t.Sub(h.now()).Hours() / 24) },
		"before": func(a, b time.Time) bool { return a.Before(b) },
		"crlid":  backend.CRLID,
		"describe": func(kind store.SettingKind, v string) string {
			if kind.FromFile() {
				return store.DescribePEM(kind, v)
			}
			return v
		},
		"deref": func(t *time.Time) time.Time {
			if t == nil {
				return time.Time{}
			}
			return *t
		},
		"join":  strings.Join,
		"split": strings.Fields,
		"add":   func(a, b int) int { return a + b },
	}
}

// pathID returns the path value name as a positive integer.
func pathID(r *http.Request, name string) (int64, error) {
	id, err := strconv.ParseInt(r.PathValue(name), 10, 64)
	if err != nil || id <= 0 {
		return 0, fmt.Errorf("%q is not an id", r.PathValue(name))
	}
	return id, nil
}

// upload returns the content of the uploaded file field, nil when none was
// chosen.
func upload(r *http.Request, field string) ([]byte, error) {
	if r.MultipartForm == nil {
		return nil, nil // a form without files (authed parsed it)
	}
	f, hdr, err := r.FormFile(field)
	if errors.Is(err, http.ErrMissingFile) || (err == nil && hdr.Size == 0) {
		if f != nil {
			f.Close()
		}
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f)
}

// uploadName returns the name the browser gave the uploaded file of field.
func uploadName(r *http.Request, field string) string {
	if r.MultipartForm == nil || len(r.MultipartForm.File[field]) == 0 {
		return ""
	}
	return r.MultipartForm.File[field][0].Filename
}

// listPage describes one page of a list filtered in memory. The lists of CAs, CRLs, routes,
// rules and tokens are small (tens to hundreds of rows), so they are read whole and searched
// and paged here, with the same parameters as the partner list: q and offset.
type listPage struct {
	// Path is the page's path below Path, for the search form.
	Path string
	// Query is the search text; rows whose text contains it (case-insensitively) are shown.
	Query string
	// Total is the number of matching rows; First and Last number the rows shown.
	Total, First, Last int
	// Prev and Next are the links to the neighbouring pages; empty at the ends.
	Prev, Next string
}

// pageOf returns the rows of list on the page the request asks for, and the page's links.
func pageOf[T any](r *http.Request, path string, list []T, text func(T) string) ([]T, listPage) {
	q := strings.TrimSpace(r.FormValue("q"))
	if q != "" {
		lq := strings.ToLower(q)
		list = slices.DeleteFunc(slices.Clone(list), func(v T) bool { return !strings.Contains(strings.ToLower(text(v)), lq) })
	}
	off, _ := strconv.Atoi(r.FormValue("offset"))
	off = min(max(off, 0), len(list))
	rows := list[off:min(off+pageSize, len(list))]
	p := listPage{Path: path, Query: q, Total: len(list), First: off + 1, Last: off + len(rows)}
	link := func(o int) string { return "?" + url.Values{"q": {q}, "offset": {strconv.Itoa(o)}}.Encode() }
	if off > 0 {
		p.Prev = link(max(off-pageSize, 0))
	}
	if off+len(rows) < len(list) {
		p.Next = link(off + pageSize)
	}
	return rows, p
}

// paged is the data of a page with one searchable list.
type paged[T any] struct {
	List []T
	Page listPage
}

// --- dashboard ---

type dashboardData struct {
	Clients []store.ClientStatus
	// Tunnels are the clients' tunnel states by client id; a client without one is absent.
	Tunnels          map[int64]tunnelView
	Revision         int64
	Partners         int
	CAs, CRLs, Rules int
	Critical         []store.Event
}

// tunnelStale is the age after which a tunnel report is no longer shown as current: clients
// repeat it every 30 s.
const tunnelStale = 90 * time.Second

// tunnelView is a client's tunnel state as the dashboard shows it.
type tunnelView struct {
	backend.TunnelReport
	// Stale says the report is older than tunnelStale: the client may be gone.
	Stale bool
}

func (h *Handler) dashboardData(r *http.Request) (dashboardData, error) {
	ctx := r.Context()
	d := dashboardData{Tunnels: map[int64]tunnelView{}}
	var err error
	if d.Clients, err = h.st.Clients(ctx); err != nil {
		return d, err
	}
	if h.cfg.Tunnel != nil {
		for _, c := range d.Clients {
			if rep, ok := h.cfg.Tunnel(c.ID); ok {
				d.Tunnels[c.ID] = tunnelView{TunnelReport: rep, Stale: h.now().Sub(rep.ReportedAt) > tunnelStale}
			}
		}
	}
	if d.Revision, err = h.st.Revision(ctx); err != nil {
		return d, err
	}
	if _, d.Partners, err = h.st.SearchPartners(ctx, store.PartnerFilter{Limit: 1}); err != nil {
		return d, err
	}
	cas, err := h.st.CAs(ctx)
	if err != nil {
		return d, err
	}
	crls, err := h.st.CRLs(ctx)
	if err != nil {
		return d, err
	}
	rules, err := h.st.IgnoreRules(ctx)
	if err != nil {
		return d, err
	}
	d.CAs, d.CRLs, d.Rules = len(cas), len(crls), len(rules)
	d.Critical, err = h.st.EventPage(ctx, store.EventPageFilter{Severity: "error", Limit: 10})
	return d, err
}

func (h *Handler) dashboard(w http.ResponseWriter, r *http.Request, s *store.AdminSession) {
	d, err := h.dashboardData(r)
	h.show(w, r, s, "dashboard", view{Title: "Dashboard", Nav: "dashboard", Data: d}, err)
}

func (h *Handler) dashboardLive(w http.ResponseWriter, r *http.Request, s *store.AdminSession) {
	d, err := h.dashboardData(r)
	h.showLive(w, r, s, "dashboard", view{Data: d}, err)
}

// show renders a page, or the error page when err is not nil.
func (h *Handler) show(w http.ResponseWriter, r *http.Request, s *store.AdminSession, name string, v view, err error) {
	if err != nil {
		h.log.WithError(err).WithField("page", name).Error("web admin page cannot be read")
		h.render(w, r, http.StatusInternalServerError, "error", s, view{Title: "Error", Error: "The page cannot be read; see the log."})
		return
	}
	h.render(w, r, http.StatusOK, name, s, v)
}

// showLive renders the "live" part of a page alone, for its refresh.
func (h *Handler) showLive(w http.ResponseWriter, r *http.Request, s *store.AdminSession, name string, v view, err error) {
	if err != nil {
		h.log.WithError(err).WithField("page", name).Error("web admin page cannot be read")
		http.Error(w, "cannot be read", http.StatusInternalServerError)
		return
	}
	h.renderTemplate(w, r, http.StatusOK, name, "live", s, v)
}

// --- partners ---

type partnersData struct {
	Query         string
	List          []store.PartnerSummary
	Total, Offset int
	Prev, Next    string
	First, Last   int
}

func (h *Handler) partners(w http.ResponseWriter, r *http.Request, s *store.AdminSession) {
	q := strings.TrimSpace(r.FormValue("q"))
	off, _ := strconv.Atoi(r.FormValue("offset"))
	off = max(off, 0)
	list, total, err := h.st.SearchPartners(r.Context(), store.PartnerFilter{Query: q, Offset: off, Limit: pageSize})
	d := partnersData{Query: q, List: list, Total: total, Offset: off, First: off + 1, Last: off + len(list)}
	link := func(o int) string { return "?" + url.Values{"q": {q}, "offset": {strconv.Itoa(o)}}.Encode() }
	if off > 0 {
		d.Prev = link(max(off-pageSize, 0))
	}
	if off+len(list) < total {
		d.Next = link(off + pageSize)
	}
	h.show(w, r, s, "partners", view{Title: "Partners", Nav: "partners", Data: d}, err)
}

type partnerData struct {
	New      bool
	P        store.Partner
	Networks string
}

func (h *Handler) partnerNew(w http.ResponseWriter, r *http.Request, s *store.AdminSession) {
	h.render(w, r, http.StatusOK, "partner", s, view{Title: "New partner", Nav: "partners",
		Data: partnerData{New: true, P: store.Partner{Enabled: true, Direction: "both", Charset: "strict"}}})
}

func (h *Handler) partnerEdit(w http.ResponseWriter, r *http.Request, s *store.AdminSession) {
	p, err := h.st.Partner(r.Context(), r.PathValue("id"))
	if errors.Is(err, store.ErrNotFound) {
		h.render(w, r, http.StatusNotFound, "error", s, view{Title: "Not found", Error: message(err)})
		return
	}
	p.Password = "" // never rendered back
	h.show(w, r, s, "partner", view{Title: "Partner " + p.OdetteID, Nav: "partners",
		Data: partnerData{P: p, Networks: strings.Join(p.AllowedNetworks, "\n")}}, err)
}

// applyPartnerForm sets the fields of the partner form on p. The password
// changes only when one is typed or "clear" is ticked.
func applyPartnerForm(r *http.Request, p *store.Partner) error {
	p.Name = strings.TrimSpace(r.FormValue("name"))
	p.Enabled = r.FormValue("enabled") != ""
	p.Direction = r.FormValue("direction")
	p.Charset = r.FormValue("charset")
	if pw := r.FormValue("password"); pw != "" {
		p.Password = pw
	} else if r.FormValue("clear_password") != "" {
		p.Password = ""
	}
	for _, f := range []struct {
		name string
		dst  *uint32
	}{{"max_credit", &p.MaxCredit}, {"max_buffer_size", &p.MaxBufferSize}} {
		v := strings.TrimSpace(r.FormValue(f.name))
		if v == "" {
			*f.dst = 0
			continue
		}
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return fmt.Errorf("partners.%s: %q is not a number", f.name, v)
		}
		*f.dst = uint32(n)
	}
	p.AllowedNetworks = strings.Fields(r.FormValue("networks"))
	return nil
}

// bindingFromForm returns the certificate binding the form describes, nil
// when it describes none. An uploaded certificate binds its SHA-256
// fingerprint.
func bindingFromForm(r *http.Request) (*store.CertificateBinding, error) {
	b := store.CertificateBinding{SubjectSerialNumber: strings.TrimSpace(r.FormValue("binding_serial")),
		SHA256Fingerprint: strings.TrimSpace(r.FormValue("binding_fingerprint")), Subject: strings.TrimSpace(r.FormValue("binding_subject"))}
	data, err := upload(r, "binding_certificate")
	if err != nil {
		return nil, err
	}
	if data != nil {
		if b.SHA256Fingerprint != "" {
			return nil, errors.New("give a certificate file or a fingerprint, not both")
		}
		cert, err := backend.ParseOneCertificate(data)
		if err != nil {
			return nil, fmt.Errorf("certificate file: %w", err)
		}
		b.SHA256Fingerprint = store.Fingerprint(cert)
	}
	if b == (store.CertificateBinding{}) {
		return nil, nil
	}
	return &b, nil
}

func (h *Handler) partnerCreate(w http.ResponseWriter, r *http.Request, s *store.AdminSession) {
	p := store.Partner{OdetteID: strings.TrimSpace(r.FormValue("odette_id"))}
	err := applyPartnerForm(r, &p)
	if err == nil {
		var b *store.CertificateBinding
		if b, err = bindingFromForm(r); b != nil {
			p.CertificateBindings = []store.CertificateBinding{*b}
		}
	}
	if err == nil {
		err = h.st.AddPartner(audited(r, s, "partner add", p.OdetteID), p)
	}
	if err != nil {
		h.failed(w, r, "partners/new", err)
		return
	}
	h.done(w, r, "partners/"+url.PathEscape(p.OdetteID), "Partner %s added.", p.OdetteID)
}

func (h *Handler) partnerSave(w http.ResponseWriter, r *http.Request, s *store.AdminSession) {
	id := r.PathValue("id")
	err := h.st.UpdatePartner(audited(r, s, "partner set", id), id, func(p *store.Partner) error { return applyPartnerForm(r, p) })
	if err != nil {
		h.failed(w, r, "partners/"+url.PathEscape(id), err)
		return
	}
	h.done(w, r, "partners/"+url.PathEscape(id), "Partner %s saved.", id)
}

func (h *Handler) partnerToggle(w http.ResponseWriter, r *http.Request, s *store.AdminSession) {
	id := r.PathValue("id")
	on := r.FormValue("enabled") == "1"
	action := map[bool]string{true: "partner enable", false: "partner disable"}[on]
	err := h.st.UpdatePartner(audited(r, s, action, id), id, func(p *store.Partner) error { p.Enabled = on; return nil })
	if err != nil {
		h.failed(w, r, "partners", err)
		return
	}
	h.done(w, r, "partners", "Partner %s %sd.", id, strings.TrimPrefix(action, "partner "))
}

func (h *Handler) partnerDelete(w http.ResponseWriter, r *http.Request, s *store.AdminSession) {
	id := r.PathValue("id")
	if err := h.st.RemovePartner(audited(r, s, "partner remove", id), id); err != nil {
		h.failed(w, r, "partners", err)
		return
	}
	h.done(w, r, "partners", "Partner %s removed.", id)
}

func (h *Handler) bindingAdd(w http.ResponseWriter, r *http.Request, s *store.AdminSession) {
	id := r.PathValue("id")
	b, err := bindingFromForm(r)
	if err == nil && b == nil {
		err = errors.New("give a certificate file, a serial number, a fingerprint or a subject")
	}
	if err == nil {
		err = h.st.UpdatePartner(audited(r, s, "partner binding add", id), id, func(p *store.Partner) error {
			p.CertificateBindings = append(p.CertificateBindings, *b)
			return nil
		})
	}
	if err != nil {
		h.failed(w, r, "partners/"+url.PathEscape(id), err)
		return
	}
	h.done(w, r, "partners/"+url.PathEscape(id), "Certificate binding added.")
}

func (h *Handler) bindingDelete(w http.ResponseWriter, r *http.Request, s *store.AdminSession) {
	id := r.PathValue("id")
	n, err := strconv.Atoi(r.PathValue("n"))
	if err == nil {
		err = h.st.UpdatePartner(audited(r, s, "partner binding remove", id), id, func(p *store.Partner) error {
			if n < 0 || n >= len(p.CertificateBindings) {
				return fmt.Errorf("partner %s has no binding %d", id, n)
			}
			p.CertificateBindings = slices.Delete(p.CertificateBindings, n, n+1)
			return nil
		})
	}
	if err != nil {
		h.failed(w, r, "partners/"+url.PathEscape(id), err)
		return
	}
	h.done(w, r, "partners/"+url.PathEscape(id), "Certificate binding removed.")
}

// --- trusted CAs ---

func (h *Handler) cas(w http.ResponseWriter, r *http.Request, s *store.AdminSession) {
	list, err := h.st.CAs(r.Context())
	rows, p := pageOf(r, "cas", list, func(c store.CA) string { return c.Subject + " " + c.SHA256 })
	h.show(w, r, s, "cas", view{Title: "Trusted CAs", Nav: "cas", Data: paged[store.CA]{rows, p}}, err)
}

func (h *Handler) caAdd(w http.ResponseWriter, r *http.Request, s *store.AdminSession) {
	data, err := upload(r, "file")
	if err == nil && data == nil {
		err = errors.New("choose a PEM or DER certificate file")
	}
	var added []store.CA
	if err == nil {
		added, err = backend.AddCAs(audited(r, s, "ca add", uploadName(r, "file")), h.st, data)
	}
	if err != nil {
		h.failed(w, r, "cas", err)
		return
	}
	names := make([]string, len(added))
	for i, ca := range added {
		names[i] = ca.Subject
	}
	h.done(w, r, "cas", "Added: %s.", strings.Join(names, "; "))
}

func (h *Handler) caDelete(w http.ResponseWriter, r *http.Request, s *store.AdminSession) {
	ref := r.PathValue("id")
	ca, err := h.st.RemoveCA(audited(r, s, "ca remove", ref), ref)
	if err != nil {
		h.failed(w, r, "cas", err)
		return
	}
	h.done(w, r, "cas", "Removed CA %s.", ca.Subject)
}

// --- CRLs ---

type crlsData struct {
	URLs     []store.CRLURL
	CRLs     []store.CRL
	CanFetch bool
	// Page pages the CRLs; the search applies to both lists.
	Page listPage
}

func (h *Handler) crls(w http.ResponseWriter, r *http.Request, s *store.AdminSession) {
	d := crlsData{CanFetch: h.cfg.FetchCRL != nil}
	var err error
	if d.URLs, err = h.st.CRLURLs(r.Context()); err == nil {
		d.CRLs, err = h.st.CRLs(r.Context())
	}
	d.URLs, _ = pageOf(r, "crls", d.URLs, func(u store.CRLURL) string { return u.URL + " " + u.ReportedBy + " " + u.LastStatus })
	d.CRLs, d.Page = pageOf(r, "crls", d.CRLs, func(c store.CRL) string { return c.Issuer + " " + c.URL + " " + backend.CRLID(c.ID) })
	h.show(w, r, s, "crls", view{Title: "CRLs", Nav: "crls", Data: d}, err)
}

func (h *Handler) crlImport(w http.ResponseWriter, r *http.Request, s *store.AdminSession) {
	data, err := upload(r, "file")
	if err == nil && data == nil {
		err = errors.New("choose a CRL file (PEM or DER)")
	}
	var res backend.CRLImport
	if err == nil {
		u := strings.TrimSpace(r.FormValue("url"))
		res, err = backend.ImportCRL(audited(r, s, "crl import", u), h.st, data, u, h.now())
	}
	switch {
	case err != nil:
		h.failed(w, r, "crls", err)
	case !res.Changed:
		h.done(w, r, "crls", "This CRL of %s is stored already.", res.CRL.Issuer)
	case res.Stale != nil:
		h.done(w, r, "crls", "CRL of %s stored (%d entries). Warning: %v.", res.CRL.Issuer, res.CRL.Entries, res.Stale)
	default:
		h.done(w, r, "crls", "CRL of %s stored (%d entries).", res.CRL.Issuer, res.CRL.Entries)
	}
}

func (h *Handler) crlDelete(w http.ResponseWriter, r *http.Request, s *store.AdminSession) {
	id, err := pathID(r, "id")
	if err == nil {
		err = h.st.RemoveCRL(audited(r, s, "crl remove", backend.CRLID(id)), id)
	}
	if err != nil {
		h.failed(w, r, "crls", err)
		return
	}
	h.done(w, r, "crls", "CRL %s removed.", backend.CRLID(id))
}

func (h *Handler) crlURLAdd(w http.ResponseWriter, r *http.Request, s *store.AdminSession) {
	u := strings.TrimSpace(r.FormValue("url"))
	if _, err := h.st.AddCRLURL(audited(r, s, "crl-url add", u), u); err != nil {
		h.failed(w, r, "crls", err)
		return
	}
	h.done(w, r, "crls", "CRL URL added; it is downloaded within seconds.")
}

func (h *Handler) crlURLDelete(w http.ResponseWriter, r *http.Request, s *store.AdminSession) {
	ref := r.PathValue("id")
	u, err := h.st.RemoveCRLURL(audited(r, s, "crl-url remove", ref), ref)
	if err != nil {
		h.failed(w, r, "crls", err)
		return
	}
	h.done(w, r, "crls", "CRL URL %s removed.", u.URL)
}

func (h *Handler) crlURLFetch(w http.ResponseWriter, r *http.Request, s *store.AdminSession) {
	id, err := pathID(r, "id")
	if err == nil && h.cfg.FetchCRL == nil {
		err = errors.New("downloads are not run by this process")
	}
	if err == nil {
		err = h.cfg.FetchCRL(audited(r, s, "crl-url fetch", r.PathValue("id")), id)
	}
	if err != nil {
		h.failed(w, r, "crls", err)
		return
	}
	h.done(w, r, "crls", "Download done; its result is in the table.")
}

// --- routes ---

func (h *Handler) routesPage(w http.ResponseWriter, r *http.Request, s *store.AdminSession) {
	list, err := h.st.Routes(r.Context())
	rows, p := pageOf(r, "routes", list, func(rt store.Route) string {
		return strings.Join([]string{rt.Name, rt.ListenAddress, rt.PartnerAddress, rt.PartnerOdetteID, rt.ServerName}, " ")
	})
	h.show(w, r, s, "routes", view{Title: "Outgoing routes", Nav: "routes", Data: paged[store.Route]{rows, p}}, err)
}

func (h *Handler) routeAdd(w http.ResponseWriter, r *http.Request, s *store.AdminSession) {
	rt := store.Route{Name: strings.TrimSpace(r.FormValue("name")), ListenAddress: strings.TrimSpace(r.FormValue("listen")),
		PartnerAddress: strings.TrimSpace(r.FormValue("partner_address")), PartnerOdetteID: strings.TrimSpace(r.FormValue("partner_odette_id")),
		ServerName: strings.TrimSpace(r.FormValue("server_name"))}
	if err := h.st.AddRoute(audited(r, s, "route add", rt.Name), rt); err != nil {
		h.failed(w, r, "routes", err)
		return
	}
	h.done(w, r, "routes", "Route %s added.", rt.Name)
}

func (h *Handler) routeDelete(w http.ResponseWriter, r *http.Request, s *store.AdminSession) {
	name := r.PathValue("name")
	if err := h.st.RemoveRoute(audited(r, s, "route remove", name), name); err != nil {
		h.failed(w, r, "routes", err)
		return
	}
	h.done(w, r, "routes", "Route %s removed.", name)
}

// --- log-ignore rules ---

func (h *Handler) rules(w http.ResponseWriter, r *http.Request, s *store.AdminSession) {
	list, err := h.st.IgnoreRules(r.Context())
	rows, p := pageOf(r, "rules", list, func(ru store.IgnoreRule) string { return ru.Substring + " " + ru.Description })
	h.show(w, r, s, "rules", view{Title: "Log-ignore rules", Nav: "rules", Data: paged[store.IgnoreRule]{rows, p}}, err)
}

// formTime parses a time of a form: an RFC 3339 time, the value of an
// HTML datetime-local input (taken as UTC), or empty (zero).
func formTime(field, v string) (time.Time, error) {
	v = strings.TrimSpace(v)
	if v == "" {
		return time.Time{}, nil
	}
	for _, layout := range []string{time.RFC3339, "2006-01-02T15:04", "2006-01-02T15:04:05"} {
		if t, err := time.Parse(layout, v); err == nil {
			return t, nil
		}
	}
	return time.Time{}, fmt.Errorf("%s: %q is not a time (YYYY-MM-DDThh:mm, UTC)", field, v)
}

func (h *Handler) ruleAdd(w http.ResponseWriter, r *http.Request, s *store.AdminSession) {
	rule := store.IgnoreRule{Substring: r.FormValue("substring"), Description: strings.TrimSpace(r.FormValue("description"))}
	var err error
	if rule.ValidFrom, err = formTime("valid from", r.FormValue("valid_from")); err == nil {
		rule.ValidUntil, err = formTime("valid until", r.FormValue("valid_until"))
	}
	if err == nil {
		rule, err = h.st.AddIgnoreRule(audited(r, s, "ignore add", rule.Substring), rule)
	}
	if err != nil {
		h.failed(w, r, "rules", err)
		return
	}
	h.done(w, r, "rules", "Rule %d added.", rule.ID)
}

func (h *Handler) ruleDelete(w http.ResponseWriter, r *http.Request, s *store.AdminSession) {
	id, err := pathID(r, "id")
	if err == nil {
		_, err = h.st.RemoveIgnoreRule(audited(r, s, "ignore remove", r.PathValue("id")), id)
	}
	if err != nil {
		h.failed(w, r, "rules", err)
		return
	}
	h.done(w, r, "rules", "Rule %d removed.", id)
}

// --- events ---

type eventsData struct {
	Severity, Name, Partner, Client, From, Until string
	Severities                                   []string
	List                                         []store.Event
	// Query is the filter as a query string, for the refresh and the links.
	Query string
	// Older continues the list after its last event; empty at the end.
	Older string
	// Live says the page is the first one and refreshes itself.
	Live bool
}

func (h *Handler) eventsData(r *http.Request) (eventsData, error) {
	d := eventsData{Severity: r.FormValue("severity"), Name: strings.TrimSpace(r.FormValue("name")),
		Partner: strings.TrimSpace(r.FormValue("partner")), Client: strings.TrimSpace(r.FormValue("client")),
		From: r.FormValue("from"), Until: r.FormValue("until"),
		Severities: []string{"debug", "info", "warning", "error", "critical"}}
	f := store.EventPageFilter{Severity: d.Severity, Name: d.Name, OdetteID: d.Partner, Client: d.Client, Limit: pageSize}
	var err error
	if f.From, err = formTime("from", d.From); err != nil {
		return d, err
	}
	if f.Until, err = formTime("until", d.Until); err != nil {
		return d, err
	}
	q := url.Values{}
	for k, v := range map[string]string{"severity": d.Severity, "name": d.Name, "partner": d.Partner, "client": d.Client,
		"from": d.From, "until": d.Until} {
		if v != "" {
			q.Set(k, v)
		}
	}
	d.Query = q.Encode()
	if bt := r.FormValue("before"); bt != "" {
		ts, seq, _ := strings.Cut(bt, "/")
		t, err1 := time.Parse(time.RFC3339Nano, ts)
		n, err2 := strconv.ParseInt(seq, 10, 64)
		if err1 != nil || err2 != nil {
			return d, fmt.Errorf("before: %q is not a position in the list", bt)
		}
		f.BeforeTime, f.BeforeSeq = t, n
	} else {
		d.Live = true
	}
	if d.List, err = h.st.EventPage(r.Context(), f); err != nil {
		return d, err
	}
	if len(d.List) == pageSize {
		last := d.List[len(d.List)-1]
		q.Set("before", last.Time.UTC().Format(time.RFC3339Nano)+"/"+strconv.FormatInt(last.Seq, 10))
		d.Older = "?" + q.Encode()
	}
	return d, nil
}

func (h *Handler) events(w http.ResponseWriter, r *http.Request, s *store.AdminSession) {
	d, err := h.eventsData(r)
	var ve *store.ValidationError
	if err != nil && (errors.As(err, &ve) || strings.Contains(err.Error(), "is not")) {
		h.render(w, r, http.StatusBadRequest, "events", s, view{Title: "Events", Nav: "events", Data: d, Error: err.Error()})
		return
	}
	h.show(w, r, s, "events", view{Title: "Events", Nav: "events", Data: d}, err)
}

func (h *Handler) eventsLive(w http.ResponseWriter, r *http.Request, s *store.AdminSession) {
	d, err := h.eventsData(r)
	h.showLive(w, r, s, "events", view{Data: d}, err)
}

func (h *Handler) event(w http.ResponseWriter, r *http.Request, s *store.AdminSession) {
	seq, err := pathID(r, "seq")
	var e store.Event
	if err == nil {
		e, err = h.st.EventBySeq(r.Context(), seq)
	}
	if err != nil {
		h.render(w, r, http.StatusNotFound, "error", s, view{Title: "Not found", Error: message(err)})
		return
	}
	h.render(w, r, http.StatusOK, "event", s, view{Title: "Event " + e.Name, Nav: "events", Data: e})
}

// --- license ---

type licenseData struct {
	Licenses []store.License
	Clients  []store.ClientStatus
}

func (h *Handler) license(w http.ResponseWriter, r *http.Request, s *store.AdminSession) {
	var d licenseData
	var err error
	if d.Licenses, err = h.st.Licenses(r.Context()); err == nil {
		d.Clients, err = h.st.Clients(r.Context())
	}
	h.show(w, r, s, "license", view{Title: "License", Nav: "license", Data: d}, err)
}

func (h *Handler) licenseImport(w http.ResponseWriter, r *http.Request, s *store.AdminSession) {
	data, err := upload(r, "file")
	if err == nil && data == nil {
		err = errors.New("choose a license file")
	}
	if err == nil {
		lic, ierr := backend.ImportLicense(audited(r, s, "license import", uploadName(r, "file")), h.st, data)
		if ierr == nil {
			msg := "License for %s (%s) stored, valid until %s; proxy clients push it to their server."
			if !h.now().Before(lic.NotAfter) {
				msg = "License for %s (%s) stored, but it expired at %s."
			}
			h.done(w, r, "license", msg, lic.ProxyID, lic.Customer, lic.NotAfter.UTC().Format(time.RFC3339))
			return
		}
		err = ierr
	}
	h.failed(w, r, "license", err)
}

// --- tokens ---

type tokensData struct {
	List []store.Token
	Page listPage
	// New is the token just created, shown once; NewClient its client.
	New, NewClient string
}

func (h *Handler) tokens(w http.ResponseWriter, r *http.Request, s *store.AdminSession) {
	list, err := h.st.Tokens(r.Context())
	rows, p := pageOf(r, "tokens", list, tokenText)
	h.show(w, r, s, "tokens", view{Title: "Tokens", Nav: "tokens", Data: tokensData{List: rows, Page: p}}, err)
}

func (h *Handler) tokenCreate(w http.ResponseWriter, r *http.Request, s *store.AdminSession) {
	client := strings.TrimSpace(r.FormValue("client"))
	token, _, err := h.st.CreateToken(audited(r, s, "token create", client), client)
	if err != nil {
		h.failed(w, r, "tokens", err)
		return
	}
	// The token is in this answer only: no redirect, no flash cookie.
	list, err := h.st.Tokens(r.Context())
	rows, p := pageOf(r, "tokens", list, tokenText)
	h.show(w, r, s, "tokens", view{Title: "Tokens", Nav: "tokens", Data: tokensData{List: rows, Page: p, New: token, NewClient: client}}, err)
}

func tokenText(t store.Token) string {
	return t.Client + " " + t.Hint + " " + strconv.FormatInt(t.ID, 10)
}

func (h *Handler) tokenRevoke(w http.ResponseWriter, r *http.Request, s *store.AdminSession) {
	id, err := pathID(r, "id")
	if err == nil {
		err = h.st.RevokeToken(audited(r, s, "token revoke", r.PathValue("id")), id)
	}
	if err != nil {
		h.failed(w, r, "tokens", err)
		return
	}
	h.done(w, r, "tokens", "Token %d revoked.", id)
}

// --- settings ---

type settingRow struct {
	Def   store.SettingDef
	Set   bool
	Value string
	File  bool
}

func (h *Handler) settings(w http.ResponseWriter, r *http.Request, s *store.AdminSession) {
	values, err := h.st.SettingValues(r.Context())
	byKey := map[string]store.SettingValue{}
	for _, v := range values {
		byKey[v.Key] = v
	}
	var rows []settingRow
	for _, d := range store.SettingDefs {
		v, ok := byKey[d.Key]
		row := settingRow{Def: d, Set: ok, File: d.Kind.FromFile()}
		if ok {
			if d.Kind.FromFile() {
				row.Value = store.DescribePEM(d.Kind, v.Value) // a key is described, never shown
			} else {
				row.Value = v.Value
			}
		}
		rows = append(rows, row)
	}
	h.show(w, r, s, "settings", view{Title: "Settings", Nav: "settings", Data: rows}, err)
}

// settingSet stores the settings of the form: a value per key typed in,
// or a file per key uploaded, all in one store.SetSettings call so that a
// certificate and its key are checked and stored together.
func (h *Handler) settingSet(w http.ResponseWriter, r *http.Request, s *store.AdminSession) {
	var (
		changes []store.SettingChange
		keys    []string
	)
	for _, d := range store.SettingDefs {
		var v string
		if d.Kind.FromFile() {
			data, err := upload(r, d.Key)
			if err != nil {
				h.failed(w, r, "settings", err)
				return
			}
			if data == nil {
				continue
			}
			v = string(data)
		} else if v = strings.TrimSpace(r.FormValue(d.Key)); v == "" {
			continue
		}
		changes = append(changes, store.SettingChange{Key: d.Key, Value: v})
		keys = append(keys, d.Key)
	}
	if err := h.st.SetSettings(audited(r, s, "config set", strings.Join(keys, " ")), changes); err != nil {
		h.failed(w, r, "settings", err)
		return
	}
	h.done(w, r, "settings", "Stored: %s.", strings.Join(keys, ", "))
}

func (h *Handler) settingUnset(w http.ResponseWriter, r *http.Request, s *store.AdminSession) {
	key := r.FormValue("key")
	if err := h.st.SetSettings(audited(r, s, "config unset", key), []store.SettingChange{{Key: key}}); err != nil {
		h.failed(w, r, "settings", err)
		return
	}
	h.done(w, r, "settings", "%s unset.", key)
}

// --- audit log ---

type auditData struct {
	Query string
	List  []store.AuditEntry
	Older string
}

func (h *Handler) audit(w http.ResponseWriter, r *http.Request, s *store.AdminSession) {
	d := auditData{Query: strings.TrimSpace(r.FormValue("q"))}
	before, _ := strconv.ParseInt(r.FormValue("before"), 10, 64)
	var err error
	d.List, err = h.st.AuditLog(r.Context(), store.AuditFilter{Query: d.Query, Before: before, Limit: pageSize})
	if len(d.List) == pageSize {
		d.Older = "?" + url.Values{"q": {d.Query}, "before": {strconv.FormatInt(d.List[len(d.List)-1].ID, 10)}}.Encode()
	}
	h.show(w, r, s, "audit", view{Title: "Audit log", Nav: "audit", Data: d}, err)
}
