package main

import (
	"context"
	"flag"
	"fmt"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	certificatesv1 "k8s.io/api/certificates/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/workqueue"

	"github.com/nodecsr/kubelet-csr-controller/approver"
	"github.com/nodecsr/kubelet-csr-controller/signer"
)

// idealLoop is the yardstick: a loop that makes the same API calls a
// controller must make for each CSR (a SubjectAccessReview for client CSRs,
// the /approval write, the /status write) with no policy, no Events, no
// metrics, no client-side rate limit, and without waiting for the watch
// between approving and signing. It runs as its own process so that its CPU
// and memory are measured like a contender's.
func idealLoop(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("ideal-loop", flag.ContinueOnError)
	kubeconfig := fs.String("kubeconfig", "", "")
	caCert := fs.String("ca-cert", "", "")
	caKey := fs.String("ca-key", "", "")
	workers := fs.Int("workers", 16, "")
	if err := fs.Parse(args); err != nil {
		return err
	}
	rc, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		return err
	}
	cs, err := kubernetes.NewForConfig(unlimited(rc))
	if err != nil {
		return err
	}
	ca, err := signer.LoadCA(*caCert, *caKey)
	if err != nil {
		return err
	}
	factory := informers.NewSharedInformerFactory(cs, 0)
	inf := factory.Certificates().V1().CertificateSigningRequests()
	q := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[string]())
	enqueue := func(obj any) {
		if csr, ok := obj.(*certificatesv1.CertificateSigningRequest); ok && !approver.StateOf(csr).Issued {
			q.Add(csr.Name)
		}
	}
	if _, err := inf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: enqueue, UpdateFunc: func(_, n any) { enqueue(n) }}); err != nil {
		return err
	}
	factory.Start(ctx.Done())
	factory.WaitForCacheSync(ctx.Done())
	for range *workers {
		go func() {
			for {
				name, shutdown := q.Get()
				if shutdown {
					return
				}
				if err := handle(ctx, cs, inf.Lister().Get, ca, name); err != nil {
					q.AddRateLimited(name)
				} else {
					q.Forget(name)
				}
				q.Done(name)
			}
		}()
	}
	<-ctx.Done()
	q.ShutDown()
	return nil
}

func handle(ctx context.Context, cs kubernetes.Interface, get func(string) (*certificatesv1.CertificateSigningRequest, error), ca *signer.CA, name string) error {
	cached, err := get(name)
	if err != nil {
		return nil //nolint:nilerr // deleted
	}
	csr := cached.DeepCopy()
	s := approver.StateOf(csr)
	if s.Issued || s.Denied {
		return nil
	}
	if !s.Approved {
		if csr.Spec.SignerName == certificatesv1.KubeAPIServerClientKubeletSignerName {
			sar := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
				User: csr.Spec.Username, UID: csr.Spec.UID, Groups: csr.Spec.Groups,
				ResourceAttributes: &authorizationv1.ResourceAttributes{Group: "certificates.k8s.io", Resource: "certificatesigningrequests", Verb: "create", Subresource: "nodeclient"},
			}}
			if _, err := cs.AuthorizationV1().SubjectAccessReviews().Create(ctx, sar, metav1.CreateOptions{}); err != nil {
				return err
			}
		}
		csr.Status.Conditions = append(csr.Status.Conditions, certificatesv1.CertificateSigningRequestCondition{
			Type: certificatesv1.CertificateApproved, Status: corev1.ConditionTrue, Reason: "IdealLoop", Message: "approved by the ideal loop",
		})
		if csr, err = cs.CertificatesV1().CertificateSigningRequests().UpdateApproval(ctx, name, csr, metav1.UpdateOptions{}); err != nil {
			return err
		}
	}
	issued, err := signer.Sign(ca, csr, signer.Config{Name: csr.Spec.SignerName, Duration: 8760 * time.Hour, MinDuration: 10 * time.Minute, Backdate: 5 * time.Minute}, time.Now())
	if err != nil {
		return fmt.Errorf("sign %s: %w", name, err)
	}
	csr.Status.Certificate = issued.PEM
	_, err = cs.CertificatesV1().CertificateSigningRequests().UpdateStatus(ctx, csr, metav1.UpdateOptions{})
	return err
}
