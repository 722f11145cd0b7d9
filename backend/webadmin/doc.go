// Package webadmin is the web admin of the reference backend: pages to
// manage partners, trusted CAs, CRLs, outgoing routes, log-ignore rules,
// settings, licenses and tokens, and to watch proxy clients and events.
// smartproxy-api serves it below backend.AdminPath on its HTTPS listener.
//
// Every page is rendered on the server with html/template from embedded
// templates; every form works without JavaScript. One small static script
// refreshes the dashboard and the first events page in place and asks
// before deleting. Everything the pages change goes through the same store
// functions and checks as the admin CLI and the API, with an audit entry
// (store.WithAudit) written in the same transaction.
//
// Security:
//
//	login      argon2id passwords (store), at most MaxLoginFailures failures per user
//	           name and per address within LoginWindow, then refused and logged
//	session    a random 256-bit cookie value, stored as its SHA-256; cookie
//	           __Host-…; HttpOnly; Secure; SameSite=Strict; idle and absolute expiry
//	requests   http.CrossOriginProtection refuses cross-origin state changes;
//	           Content-Security-Policy without inline script, X-Frame-Options DENY
//	secrets    private keys, passwords and tokens are never rendered back; a new
//	           token is shown once, in the answer that created it
package webadmin
