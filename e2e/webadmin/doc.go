// Package webadmin tests the web admin of smartproxy-api end to end: a real
// smartproxy-api process with a real SQLite file, driven by headless
// Chromium (chromedp) and by a plain HTTP client for the security checks.
//
// Chromium is the Debian package "chromium". Without it the browser test
// is skipped, unless SMARTPROXY_REQUIRE_CHROMIUM=1 (as in CI), which makes
// it fail. With SMARTPROXY_SCREENSHOTS=DIR the browser test writes the
// screenshots of docs/ into DIR.
package webadmin
