// Package approver decides kubelet certificate signing requests. It is pure
// policy: a CSR, the facts a reconciler gathered about it (its Node, a
// SubjectAccessReview answer, its sibling CSRs, DNS answers) and a Policy go
// in, a Decision (approve, deny, retry later, or leave alone) comes out. It
// never talks to the API server and never signs.
//
// The flow for one CSR is Read (parse and verify the request once), PlanFor
// (which facts are needed), gather those facts, then Evaluate.
package approver
