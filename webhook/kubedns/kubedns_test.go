package kubedns

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

func service(ns, name string, ips ...string) *corev1.Service {
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       corev1.ServiceSpec{ClusterIPs: ips},
	}
	if len(ips) > 0 {
		s.Spec.ClusterIP = ips[0]
	}
	return s
}

// waitFor polls until the watcher reports want (an eventual condition of the
// informer, not a speed check).
func waitFor(t *testing.T, w *Watcher, want []string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !slices.Equal(w.IPs(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("IPs = %v, want %v", w.IPs(), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestWatcherFollowsService(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	client := fake.NewClientset(service("kube-system", "kube-dns", "10.96.0.10"), service("kube-system", "other", "10.96.0.99"))
	w := New(client, "kube-system", "kube-dns")
	if err := w.Ready(nil); !errors.Is(err, ErrUnknown) {
		t.Fatalf("Ready before start = %v, want ErrUnknown", err)
	}
	done := make(chan error, 1)
	go func() { done <- w.Start(ctx) }()

	waitFor(t, w, []string{"10.96.0.10"})
	if err := w.Ready(nil); err != nil {
		t.Fatalf("Ready = %v", err)
	}
	svcs := client.CoreV1().Services("kube-system")

	// Dual stack update.
	if _, err := svcs.Update(ctx, service("kube-system", "kube-dns", "10.96.0.10", "fd00::a"), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, w, []string{"10.96.0.10", "fd00::a"})

	// Another service changing does not matter.
	if _, err := svcs.Update(ctx, service("kube-system", "other", "10.96.0.98"), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	// Deleted: unknown and not ready.
	if err := svcs.Delete(ctx, "kube-dns", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, w, nil)
	if err := w.Ready(nil); !errors.Is(err, ErrUnknown) {
		t.Fatalf("Ready after delete = %v, want ErrUnknown", err)
	}

	// Recreated with another IP: followed.
	if _, err := svcs.Create(ctx, service("kube-system", "kube-dns", "10.100.0.10"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, w, []string{"10.100.0.10"})

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Start returned %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Start did not return after cancel")
	}
}

func TestStatic(t *testing.T) {
	w := Static([]string{"10.0.0.10"})
	if got := w.IPs(); !slices.Equal(got, []string{"10.0.0.10"}) {
		t.Fatalf("IPs = %v", got)
	}
	if err := w.Ready(nil); err != nil {
		t.Fatal(err)
	}
	if err := Static(nil).Ready(nil); !errors.Is(err, ErrUnknown) {
		t.Fatalf("empty static Ready = %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := w.Start(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestServiceIPs(t *testing.T) {
	for _, tc := range []struct {
		name string
		svc  *corev1.Service
		want []string
	}{
		{name: "single", svc: service("a", "b", "10.0.0.1"), want: []string{"10.0.0.1"}},
		{name: "dual", svc: service("a", "b", "10.0.0.1", "fd00::1"), want: []string{"10.0.0.1", "fd00::1"}},
		{name: "headless", svc: service("a", "b", "None"), want: nil},
		{name: "legacy clusterIP only", svc: &corev1.Service{Spec: corev1.ServiceSpec{ClusterIP: "10.0.0.2"}}, want: []string{"10.0.0.2"}},
		{name: "none", svc: &corev1.Service{}, want: nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := ServiceIPs(tc.svc); !slices.Equal(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

// TestWatcherListsOnlyItsService checks the informer lists and watches with
// fieldSelector metadata.name=<name> in the Service's namespace: RBAC with
// resourceNames (the manifests' least-privilege Role) only allows that.
func TestWatcherListsOnlyItsService(t *testing.T) {
	ctx := t.Context()
	client := fake.NewClientset(service("dns", "coredns", "10.0.0.10"))
	type seen struct{ verb, ns, fields string }
	calls := make(chan seen, 16)
	record := func(action k8stesting.Action) {
		var fields string
		switch a := action.(type) {
		case k8stesting.ListAction:
			fields = a.GetListRestrictions().Fields.String()
		case k8stesting.WatchAction:
			fields = a.GetWatchRestrictions().Fields.String()
		}
		select {
		case calls <- seen{action.GetVerb(), action.GetNamespace(), fields}:
		default:
		}
	}
	client.PrependReactor("list", "services", func(action k8stesting.Action) (bool, runtime.Object, error) {
		record(action)
		return false, nil, nil
	})
	client.PrependWatchReactor("services", func(action k8stesting.Action) (bool, watch.Interface, error) {
		record(action)
		return false, nil, nil
	})
	w := New(client, "dns", "coredns")
	go func() { _ = w.Start(ctx) }()
	waitFor(t, w, []string{"10.0.0.10"})
	for _, verb := range []string{"list", "watch"} {
		select {
		case c := <-calls:
			if c.verb != verb || c.ns != "dns" || c.fields != "metadata.name=coredns" {
				t.Errorf("%s call: %+v, want %s in namespace dns with fieldSelector metadata.name=coredns", verb, c, verb)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no %s call seen", verb)
		}
	}
}
