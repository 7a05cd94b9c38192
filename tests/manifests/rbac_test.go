package manifests

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	admv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/nodelocaldns/nodelocaldns/tests/kubeapi"
	"github.com/nodelocaldns/nodelocaldns/webhook/app"
)

// TestWebhookRunsWithRenderedRBAC applies the builtin-certs overlay's RBAC to
// a real kube-apiserver and runs the real webhook with the Deployment's own
// arguments as its ServiceAccount (impersonated): it must create its
// certificates, patch its caBundle and inject a pod with exactly these
// permissions, and be refused what it does not need.
func TestWebhookRunsWithRenderedRBAC(t *testing.T) {
	env := kubeapi.StartT(t)
	admin, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	r := renderRepo(t, "overlays/builtin-certs")
	dep := get[*appsv1.Deployment](t, r, webhookName)
	port := freeLoopbackPort(t)

	// The overlay's namespace, ServiceAccount, RBAC and webhook configuration
	// (pointed at the loopback webhook instead of the Service).
	for _, ns := range all[*corev1.Namespace](r) {
		mustCreate(t, func() error {
			_, err := admin.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{})
			return err
		})
	}
	for _, sa := range all[*corev1.ServiceAccount](r) {
		mustCreate(t, func() error {
			_, err := admin.CoreV1().ServiceAccounts(sa.Namespace).Create(ctx, sa, metav1.CreateOptions{})
			return err
		})
	}
	// The shipped (empty) certificate Secret: the webhook may not create it.
	for _, o := range all[*corev1.Secret](r) {
		mustCreate(t, func() error {
			_, err := admin.CoreV1().Secrets(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
			return err
		})
	}
	for _, o := range all[*rbacv1.Role](r) {
		mustCreate(t, func() error {
			_, err := admin.RbacV1().Roles(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
			return err
		})
	}
	for _, o := range all[*rbacv1.RoleBinding](r) {
		mustCreate(t, func() error {
			_, err := admin.RbacV1().RoleBindings(o.Namespace).Create(ctx, o, metav1.CreateOptions{})
			return err
		})
	}
	for _, o := range all[*rbacv1.ClusterRole](r) {
		mustCreate(t, func() error {
			_, err := admin.RbacV1().ClusterRoles().Create(ctx, o, metav1.CreateOptions{})
			return err
		})
	}
	for _, o := range all[*rbacv1.ClusterRoleBinding](r) {
		mustCreate(t, func() error {
			_, err := admin.RbacV1().ClusterRoleBindings().Create(ctx, o, metav1.CreateOptions{})
			return err
		})
	}
	cfg := get[*admv1.MutatingWebhookConfiguration](t, r, webhookName)
	url := fmt.Sprintf("https://localhost:%d/mutate-v1-pod", port)
	cfg.Webhooks[0].ClientConfig = admv1.WebhookClientConfig{URL: &url}
	mustCreate(t, func() error {
		_, err := admin.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, cfg, metav1.CreateOptions{})
		return err
	})
	mustCreate(t, func() error {
		_, err := admin.CoreV1().Services("kube-system").Create(ctx, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: "kube-dns", Namespace: "kube-system"},
			Spec:       corev1.ServiceSpec{ClusterIP: "10.96.0.10", Ports: []corev1.ServicePort{{Port: 53, Protocol: corev1.ProtocolUDP}}},
		}, metav1.CreateOptions{})
		return err
	})
	mustCreate(t, func() error {
		_, err := admin.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
			Name: "apps", Labels: map[string]string{"node-local-dns-injection": "enabled"}}}, metav1.CreateOptions{})
		return err
	})

	// The webhook as its ServiceAccount.
	sa := dep.Spec.Template.Spec.ServiceAccountName
	user := "system:serviceaccount:" + dep.Namespace + ":" + sa
	kubeconfig := impersonatingKubeconfig(t, env.KubeconfigPath, user, dep.Namespace)
	args := []string{}
	for _, a := range dep.Spec.Template.Spec.Containers[0].Args {
		switch {
		case strings.HasPrefix(a, "--cert-dir="), strings.HasPrefix(a, "--port="),
			strings.HasPrefix(a, "--health-probe-bind-address="), strings.HasPrefix(a, "--metrics-bind-address="):
			continue // local replacements below
		}
		args = append(args, a)
	}
	args = append(args,
		"--kubeconfig="+kubeconfig, "--cert-dir="+t.TempDir(), "--bind-address=127.0.0.1",
		"--port="+strconv.Itoa(port), "--health-probe-bind-address=0", "--metrics-bind-address=0",
		"--certs-dns-names=localhost", "--graceful-shutdown-timeout=2s")
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- app.Run(runCtx, args) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("webhook: %v", err)
		}
	}()

	deadline := time.Now().Add(90 * time.Second)
	for i := 0; ; i++ {
		pod, err := admin.CoreV1().Pods("apps").Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("p%d", i)},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "busybox"}}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if pod.Spec.DNSPolicy == corev1.DNSNone && pod.Spec.DNSConfig != nil && len(pod.Spec.DNSConfig.Nameservers) > 1 &&
			pod.Spec.DNSConfig.Nameservers[1] == "10.96.0.10" {
			t.Logf("pod %s injected by the webhook running as %s: nameservers %v", pod.Name, user, pod.Spec.DNSConfig.Nameservers)
			break
		}
		select {
		case err := <-done:
			t.Fatalf("webhook exited: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no pod injected within 90s with the rendered RBAC")
		}
		time.Sleep(300 * time.Millisecond)
	}

	// What the ServiceAccount must not do.
	as := rest.CopyConfig(env.Config)
	as.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + dep.Namespace, "system:authenticated"}}
	sac, err := kubernetes.NewForConfig(as)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		call func() error
	}{
		{"read another Secret", func() error {
			_, err := sac.CoreV1().Secrets(dep.Namespace).List(ctx, metav1.ListOptions{})
			return err
		}},
		{"list Services in kube-system", func() error {
			_, err := sac.CoreV1().Services("kube-system").List(ctx, metav1.ListOptions{})
			return err
		}},
		{"read pods", func() error { _, err := sac.CoreV1().Pods("apps").List(ctx, metav1.ListOptions{}); return err }},
		{"change another webhook configuration", func() error {
			return sac.AdmissionregistrationV1().MutatingWebhookConfigurations().Delete(ctx, "other", metav1.DeleteOptions{})
		}},
	} {
		if err := tc.call(); !apierrors.IsForbidden(err) {
			t.Errorf("%s: got %v, want Forbidden", tc.name, err)
		}
	}
}

func mustCreate(t *testing.T, create func() error) {
	t.Helper()
	if err := create(); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
}

// impersonatingKubeconfig writes a copy of the admin kubeconfig that
// impersonates user (a ServiceAccount of namespace).
func impersonatingKubeconfig(t *testing.T, adminPath, user, namespace string) string {
	t.Helper()
	cfg, err := clientcmd.LoadFromFile(adminPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, ai := range cfg.AuthInfos {
		ai.Impersonate = user
		ai.ImpersonateGroups = []string{"system:serviceaccounts", "system:serviceaccounts:" + namespace, "system:authenticated"}
	}
	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, path); err != nil {
		t.Fatal(err)
	}
	return path
}

func freeLoopbackPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
