// Package signer issues certificates for approved CSRs. It is pure crypto: CA
// loading and hot reload from files, per-signer validation, the lifetime
// arithmetic and the certificate template. It never talks to the API server.
package signer
