package signer

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
)

// FileCA serves a CA from a certificate file and a key file, and reloads it
// when they change, without a restart. A load that fails (an unreadable file,
// a key that does not match) keeps the previous CA.
//
// Changes are noticed through file system events on the files' directories
// (which also catches the symlink swap of a Kubernetes Secret volume) and,
// as a fallback for file systems without events, by polling.
type FileCA struct {
	CertFile, KeyFile string
	// TrustFile, when set, holds CA certificates published beside the
	// signing CA but never used to sign (CA.Next); it is read with the others.
	TrustFile string

	current atomic.Pointer[CA]

	mu       sync.Mutex // serialises loads and guards lastErr
	lastErr  string
	onReload func(ca *CA, err error)
}

// NewFileCA returns a FileCA with nothing loaded yet. onReload, if not nil,
// is called after each load that changes something: a new CA (err nil), or a
// failure (ca is the CA still in use, possibly nil) that differs from the
// previous outcome, so that a broken file is reported once, not on every
// poll.
func NewFileCA(certFile, keyFile string, onReload func(ca *CA, err error)) *FileCA {
	return &FileCA{CertFile: certFile, KeyFile: keyFile, onReload: onReload}
}

// Current returns the CA in use, or nil when none has loaded yet.
func (f *FileCA) Current() *CA { return f.current.Load() }

// Pool returns the current CA as the roots that the certificates it issues
// verify against, or nil while none is loaded.
func (f *FileCA) Pool() *x509.CertPool {
	ca := f.Current()
	if ca == nil {
		return nil
	}
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	for _, a := range ca.Anchors() {
		p.AddCert(a) // the root, and the next CA of a rotation
	}
	return p
}

// Reload reads the files now. It returns the load error, if any; the CA in
// use changes only on success.
func (f *FileCA) Reload() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	ca, err := f.load()
	if err != nil {
		if msg := err.Error(); msg != f.lastErr {
			f.lastErr = msg
			f.report(f.current.Load(), err)
		}
		return err
	}
	prev := f.current.Load()
	f.lastErr = ""
	if prev != nil && prev.digest == ca.digest {
		return nil
	}
	f.current.Store(ca)
	f.report(ca, nil)
	return nil
}

// load reads the CA files and the trust file.
func (f *FileCA) load() (*CA, error) {
	ca, err := LoadCA(f.CertFile, f.KeyFile)
	if err != nil || f.TrustFile == "" {
		return ca, err
	}
	trustPEM, err := os.ReadFile(f.TrustFile)
	if err != nil {
		return nil, fmt.Errorf("read the trust file: %w", err)
	}
	if ca.Next, err = ParseTrust(trustPEM); err != nil {
		return nil, err
	}
	ca.digest = sha256.Sum256(append(ca.digest[:], trustPEM...))
	return ca, nil
}

func (f *FileCA) report(ca *CA, err error) {
	if f.onReload != nil {
		f.onReload(ca, err)
	}
}

// debounce gathers the burst of events one file update makes into one load.
const debounce = 100 * time.Millisecond

// Run watches the files until ctx ends, reloading on change and every poll
// interval. It returns only when ctx is done. When the files cannot be
// watched (no inotify instance left, a directory missing), Run carries on
// by polling alone and tells watchFailed why.
func (f *FileCA) Run(ctx context.Context, poll time.Duration, watchFailed func(error)) {
	events, closeWatcher, err := f.watch()
	if err != nil {
		watchFailed(err)
	}
	defer closeWatcher()
	// Catch any change made between the first load and the watch.
	_ = f.Reload()

	ticker := time.NewTicker(poll)
	defer ticker.Stop()
	timer := time.NewTimer(debounce)
	timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case _, ok := <-events:
			if !ok {
				events = nil // the watcher broke; polling carries on
				watchFailed(errors.New("the file system watcher stopped"))
				continue
			}
			timer.Reset(debounce)
		case <-timer.C:
			_ = f.Reload() // reported through onReload
		case <-ticker.C:
			_ = f.Reload()
		}
	}
}

// watch subscribes to the files' directories. Without a watcher it returns
// a nil channel and the reason, and Run relies on polling alone.
func (f *FileCA) watch() (<-chan fsnotify.Event, func(), error) {
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, func() {}, fmt.Errorf("create a file system watcher: %w", err)
	}
	dirs := map[string]bool{filepath.Dir(f.CertFile): true, filepath.Dir(f.KeyFile): true}
	if f.TrustFile != "" {
		dirs[filepath.Dir(f.TrustFile)] = true
	}
	for d := range dirs {
		if err := w.Add(d); err != nil {
			_ = w.Close()
			return nil, func() {}, fmt.Errorf("watch directory %s: %w", d, err)
		}
	}
	// Errors are not actionable here; drain them so the watcher never blocks.
	go func() {
		for range w.Errors { //nolint:revive // draining
		}
	}()
	return w.Events, func() { _ = w.Close() }, nil
}
