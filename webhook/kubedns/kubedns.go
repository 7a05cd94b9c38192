// Package kubedns follows the kube-dns Service's clusterIPs with an informer,
// so that new pods get the current addresses without a restart.
package kubedns

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/netip"
	"slices"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
)

// ErrUnknown is returned by Ready while no kube-dns address is known.
var ErrUnknown = errors.New("kube-dns address unknown")

// Watcher holds the current kube-dns addresses: either fixed, or followed
// from a Service with an informer.
type Watcher struct {
	client          kubernetes.Interface
	namespace, name string
	ips             atomic.Pointer[[]string]
}

// New returns a Watcher following Service namespace/name through client.
// Its addresses are unknown until Start has seen the Service.
func New(client kubernetes.Interface, namespace, name string) *Watcher {
	return &Watcher{client: client, namespace: namespace, name: name}
}

// Static returns a Watcher with fixed addresses; Start only waits for the
// context to end.
func Static(ips []string) *Watcher {
	w := &Watcher{}
	ips = slices.Clone(ips)
	w.ips.Store(&ips)
	return w
}

// IPs returns the current kube-dns addresses (nil when unknown). The caller
// must not modify the slice.
func (w *Watcher) IPs() []string {
	if p := w.ips.Load(); p != nil {
		return *p
	}
	return nil
}

// Ready is a healthz checker: it fails while no address is known.
func (w *Watcher) Ready(_ *http.Request) error {
	if len(w.IPs()) == 0 {
		if w.client == nil {
			return ErrUnknown
		}
		return fmt.Errorf("%w: service %s/%s not seen or has no clusterIP", ErrUnknown, w.namespace, w.name)
	}
	return nil
}

// NeedLeaderElection tells the controller-runtime manager that every replica
// runs the watcher.
func (w *Watcher) NeedLeaderElection() bool { return false }

// Start runs the informer until ctx is done (a controller-runtime Runnable).
func (w *Watcher) Start(ctx context.Context) error {
	if w.client == nil {
		<-ctx.Done()
		return nil
	}
	factory := informers.NewSharedInformerFactoryWithOptions(w.client, 10*time.Minute,
		informers.WithNamespace(w.namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", w.name).String()
		}))
	informer := factory.Core().V1().Services().Informer()
	log := logf.FromContext(ctx).WithName("kubedns")
	update := func() {
		ips := w.lookup(informer.GetStore())
		if old := w.IPs(); !slices.Equal(old, ips) {
			log.Info("kube-dns addresses changed", "service", w.namespace+"/"+w.name, "old", old, "new", ips)
		}
		w.ips.Store(&ips)
	}
	if _, err := informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { update() },
		UpdateFunc: func(any, any) { update() },
		DeleteFunc: func(any) { update() },
	}); err != nil {
		return fmt.Errorf("kube-dns informer: %w", err)
	}
	factory.Start(ctx.Done())
	<-ctx.Done()
	factory.Shutdown()
	return nil
}

func (w *Watcher) lookup(store cache.Store) []string {
	obj, ok, err := store.GetByKey(w.namespace + "/" + w.name)
	if err != nil || !ok {
		return nil
	}
	svc, ok := obj.(*corev1.Service)
	if !ok {
		return nil
	}
	return ServiceIPs(svc)
}

// ServiceIPs returns the valid cluster IPs of svc (clusterIPs, or clusterIP
// on old objects), without "None" and duplicates.
func ServiceIPs(svc *corev1.Service) []string {
	candidates := svc.Spec.ClusterIPs
	if len(candidates) == 0 && svc.Spec.ClusterIP != "" {
		candidates = []string{svc.Spec.ClusterIP}
	}
	var out []string
	for _, ip := range candidates {
		addr, err := netip.ParseAddr(ip)
		if err != nil || addr.Zone() != "" || slices.Contains(out, ip) {
			continue
		}
		out = append(out, ip)
	}
	return out
}
