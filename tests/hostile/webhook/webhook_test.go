// Package webhook attacks the webhook binary as a pod that can reach its
// port would: stalled and trickled uploads, oversized bodies. Each must be
// cut off within the read timeout with the process's memory bounded, and
// the webhook must inject again right after.
package webhook

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/nodelocaldns/nodelocaldns/tests/kubeapi"
	"github.com/nodelocaldns/nodelocaldns/tests/testenv"
	wh "github.com/nodelocaldns/nodelocaldns/tests/webhook"
	"github.com/nodelocaldns/nodelocaldns/webhook/inject"
)

const (
	// readTimeout is the webhook's default --read-timeout; the test passes
	// no limit flags, so that it can be pointed (WEBHOOK_BIN) at a build of
	// an older webhook to show what it does.
	readTimeout = 10 * time.Second
	// margin is scheduling slack on a loaded machine.
	margin = 5 * time.Second
	// maxGrowth bounds the webhook's peak RSS above its idle RSS under each
	// attack: the 32 MiB body budget, buffers being replaced as they grow,
	// and the garbage collector's headroom.
	maxGrowth = 80 << 20
)

// mib formats bytes as MiB.
func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// TestHostileUploads runs bin/webhook against a real API server and attacks
// its port from another address; pods created through the API server during
// each attack must still be injected. Before the webhook had read and idle timeouts and a body budget,
// 12 stalled 6.9 MB uploads held about 105 MB for 50 s and more.
func TestHostileUploads(t *testing.T) {
	bin := testenv.Binary(t, "webhook", "WEBHOOK_BIN")
	env := kubeapi.StartT(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cs, err := env.Clientset()
	if err != nil {
		t.Fatal(err)
	}
	srv, err := wh.StartServer(ctx, wh.ServerOptions{Kubeconfig: env.KubeconfigPath, Binary: bin, Args: []string{"--kube-dns-ip=10.96.0.10"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Stop() })
	registerWebhook(ctx, t, cs, srv)
	idle, _, err := srv.Memory()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("idle RSS %s", mib(idle))

	// attack opens conns connections from 127.0.0.2 (the API server calls
	// from 127.0.0.1), runs run on each, and meanwhile creates a pod
	// through the API server, which must still be injected.
	attacker := &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}
	attack := func(t *testing.T, name string, conns int, run func(conn *tls.Conn) error) {
		t.Helper()
		srv.ResetPeakMemory()
		start := time.Now()
		var wg sync.WaitGroup
		var mu sync.Mutex
		var slowest time.Duration
		var refused int
		var failed []string
		for range conns {
			conn, err := tls.DialWithDialer(attacker, "tcp", srv.Addr(), srv.TLSConfig())
			if err != nil {
				// Over the attacker's share of --max-connections.
				mu.Lock()
				refused++
				mu.Unlock()
				continue
			}
			wg.Go(func() {
				defer conn.Close()
				err := run(conn)
				d := time.Since(start)
				mu.Lock()
				defer mu.Unlock()
				slowest = max(slowest, d)
				if err != nil {
					failed = append(failed, err.Error())
				}
			})
		}
		time.Sleep(time.Second) // the uploads are under way
		got, err := cs.CoreV1().Pods("hostile").Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{GenerateName: "during-"},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "registry.example/app:1"}}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("%s: create a pod during the attack: %v", name, err)
		}
		if got.Annotations[inject.InjectedAnnotation] != "true" {
			t.Errorf("%s: a pod created during the attack was not injected", name)
		}
		wg.Wait()
		_, peak, err := srv.Memory()
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %d connections (%d refused at once), all ended after %v; peak RSS %s (+%s over idle)",
			name, conns, refused, slowest.Round(time.Millisecond), mib(peak), mib(peak-idle))
		if len(failed) > 0 {
			t.Errorf("%s: %d of %d connections failed within %v (read timeout %v), first: %s", name, len(failed), conns, readTimeout+margin, readTimeout, failed[0])
		}
		if peak-idle > maxGrowth {
			t.Errorf("%s: peak RSS %s is %s over idle, want at most %s", name, mib(peak), mib(peak-idle), mib(maxGrowth))
		}
	}
	// untilClosed reads until the server closes the connection; it fails
	// when that takes longer than the read timeout plus margin.
	untilClosed := func(conn *tls.Conn, start time.Time) error {
		_ = conn.SetReadDeadline(start.Add(readTimeout + margin))
		_, err := io.Copy(io.Discard, conn)
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return errors.New("connection still open")
		}
		return nil
	}

	t.Run("stalled large uploads", func(t *testing.T) {
		// 20 uploads announce 4,000,000 bytes (under the 4 MiB limit), send
		// 3,900,000 and stall: 78 MB if all were held.
		attack(t, "stalled", 20, func(conn *tls.Conn) error {
			start := time.Now()
			fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: webhook\r\nContent-Type: application/json\r\nContent-Length: 4000000\r\n\r\n", wh.AdmissionPath)
			chunk := []byte(strings.Repeat(" ", 64<<10))
			_ = conn.SetWriteDeadline(start.Add(readTimeout + margin))
			for sent := 0; sent < 3_900_000; sent += len(chunk) {
				if _, err := conn.Write(chunk); err != nil {
					break // refused (budget) or cut off
				}
			}
			return untilClosed(conn, start)
		})
	})

	t.Run("trickled bodies", func(t *testing.T) {
		// 300 uploads send a byte every 200 ms, for ever (256 get a
		// connection: the attacker's share of --max-connections).
		attack(t, "trickle", 300, func(conn *tls.Conn) error {
			start := time.Now()
			fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: webhook\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n", wh.AdmissionPath)
			go func() {
				for time.Since(start) < readTimeout+margin {
					if _, err := conn.Write([]byte(" ")); err != nil {
						return
					}
					time.Sleep(200 * time.Millisecond)
				}
			}()
			return untilClosed(conn, start)
		})
	})

	t.Run("oversized bodies", func(t *testing.T) {
		// 8 uploads announce 50 MB and 8 send 10 MB chunked: refused with
		// 413 after at most the 4 MiB limit (or 503 beyond the attacker's
		// share of the body budget).
		for _, chunked := range []bool{false, true} {
			attack(t, fmt.Sprintf("oversized chunked=%v", chunked), 8, func(conn *tls.Conn) error {
				start := time.Now()
				if chunked {
					fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: webhook\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n", wh.AdmissionPath)
				} else {
					fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: webhook\r\nContent-Type: application/json\r\nContent-Length: 50000000\r\n\r\n", wh.AdmissionPath)
				}
				go func() {
					_ = conn.SetWriteDeadline(start.Add(readTimeout + margin))
					chunk := strings.Repeat(" ", 64<<10)
					for sent := 0; sent < 10_000_000; sent += len(chunk) {
						var err error
						if chunked {
							_, err = fmt.Fprintf(conn, "%x\r\n%s\r\n", len(chunk), chunk)
						} else {
							_, err = io.WriteString(conn, chunk)
						}
						if err != nil {
							break
						}
					}
				}()
				_ = conn.SetReadDeadline(start.Add(readTimeout + margin))
				resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
				if err != nil {
					return fmt.Errorf("no response: %w", err)
				}
				resp.Body.Close()
				// 413, or 503 once the attacker's share of the body budget
				// is spent by its other uploads.
				if resp.StatusCode != http.StatusRequestEntityTooLarge && resp.StatusCode != http.StatusServiceUnavailable {
					return fmt.Errorf("HTTP %d, want 413 or 503", resp.StatusCode)
				}
				return untilClosed(conn, start)
			})
		}
	})

	t.Run("injects again after the attacks", func(t *testing.T) {
		got, err := cs.CoreV1().Pods("hostile").Create(ctx, &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{GenerateName: "after-"},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "registry.example/app:1"}}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got.Annotations[inject.InjectedAnnotation] != "true" {
			t.Errorf("pod not injected after the attacks: dnsPolicy %q", got.Spec.DNSPolicy)
		}
	})
}

// registerWebhook registers the shipped configuration for the namespace
// "hostile", pointed at srv, and waits until the API server calls it.
func registerWebhook(ctx context.Context, t *testing.T, cs kubernetes.Interface, srv *wh.Server) {
	t.Helper()
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "hostile",
		Labels: map[string]string{inject.SelectorLabel: inject.EnabledValue}}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	mwc, _, err := wh.ManifestConfiguration(testenv.RepoRoot())
	if err != nil {
		t.Fatal(err)
	}
	mwc = wh.PointAt(mwc, "hostile", srv.URL, srv.CAPEM)
	if _, err := cs.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, mwc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := wh.WaitActive(ctx, cs, "hostile", 30*time.Second); err != nil {
		t.Fatal(err)
	}
}
