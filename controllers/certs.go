package controllers

import (
	"bytes"
	"encoding/asn1"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"time"

	"github.com/nodecsr/kubelet-csr-controller/approver"
)

// leafTBS is the start of the first certificate in a PEM bundle (the leaf):
// Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version,
// serialNumber, signature, issuer, validity, subject, ... }, ... }. Reading
// only this much is far cheaper than a full parse, and the cleaner and the
// cache index read every issued CSR.
type leafTBS struct {
	TBS struct {
		Raw      asn1.RawContent
		Version  int `asn1:"optional,explicit,default:0,tag:0"`
		Serial   asn1.RawValue
		SigAlg   asn1.RawValue
		Issuer   asn1.RawValue
		Validity struct{ NotBefore, NotAfter time.Time }
		Subject  asn1.RawValue
	}
}

func parseLeafTBS(pemBytes []byte) (*leafTBS, error) {
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	var c leafTBS
	if _, err := asn1.Unmarshal(block.Bytes, &c); err != nil {
		return nil, fmt.Errorf("parse certificate: %w", err)
	}
	return &c, nil
}

// certificateNotAfter returns the expiry of the leaf certificate, from its
// PEM or from the cache's summary of it.
func certificateNotAfter(cert []byte) (time.Time, error) {
	if notAfter, _, ok := parseCertificateSummary(cert); ok {
		return notAfter, nil
	}
	c, err := parseLeafTBS(cert)
	if err != nil {
		return time.Time{}, err
	}
	return c.TBS.Validity.NotAfter, nil
}

// certificateCommonName returns the subject CommonName of the leaf
// certificate, from its PEM or from the cache's summary of it, or "".
func certificateCommonName(cert []byte) string {
	if _, cn, ok := parseCertificateSummary(cert); ok {
		return cn
	}
	c, err := parseLeafTBS(cert)
	if err != nil {
		return ""
	}
	return approver.CommonNameOfName(c.TBS.Subject.FullBytes)
}

// A certificate summary is what the cache keeps of an issued CSR's
// certificate (slimCSR) instead of its PEM: all that is read of it is when
// the leaf expires (the cleaner, the start-up taint) and its subject
// CommonName (the node index). It is the marker, the leaf's NotAfter in
// Unix seconds (8 bytes, big-endian; certificates have second resolution),
// and the CommonName: some 30 bytes instead of about 700. It is never
// written back: it is not PEM, so the API server would refuse it, and it
// starts with a NUL, so no certificate the API server accepted looks like
// it.
var summaryMarker = []byte("\x00kcc-summary:")

// summarizeCertificate returns the summary of the PEM certificate, or
// false when its leaf does not parse (the cache then keeps the PEM, and
// readers treat it as they would from the API server).
func summarizeCertificate(pemBytes []byte) ([]byte, bool) {
	c, err := parseLeafTBS(pemBytes)
	if err != nil {
		return nil, false
	}
	cn := approver.CommonNameOfName(c.TBS.Subject.FullBytes)
	out := make([]byte, 0, len(summaryMarker)+8+len(cn))
	out = append(out, summaryMarker...)
	out = binary.BigEndian.AppendUint64(out, uint64(c.TBS.Validity.NotAfter.Unix())) //nolint:gosec // a certificate's NotAfter is after 1970
	return append(out, cn...), true
}

func parseCertificateSummary(b []byte) (notAfter time.Time, commonName string, ok bool) {
	rest, found := bytes.CutPrefix(b, summaryMarker)
	if !found || len(rest) < 8 {
		return time.Time{}, "", false
	}
	return time.Unix(int64(binary.BigEndian.Uint64(rest)), 0).UTC(), string(rest[8:]), true //nolint:gosec // written by summarizeCertificate
}
