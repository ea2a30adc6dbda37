// Package approver decides kubelet certificate signing requests. It is pure
// policy: a CSR, the facts a reconciler gathered about it (its Node, a
// SubjectAccessReview answer, its sibling CSRs, DNS answers) and a Policy go
// in, a Decision (approve, deny, retry later, or leave alone) comes out. It
// never talks to the API server and never signs.
//
// The flow for one CSR is Read (parse the request, bounded), NewReview
// (every rule that needs no facts, the signature last, once), Plan (the
// facts a cache answers), gather them, then Evaluate, gathering whatever
// fact a Decision reports Missing and evaluating again until none is.
package approver
