// Package controllers is the Kubernetes plumbing of kubelet-csr-controller:
// it watches CSRs and Nodes, gathers the facts the approver asks for, calls
// the pure approver and signer packages, writes /approval and /status,
// records Events and metrics, and deletes old CSRs.
//
// Files by job:
//
//	manager.go            the controller-runtime manager (the binary's and the tests')
//	setup.go              wiring: indexes, CA loaders, reconcilers, collectors
//	signers.go            the table of configured signers and their CA loaders
//	facts.go              the one loop that gathers an approver's facts
//	authorization.go      SubjectAccessReviews, their cache, API server readiness
//	approver_controller.go  the approver reconciler: decide, act, order per node
//	signer_controller.go  the signer reconciler
//	cleaner_controller.go the cleaner
//	csrstate.go           what a CSR is and the one path that writes conditions
//	reconcile.go          the reconcile frame both reconcilers share
//	queue.go              work queues, priorities, the CSR event handler
//	writeguard.go         never act twice on a cache that lags a write
//	certs.go              cheap reads of issued certificates and requests
//	index.go, cache.go    cache indexes and what the cache keeps
//	events.go, metrics.go Events and Prometheus metrics
//	recent.go             a bounded set of recent digests
package controllers
