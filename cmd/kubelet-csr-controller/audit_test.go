package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nodecsr/kubelet-csr-controller/test/pki"
)

// serveTLS serves cert on a loopback port until the test ends and returns
// the port.
func serveTLS(t *testing.T, cert tls.Certificate) int {
	t.Helper()
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.(*tls.Conn).HandshakeContext(context.Background())
			}()
		}
	}()
	return l.Addr().(*net.TCPAddr).Port
}

func TestAuditReportsEachNodesServedCertificate(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	now := pki.Now()
	ca := pki.MustCA(t, pki.CAOptions{NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour)})
	other := pki.MustCA(t, pki.CAOptions{NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour)})
	caFile, keyFile := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key")
	writeFile(t, caFile, string(ca.CertPEM))
	writeFile(t, keyFile, "not read by audit")
	cfg := filepath.Join(dir, "config.yaml")
	writeFile(t, cfg, fmt.Sprintf("apiVersion: config.nodecsr.io/v1alpha1\nkind: ControllerConfig\nca: {certFile: %s, keyFile: %s}\n", caFile, keyFile))

	// Three kubelets on loopback: a good one, one with another CA's
	// certificate, one whose certificate names another node.
	serving := func(c *pki.CA, cn string) tls.Certificate {
		cert, err := c.ServingCert(cn, nil, pki.IPs("127.0.0.1"), now.Add(-time.Minute), now.Add(time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		return cert
	}
	var items []string
	for _, n := range []struct {
		name string
		cert tls.Certificate
	}{
		{"good", serving(ca, "system:node:good")},
		{"foreign", serving(other, "system:node:foreign")},
		{"misnamed", serving(ca, "system:node:someone-else")},
	} {
		items = append(items, fmt.Sprintf("- {apiVersion: v1, kind: Node, metadata: {name: %s}, status: {addresses: [{type: InternalIP, address: 127.0.0.1}], daemonEndpoints: {kubeletEndpoint: {Port: %d}}}}", n.name, serveTLS(t, n.cert)))
	}
	items = append(items, "- {apiVersion: v1, kind: Node, metadata: {name: portless}, status: {addresses: [{type: InternalIP, address: 127.0.0.1}]}}")
	nodes := filepath.Join(dir, "nodes.yaml")
	writeFile(t, nodes, "apiVersion: v1\nkind: List\nitems:\n"+strings.Join(items, "\n")+"\n")

	var out bytes.Buffer
	err := runAudit(context.Background(), []string{"--config", cfg, "--node", nodes}, &out, pki.Now)
	if exitCode(err) != exitNotAllow {
		t.Errorf("want exit %d with failing nodes, got %v", exitNotAllow, err)
	}
	for _, want := range []string{"good      ok  ", "foreign   untrusted", "misnamed  wrong_common_name", "portless  no_endpoint", "4 nodes: ok 1 no_endpoint 1 untrusted 1 wrong_common_name 1"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the report lacks %q:\n%s", want, out.String())
		}
	}
}
