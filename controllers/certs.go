package controllers

import (
	"encoding/asn1"
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

// certificateNotAfter returns the expiry of the leaf certificate.
func certificateNotAfter(pemBytes []byte) (time.Time, error) {
	c, err := parseLeafTBS(pemBytes)
	if err != nil {
		return time.Time{}, err
	}
	return c.TBS.Validity.NotAfter, nil
}

// certificateCommonName returns the subject CommonName of the leaf
// certificate, or "".
func certificateCommonName(pemBytes []byte) string {
	c, err := parseLeafTBS(pemBytes)
	if err != nil {
		return ""
	}
	return approver.CommonNameOfName(c.TBS.Subject.FullBytes)
}
