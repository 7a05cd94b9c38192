package kubeapi

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// TestControlPlane starts the real control plane once and checks what tests
// built on it rely on.
func TestControlPlane(t *testing.T) {
	env := StartT(t, Options{AuditLog: true})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	t.Run("namespace round trip", func(t *testing.T) {
		cs := mustClient(t, env)
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "roundtrip", Labels: map[string]string{"a": "b"}}}
		if _, err := cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create namespace: %v", err)
		}
		got, err := cs.CoreV1().Namespaces().Get(ctx, "roundtrip", metav1.GetOptions{})
		if err != nil {
			t.Fatalf("get namespace: %v", err)
		}
		if got.Labels["a"] != "b" || got.Labels["kubernetes.io/metadata.name"] != "roundtrip" {
			t.Errorf("labels = %v, want a=b and kubernetes.io/metadata.name=roundtrip", got.Labels)
		}
		if _, err := cs.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); !apierrors.IsAlreadyExists(err) {
			t.Errorf("second create: err = %v, want AlreadyExists", err)
		}
	})

	t.Run("audit log records the namespace create", func(t *testing.T) {
		events, err := env.AuditEvents()
		if err != nil {
			t.Fatal(err)
		}
		var found bool
		for _, ev := range events {
			if ev.Verb == "create" && ev.Stage == "ResponseComplete" && ev.ObjectRef != nil &&
				ev.ObjectRef.Resource == "namespaces" && ev.ObjectRef.Name == "roundtrip" &&
				ev.ResponseStatus != nil && ev.ResponseStatus.Code == 201 {
				found = true
			}
			if ev.ObjectRef != nil && ev.ObjectRef.Resource != "pods" && ev.ObjectRef.Resource != "namespaces" {
				t.Errorf("policy should log only pods and namespaces, got %+v", ev.ObjectRef)
			}
		}
		if !found {
			t.Errorf("no ResponseComplete create event for namespace roundtrip among %d events", len(events))
		}
	})

	t.Run("kubeconfig works", func(t *testing.T) {
		cfg, err := clientcmd.BuildConfigFromFlags("", env.KubeconfigPath)
		if err != nil {
			t.Fatalf("load kubeconfig: %v", err)
		}
		cs, err := kubernetes.NewForConfig(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cs.CoreV1().Namespaces().Get(ctx, "kube-system", metav1.GetOptions{}); err != nil {
			t.Errorf("get kube-system through kubeconfig: %v", err)
		}
	})

	t.Run("pod without service account and cluster IP service", func(t *testing.T) {
		cs := mustClient(t, env)
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "default"},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "example.invalid/x"}}},
		}
		if _, err := cs.CoreV1().Pods("default").Create(ctx, pod, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create pod: %v", err)
		}
		svc := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: "kube-dns", Namespace: "kube-system"},
			Spec: corev1.ServiceSpec{
				ClusterIP: "10.96.0.10",
				Ports:     []corev1.ServicePort{{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP}},
			},
		}
		got, err := cs.CoreV1().Services("kube-system").Create(ctx, svc, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("create service: %v", err)
		}
		if got.Spec.ClusterIP != "10.96.0.10" {
			t.Errorf("clusterIP = %q, want 10.96.0.10", got.Spec.ClusterIP)
		}
	})

	t.Run("anonymous client is refused", func(t *testing.T) {
		c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: env.TLSConfig()}}
		resp, err := c.Get(env.URL + "/api/v1/namespaces")
		if err != nil {
			t.Fatalf("anonymous GET (serving cert must verify against CAPEM): %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden && resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("anonymous list namespaces: HTTP %d, want 401 or 403", resp.StatusCode)
		}
	})

	// Stop ends both processes, frees the port and removes the directory.
	if t.Failed() {
		return // Cleanup keeps the files for inspection
	}
	host := strings.TrimPrefix(env.URL, "https://")
	env.Stop()
	for _, p := range []*process{env.apiserver, env.etcd} {
		if !p.exited() {
			t.Errorf("%s still running after Stop", p.name)
		}
	}
	if c, err := net.DialTimeout("tcp", host, time.Second); err == nil {
		c.Close()
		t.Errorf("%s still accepts connections after Stop", host)
	}
	if _, err := os.Stat(env.Dir); !os.IsNotExist(err) {
		t.Errorf("dir %s still exists after Stop (err %v)", env.Dir, err)
	}
	env.Stop() // idempotent
}

// TestStartErrors checks that a broken setup fails fast with a clear error.
func TestStartErrors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		opts    func(t *testing.T, dir string) Options
		wantErr string
	}{
		{
			name: "missing binary",
			opts: func(t *testing.T, dir string) Options {
				return Options{APIServerBin: filepath.Join(dir, "nope"), EtcdBin: filepath.Join(dir, "nope")}
			},
			wantErr: "etcd: start",
		},
		{
			name: "etcd exits at once",
			opts: func(t *testing.T, dir string) Options {
				return Options{APIServerBin: "/bin/false", EtcdBin: "/bin/false"}
			},
			wantErr: "etcd exited during startup",
		},
		{
			name: "never ready",
			opts: func(t *testing.T, dir string) Options {
				script := filepath.Join(dir, "hang")
				if err := os.WriteFile(script, []byte("#!/bin/sh\nexec sleep 60\n"), 0o755); err != nil {
					t.Fatal(err)
				}
				return Options{APIServerBin: "/bin/false", EtcdBin: script, StartTimeout: 500 * time.Millisecond}
			},
			wantErr: "not ready in time",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			env, err := Start(context.Background(), tc.opts(t, t.TempDir()))
			if err == nil {
				env.Stop()
				t.Fatal("Start succeeded, want an error")
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("error %q does not contain %q", err, tc.wantErr)
			}
			if d := time.Since(start); d > 10*time.Second {
				t.Errorf("failing Start took %v", d)
			}
		})
	}
}

// TestStartRetriesTakenPort checks that a port taken between probing and
// binding (another test grabbed it) makes Start retry on new ports.
func TestStartRetriesTakenPort(t *testing.T) {
	dir := t.TempDir()
	starts := filepath.Join(dir, "starts")
	script := filepath.Join(dir, "etcd")
	// First start: fail like a bind race. Later starts: hang (never healthy).
	body := "#!/bin/sh\necho start >> " + starts + "\n" +
		"if [ $(wc -l < " + starts + ") -eq 1 ]; then echo 'listen tcp 127.0.0.1:1: bind: address already in use' >&2; exit 1; fi\n" +
		"exec sleep 60\n"
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	_, err := Start(context.Background(), Options{APIServerBin: "/bin/false", EtcdBin: script, Dir: filepath.Join(dir, "env"), StartTimeout: time.Second})
	if err == nil || !strings.Contains(err.Error(), "not ready in time") {
		t.Fatalf("error = %v, want a timeout after the retry", err)
	}
	data, _ := os.ReadFile(starts)
	if n := strings.Count(string(data), "start"); n != 2 {
		t.Errorf("etcd started %d times, want 2 (one retry after the taken port)", n)
	}
}

func TestNewServingCert(t *testing.T) {
	dir := t.TempDir()
	caPEM, err := NewServingCert(dir, "127.0.0.1", "webhook.example.svc")
	if err != nil {
		t.Fatal(err)
	}
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"))
	if err != nil {
		t.Fatalf("load key pair: %v", err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		t.Fatal("caPEM holds no certificate")
	}
	for _, host := range []string{"127.0.0.1", "webhook.example.svc"} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: host}); err != nil {
			t.Errorf("verify for %s: %v", host, err)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, DNSName: "other.example"}); err == nil {
		t.Error("certificate verified for a host it was not issued for")
	}
	other, err := NewServingCert(t.TempDir(), "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	otherPool := x509.NewCertPool()
	otherPool.AppendCertsFromPEM(other)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: otherPool}); err == nil {
		t.Error("certificate verified against another call's CA")
	}
	if _, err := NewServingCert(t.TempDir()); err == nil {
		t.Error("NewServingCert without hosts succeeded")
	}
}

func mustClient(t *testing.T, env *Env) *kubernetes.Clientset {
	t.Helper()
	cs, err := env.Clientset()
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

// TestChildDiesWithParent checks the Pdeathsig guarantee: when the process
// that started a child (here a helper copy of this test binary) is killed
// with SIGKILL, the child is killed too.
func TestChildDiesWithParent(t *testing.T) {
	if os.Getenv("KUBEAPI_TEST_HELPER") == "1" {
		return // running as the helper: see helperStartChild
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperStartsChild$")
	cmd.Env = append(os.Environ(), "KUBEAPI_TEST_HELPER=1", "KUBEAPI_TEST_LOG="+filepath.Join(t.TempDir(), "child.log"))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("helper wrote no child pid: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, "child ")))
	if err != nil {
		t.Fatalf("helper output %q: %v", line, err)
	}
	if !alive(pid) {
		t.Fatalf("child %d not running while its parent lives", pid)
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for alive(pid) {
		if time.Now().After(deadline) {
			_ = syscall.Kill(pid, syscall.SIGKILL)
			t.Fatalf("child %d still running 5s after its parent was killed", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestHelperStartsChild is the helper process of TestChildDiesWithParent:
// it starts `sleep 60` with startProcess, prints its pid and waits.
func TestHelperStartsChild(t *testing.T) {
	if os.Getenv("KUBEAPI_TEST_HELPER") != "1" {
		t.Skip("helper process for TestChildDiesWithParent")
	}
	p, err := startProcess("sleep", "/bin/sleep", os.Getenv("KUBEAPI_TEST_LOG"), []string{"60"})
	if err != nil {
		t.Fatal(err)
	}
	fmt.Printf("child %d\n", p.cmd.Process.Pid)
	<-p.done // killed with the helper, or exits after 60s
}

// alive reports whether pid exists and is not a zombie.
func alive(pid int) bool {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(data)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || !strings.HasPrefix(s[i+1:], " Z")
}
