package controllers

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/go-logr/logr"
	certificatesv1 "k8s.io/api/certificates/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/event"

	"github.com/nodecsr/kubelet-csr-controller/approver"
	"github.com/nodecsr/kubelet-csr-controller/signer"
)

// signerTable is the one view of the configured signers: each one's
// settings and CA loader, the loaders once each (signers that share CA
// files share a loader), and the signers whose CSRs this controller
// manages (signs, or approves).
type signerTable struct {
	// names are the configured signers, in configuration order.
	names   []string
	configs map[string]signer.Config
	cas     map[string]*signer.FileCA
	loaders []*signer.FileCA
	// managed are the signers this controller signs or approves: the
	// cleaner's, and the pending metrics'.
	managed []string
}

// newSignerTable builds the table of the configured signers under policy
// p, without loading any CA yet.
func newSignerTable(configs []signer.Config, p *approver.Policy) *signerTable {
	t := &signerTable{configs: map[string]signer.Config{}, cas: map[string]*signer.FileCA{}}
	for _, c := range configs {
		t.names = append(t.names, c.Name)
		t.configs[c.Name] = c
	}
	t.managed = slices.Clone(t.names)
	for _, name := range []string{certificatesv1.KubeAPIServerClientKubeletSignerName, certificatesv1.KubeletServingSignerName} {
		if p.Handles(approver.KindOf(name)) && !slices.Contains(t.managed, name) {
			t.managed = append(t.managed, name)
		}
	}
	return t
}

// signs reports whether csr's signer is configured, with its settings.
func (t *signerTable) signs(csr *certificatesv1.CertificateSigningRequest) (signer.Config, bool) {
	c, ok := t.configs[csr.Spec.SignerName]
	return c, ok
}

// loadCAs creates one FileCA per set of CA files and loads each once. A
// load reports to m and logger; a new CA is announced on reloaded, so that
// the signer retries the CSRs waiting for it, and on changed, so that the
// trust bundles follow it.
func (t *signerTable) loadCAs(m *Metrics, reloaded chan<- event.GenericEvent, changed chan<- struct{}, logger logr.Logger) {
	type files struct{ cert, key, trust string }
	users := map[files][]string{}
	var order []files
	for _, name := range t.names {
		c := t.configs[name]
		f := files{c.CertFile, c.KeyFile, c.TrustFile}
		if _, seen := users[f]; !seen {
			order = append(order, f)
		}
		users[f] = append(users[f], name)
	}
	for _, f := range order {
		names := users[f]
		ca := signer.NewFileCA(f.cert, f.key, func(ca *signer.CA, err error) {
			if err != nil {
				for _, n := range names {
					m.CAReloadFailures.WithLabelValues(n).Inc()
				}
				logger.Error(err, "CA files could not be loaded; the previous CA stays in use", "certFile", f.cert, "keyFile", f.key, "signers", names, "inUse", ca != nil)
				return
			}
			logger.Info("CA loaded", "certFile", f.cert, "subject", ca.Cert.Subject.String(), "notAfter", ca.Cert.NotAfter, "trustFile", f.trust, "next", len(ca.Next), "signers", names)
			select {
			case changed <- struct{}{}:
			default: // a publication is already due
			}
			// One event per CA: the signer re-lists the waiting CSRs of all
			// its signers for any of them.
			select {
			case reloaded <- event.GenericEvent{Object: &metav1.PartialObjectMetadata{ObjectMeta: metav1.ObjectMeta{Name: names[0]}}}:
			default: // a reload is already queued, and covers this one
			}
		})
		ca.TrustFile = f.trust
		_ = ca.Reload() // reported through the callback
		t.loaders = append(t.loaders, ca)
		for _, n := range names {
			t.cas[n] = ca
		}
	}
}

// ready is a readiness check: every signer has a CA that can sign now.
func (t *signerTable) ready(now func() time.Time) func(*http.Request) error {
	return func(*http.Request) error {
		for _, name := range t.names {
			f := t.cas[name]
			ca := f.Current()
			if ca == nil {
				return fmt.Errorf("signer %s: no CA loaded from %s", name, f.CertFile)
			}
			if err := ca.Usable(now()); err != nil {
				return fmt.Errorf("signer %s: %w", name, err)
			}
		}
		return nil
	}
}

// caRunner watches the CA files on every replica, leader or not, so that a
// standby is ready to sign the moment it takes over.
type caRunner struct {
	files  []*signer.FileCA
	poll   time.Duration
	logger logr.Logger
}

func (c *caRunner) Start(ctx context.Context) error {
	var wg sync.WaitGroup
	for _, f := range c.files {
		wg.Go(func() {
			f.Run(ctx, c.poll, func(err error) {
				c.logger.Error(err, "CA files are not watched; changes are picked up by polling only", "certFile", f.CertFile, "keyFile", f.KeyFile, "pollInterval", c.poll)
			})
		})
	}
	wg.Wait()
	return nil
}

// NeedLeaderElection is false: every replica keeps its CA current.
func (c *caRunner) NeedLeaderElection() bool { return false }
