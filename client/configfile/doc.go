// Package configfile reads the local configuration file of smartproxy-client: a JSON document
// (see docs/configuration.md) naming the company certificate and key, the trusted CAs, CRLs,
// partners, limits, log settings and the internal OFTP2 server. It checks the document's syntax,
// reads the files it names (relative paths are resolved against the document's directory) into
// a configspec.Spec and lets configspec.Build — the same builder the backend source uses — check
// every field and build a client.Snapshot: the SecurityConfig pushed to the DMZ server plus the
// client's own settings.
//
// Every problem is reported with the path of its field, e.g.
//
//	partners[2].odette_id: "acme" is not a valid Odette ID: character 'a' is outside the RFC 5024 X(n) set …
//
// and Load reports all problems of a file at once. A Loader keeps the last good configuration,
// so that a broken file at reload leaves the running configuration in force.
//
// JSON was chosen over YAML on purpose: it has no implicit typing (a password such as 0123 or
// an Odette ID such as NO stays a string), it is read with the standard library, and tools to
// check and rewrite it are everywhere. The price, no comments, is paid by docs/configuration.md,
// which explains every field with an example.
package configfile
