package app_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"

	"github.com/nodelocaldns/nodelocaldns/tests/kubeapi"
	"github.com/nodelocaldns/nodelocaldns/tests/testenv"
	"github.com/nodelocaldns/nodelocaldns/webhook/app"
	"github.com/nodelocaldns/nodelocaldns/webhook/handler"
)

type webhookProc struct {
	cancel                      context.CancelFunc
	done                        chan error
	addr, healthURL, metricsURL string
}

// start runs app.Run in-process on loopback with the given extra flags.
func start(t *testing.T, env *kubeapi.Env, certDir string, extra ...string) *webhookProc {
	t.Helper()
	ports, err := testenv.FreePorts(3)
	if err != nil {
		t.Fatal(err)
	}
	p := &webhookProc{
		done:       make(chan error, 1),
		addr:       "127.0.0.1:" + strconv.Itoa(ports[0]),
		healthURL:  "http://127.0.0.1:" + strconv.Itoa(ports[1]),
		metricsURL: "http://127.0.0.1:" + strconv.Itoa(ports[2]) + "/metrics",
	}
	args := append([]string{
		"--kubeconfig=" + env.KubeconfigPath,
		"--cert-dir=" + certDir,
		"--bind-address=127.0.0.1",
		"--port=" + strconv.Itoa(ports[0]),
		"--health-probe-bind-address=127.0.0.1:" + strconv.Itoa(ports[1]),
		"--metrics-bind-address=127.0.0.1:" + strconv.Itoa(ports[2]),
		"--graceful-shutdown-timeout=5s",
	}, extra...)
	ctx, cancel := context.WithCancel(context.Background())
	p.cancel = cancel
	go func() { p.done <- app.Run(ctx, args) }()
	t.Cleanup(func() { p.stop(t) })
	return p
}

func (p *webhookProc) stop(t *testing.T) {
	t.Helper()
	if p.cancel == nil {
		return
	}
	p.cancel()
	p.cancel = nil
	select {
	case err := <-p.done:
		if err != nil {
			t.Errorf("app.Run returned %v after cancel, want nil", err)
		}
	case <-time.After(30 * time.Second):
		t.Error("app.Run did not return within 30s of cancel")
	}
}

// readyz returns the /readyz status code and body.
func (p *webhookProc) readyz() (int, string) {
	resp, err := http.Get(p.healthURL + "/readyz?verbose")
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// eventually polls cond (an eventual condition of a running server, not a
// speed check) until it returns "" or the deadline passes.
func eventually(t *testing.T, d time.Duration, cond func() string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		last := cond()
		if last == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v: %s", d, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func pool(t *testing.T, caPEM []byte) *x509.CertPool {
	t.Helper()
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(caPEM) {
		t.Fatal("bad CA PEM")
	}
	return p
}

func dial(addr string, roots *x509.CertPool, protos ...string) (tls.ConnectionState, error) {
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr,
		&tls.Config{RootCAs: roots, NextProtos: protos, ServerName: "127.0.0.1"})
	if err != nil {
		return tls.ConnectionState{}, err
	}
	defer conn.Close()
	return conn.ConnectionState(), nil
}

func review(t *testing.T) []byte {
	t.Helper()
	pod, err := json.Marshal(&corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: "p"},
		Spec:       corev1.PodSpec{DNSPolicy: corev1.DNSClusterFirst, Containers: []corev1.Container{{Name: "c", Image: "i"}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{
			UID: "u1", Kind: metav1.GroupVersionKind{Version: "v1", Kind: "Pod"}, Namespace: "default",
			Operation: admissionv1.Create, Object: runtime.RawExtension{Raw: pod},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestRunServes runs the real webhook against a real kube-apiserver and
// checks what only a running server shows: TLS from --cert-dir reloaded when
// the files change, HTTP/2 off, readiness following kube-dns, metrics, and a
// clean return on cancel.
func TestRunServes(t *testing.T) {
	env := kubeapi.StartT(t)
	cs, err := kubernetes.NewForConfig(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	certDir := t.TempDir()
	ca1, err := kubeapi.NewServingCert(certDir, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}

	// No kube-dns Service yet: serving, but not ready.
	p := start(t, env, certDir)
	eventually(t, 30*time.Second, func() string {
		code, body := p.readyz()
		if code == 0 || !strings.Contains(body, "webhook ok") {
			return fmt.Sprintf("server not up: %d %s", code, body)
		}
		return ""
	})
	if code, body := p.readyz(); code == http.StatusOK || !strings.Contains(body, "kube-dns failed") {
		t.Fatalf("readyz without kube-dns = %d %q, want failure naming kube-dns", code, body)
	}
	_, err = cs.CoreV1().Services("kube-system").Create(context.Background(), &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "kube-dns", Namespace: "kube-system"},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "dns", Port: 53, Protocol: corev1.ProtocolUDP}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, func() string {
		if code, body := p.readyz(); code != http.StatusOK {
			return fmt.Sprintf("readyz %d %s", code, body)
		}
		return ""
	})

	// HTTP/2 is not offered.
	st, err := dial(p.addr, pool(t, ca1), "h2", "http/1.1")
	if err != nil {
		t.Fatal(err)
	}
	if st.NegotiatedProtocol == "h2" {
		t.Error("HTTP/2 negotiated, want it off by default")
	}
	// TLS 1.2 with a CBC suite is refused, an AEAD suite accepted (the
	// policy of webhook/server, as app.Run wires it).
	for _, tc := range []struct {
		suite uint16
		ok    bool
	}{{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, false}, {tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, true}} {
		conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", p.addr,
			&tls.Config{RootCAs: pool(t, ca1), MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tc.suite}})
		if err == nil {
			conn.Close()
		}
		if (err == nil) != tc.ok {
			t.Errorf("TLS 1.2 %s: handshake error %v, want success %v", tls.CipherSuiteName(tc.suite), err, tc.ok)
		}
	}

	// An admission over HTTPS is injected and counted.
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool(t, ca1)}}}
	resp, err := client.Post("https://"+p.addr+handler.Path, "application/json", bytes.NewReader(review(t)))
	if err != nil {
		t.Fatal(err)
	}
	var out admissionv1.AdmissionReview
	err = json.NewDecoder(resp.Body).Decode(&out)
	resp.Body.Close()
	if err != nil || out.Response == nil || !out.Response.Allowed || len(out.Response.Patch) == 0 {
		t.Fatalf("admission response %+v, %v", out.Response, err)
	}
	if !strings.Contains(string(out.Response.Patch), `"nameservers":["169.254.20.10","`) {
		t.Errorf("patch %s lacks the local nameserver first", out.Response.Patch)
	}
	mresp, err := http.Get(p.metricsURL)
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(mresp.Body)
	mresp.Body.Close()
	for _, want := range []string{
		`nodelocaldns_webhook_admissions_total{decision="injected",reason="injected"} 1`,
		`nodelocaldns_webhook_admission_duration_seconds_count{decision="injected"} 1`,
	} {
		if !bytes.Contains(metrics, []byte(want)) {
			t.Errorf("metrics lack %q", want)
		}
	}

	// Rotate the certificate in place: the new one is served without restart.
	newDir := t.TempDir()
	ca2, err := kubeapi.NewServingCert(newDir, "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"tls.crt", "tls.key"} {
		b, err := os.ReadFile(filepath.Join(newDir, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(certDir, name+".tmp"), b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(filepath.Join(certDir, name+".tmp"), filepath.Join(certDir, name)); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 30*time.Second, func() string {
		if _, err := dial(p.addr, pool(t, ca2)); err != nil {
			return "new certificate not served: " + err.Error()
		}
		return ""
	})
	if _, err := dial(p.addr, pool(t, ca1)); err == nil {
		t.Error("old certificate still served after reload")
	}

	p.stop(t)
	if _, err := dial(p.addr, pool(t, ca2)); err == nil {
		t.Error("still serving after app.Run returned")
	}

	// A second Run in the same process with --enable-http2 offers HTTP/2.
	p2 := start(t, env, certDir, "--kube-dns-ip=10.96.0.10", "--enable-http2")
	eventually(t, 30*time.Second, func() string {
		if code, body := p2.readyz(); code != http.StatusOK {
			return fmt.Sprintf("readyz %d %s", code, body)
		}
		return ""
	})
	st, err = dial(p2.addr, pool(t, ca2), "h2", "http/1.1")
	if err != nil {
		t.Fatal(err)
	}
	if st.NegotiatedProtocol != "h2" {
		t.Errorf("negotiated %q with --enable-http2, want h2", st.NegotiatedProtocol)
	}
}
