package main

import (
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
)

func TestReadyLeaderIsTheReadyPodThatHoldsAFreshLease(t *testing.T) {
	t.Parallel()
	now := time.Now()
	lease := func(holder string, renewed time.Time) *coordinationv1.Lease {
		return &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "kubelet-csr-controller"}, Spec: coordinationv1.LeaseSpec{
			HolderIdentity: ptr.To(holder), LeaseDurationSeconds: ptr.To[int32](15), RenewTime: &metav1.MicroTime{Time: renewed},
		}}
	}
	pod := func(name, node string, hostNetwork, ready bool) corev1.Pod {
		status := corev1.ConditionFalse
		if ready {
			status = corev1.ConditionTrue
		}
		return corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec:       corev1.PodSpec{NodeName: node, HostNetwork: hostNetwork},
			Status:     corev1.PodStatus{Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: status}}},
		}
	}
	pods := []corev1.Pod{pod("kcc-a", "node-1", false, true), pod("kcc-b", "node-2", false, false)}
	tests := []struct {
		name    string
		lease   *coordinationv1.Lease
		pods    []corev1.Pod
		want    string
		wantErr string
	}{
		{"the ready pod holding a fresh Lease leads", lease("kcc-a_0f1e", now.Add(-5*time.Second)), pods, "kcc-a", ""},
		{"a leader that is not ready is named", lease("kcc-b_77aa", now), pods, "", "the leader kcc-b is not ready"},
		{"an expired Lease has no leader", lease("kcc-a_0f1e", now.Add(-time.Minute)), pods, "", "has expired"},
		{"a Lease without a holder has no leader", lease("", now), pods, "", "has no holder"},
		{"a holder that is none of the release's pods is named", lease("other_1", now), pods, "", "held by other_1, which is none of the pods [kcc-a kcc-b]"},
		{"with hostNetwork the holder is the node's host name", lease("node-3_9", now), []corev1.Pod{pod("kcc-c", "node-3", true, true)}, "kcc-c", ""},
		{"a node name does not match a pod on the pod network", lease("node-1_9", now), pods, "", "none of the pods"},
		{"without leader election any ready pod will do", nil, pods, "kcc-a", ""},
		{"without leader election and no ready pod there is none", nil, pods[1:], "", "none of 1 pods is ready"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := readyLeader(tt.lease, tt.pods, now)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got.Name != tt.want {
				t.Fatalf("leader %v (error %v), want %s", got, err, tt.want)
			}
		})
	}
}
