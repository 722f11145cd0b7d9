// Package configspec is the source-neutral form of smartproxy-client's configuration and the one
// builder that checks it and turns it into a client.Snapshot.
//
// A configuration reaches the client from one of two sources: the local JSON file (package
// configfile, which reads the files the document names) or the backend API (package
// backendsync, which receives certificates and keys as PEM text and CRLs as files it
// downloaded). Both fill a Spec — contents, not paths — and call Build, so that one set of checks
// decides what the DMZ server is sent, whatever the source.
//
// Every problem is reported with the path of its field in the source's own terms (the Field of
// a Blob, e.g. "company_certificate" for the file and "company_identity.certificate_chain_pem"
// for the backend document), and Build reports all problems at once.
package configspec
