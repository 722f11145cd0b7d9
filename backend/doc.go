// Package backend is the reference backend smartproxy-api: the HTTPS API of
// contract v1 (package smartproxy/api/apiv1) that proxy clients poll for their
// configuration and report to, on top of the SQLite store in package
// smartproxy/backend/store, with the jobs that run beside it.
//
// A Server answers the contract's endpoints (bearer-token authentication,
// bounded request bodies, strict JSON, ETags and long polls for the
// configuration), and its Run method owns every goroutine of the backend:
//
//   - the HTTPS server;
//   - the revision poller, which notices changes made by the admin CLI in
//     another process and wakes long polls within about 200 ms;
//   - the CRL downloader (Fetcher), which downloads the CRL of every known
//     distribution point with If-None-Match / If-Modified-Since, verifies it
//     against the trusted CAs and stores it;
//   - the event processor (Escalator), which matches new events against the
//     log-ignore rules valid now and runs the event script for the others;
//   - the ignore-rule expiry job, which removes expired rules and logs each
//     removal.
//
// The package never imports the proxy client or server packages, nor the
// API client: it meets them only through the HTTP contract.
package backend
