// Package kubeapi starts a real control plane for integration tests: etcd and
// kube-apiserver (built by `make tools` into bin/) on 127.0.0.1, on free ports,
// in a temporary directory, with certificates and service-account keys made
// in Go. There is no controller-manager or scheduler: pods stay Pending, and
// the ServiceAccount admission plugin is off so pods need no ServiceAccount.
//
// Child processes are always killed: by Env.Stop, by the test's Cleanup, and
// by the kernel (Pdeathsig) if the test binary dies.
//
// # Why not controller-runtime's envtest
//
// envtest (sigs.k8s.io/controller-runtime/pkg/envtest, v0.25 here) starts the
// same two binaries, takes their paths (ControlPlane.APIServer.Path,
// BinaryAssetsDirectory) and extra flags (APIServer.Configure()), and has
// the same defaults where it matters (RBAC, ServiceAccount admission off).
// What it lacks is what this package is for:
//
//   - Orphans. envtest starts its children in their own process group
//     (Setpgid) and kills them in Stop only. When the test binary dies
//     instead (go test -timeout, a panic in another goroutine, SIGKILL from
//     CI), etcd and kube-apiserver keep running and keep their ports and
//     memory on a small shared machine. Here the kernel kills them
//     (Pdeathsig, on a locked thread: see process.go).
//   - Port races. envtest reserves the ports it picks against other envtest
//     users (lock files in the user cache directory), not against the other
//     processes the tests here start on loopback ports (agents, webhooks,
//     DNS servers), and fails when one took a port before the child bound
//     it. Start retries on "address already in use" with fresh ports
//     (errAddrInUse).
//   - Readiness. envtest returns once /healthz answers; the tests here create
//     objects in kube-system and admit pods through webhooks at once, so
//     Start waits for /readyz and for the bootstrap namespaces.
//   - Test-only options the suites share: the synchronous audit log that
//     the webhook tests read admission annotations from (Options.AuditLog),
//     a dual-stack Service range, logs kept on failure.
//
// Each of these could be added around envtest through its flags and by
// wrapping its Start, at about the size of this package, while losing the
// first two (they live in envtest's internal process package). The
// certificates made here (client certificates carrying Kubernetes groups,
// service-account keys) are test-only; certs/ makes production webhook
// serving certificates and stays free of test needs. envtest would bring its
// own third PKI (its internal tinyca), not remove one.
package kubeapi

import (
	"cmp"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"

	"github.com/nodelocaldns/nodelocaldns/tests/testenv"
)

// Environment variables naming the binaries (the Makefile exports them).
const (
	APIServerEnv = "KUBE_APISERVER_BIN"
	EtcdEnv      = "ETCD_BIN"
)

// ServiceClusterIPRange is the Service ClusterIP range the API server
// allocates from. It is only an allocation range: no traffic goes there.
const ServiceClusterIPRange = "10.96.0.0/12"

// DualStackServiceClusterIPRange is a dual-stack Service range for
// Options.ServiceClusterIPRange.
const DualStackServiceClusterIPRange = ServiceClusterIPRange + ",fd00:10:96::/112"

// DefaultStartTimeout bounds how long Start waits for etcd and /readyz.
const DefaultStartTimeout = 2 * time.Minute

// Options configure Start. The zero value is ready to use.
type Options struct {
	// APIServerBin and EtcdBin are the binaries; empty means $KUBE_APISERVER_BIN
	// / $ETCD_BIN, then bin/ in the repository, then $PATH.
	APIServerBin string
	EtcdBin      string
	// Dir holds certificates, data and logs; empty means a new temporary
	// directory that Stop removes.
	Dir string
	// StartTimeout bounds startup (DefaultStartTimeout if zero).
	StartTimeout time.Duration
	// ServiceClusterIPRange is the Service ClusterIP range; empty means
	// ServiceClusterIPRange. Give an IPv4 and an IPv6 range separated by a
	// comma for a dual-stack API server (see DualStackServiceClusterIPRange).
	ServiceClusterIPRange string
	// AuditLog turns on the API server's audit log (Metadata level, which
	// includes admission webhooks' audit annotations) for pods and
	// namespaces; read it with Env.AuditEvents.
	AuditLog bool
	// ExtraAPIServerArgs are appended to the kube-apiserver command line
	// (later flags win), e.g. "--enable-admission-plugins=ServiceAccount".
	ExtraAPIServerArgs []string
}

// Env is a running etcd + kube-apiserver.
type Env struct {
	// Config is an admin (system:masters) client configuration.
	Config *rest.Config
	// KubeconfigPath is a kubeconfig file with the same admin credentials.
	KubeconfigPath string
	// URL is the API server's address, https://127.0.0.1:PORT.
	URL string
	// CAPEM is the CA that signed the API server's serving certificate.
	CAPEM []byte
	// Dir holds certificates, etcd data and the logs.
	Dir string
	// APIServerLog and EtcdLog are the processes' log files.
	APIServerLog, EtcdLog string
	// AuditLogPath is the audit log (JSON lines) when Options.AuditLog is set.
	AuditLogPath string

	ownDir    bool
	etcdURL   string
	etcd      *process
	apiserver *process
	stopOnce  sync.Once
}

// StartT starts a control plane for t and stops it on Cleanup; opts (at
// most one) configures it, with the binaries found as for Start. Missing
// binaries skip the test (fail under CI). When the test fails, the tails of the
// logs are printed and the directory is kept for inspection.
func StartT(t testing.TB, opts ...Options) *Env {
	t.Helper()
	var o Options
	switch len(opts) {
	case 0:
	case 1:
		o = opts[0]
	default:
		t.Fatalf("kubeapi.StartT: %d Options given, want at most one", len(opts))
	}
	if o.APIServerBin == "" {
		o.APIServerBin = testenv.Binary(t, "kube-apiserver", APIServerEnv)
	}
	if o.EtcdBin == "" {
		o.EtcdBin = testenv.Binary(t, "etcd", EtcdEnv)
	}
	began := time.Now()
	env, err := Start(context.Background(), o)
	if err != nil {
		t.Fatalf("start kube-apiserver: %v", err)
	}
	t.Logf("etcd + kube-apiserver ready at %s in %v", env.URL, time.Since(began).Round(time.Millisecond))
	t.Cleanup(func() {
		if t.Failed() {
			env.ownDir = false // keep the evidence
			t.Logf("control plane files kept in %s", env.Dir)
			t.Logf("last lines of %s:\n%s", env.APIServerLog, tail(env.APIServerLog, 40))
			t.Logf("last lines of %s:\n%s", env.EtcdLog, tail(env.EtcdLog, 20))
		}
		env.Stop()
	})
	return env
}

// Start starts etcd and kube-apiserver and returns once /readyz answers and
// the system namespaces exist. On error everything started is stopped again.
func Start(ctx context.Context, opts Options) (*Env, error) {
	var err error
	if opts.APIServerBin == "" {
		if opts.APIServerBin, err = testenv.LookBinary("kube-apiserver", APIServerEnv); err != nil {
			return nil, fmt.Errorf("kube-apiserver binary: %w (run `make tools`)", err)
		}
	}
	if opts.EtcdBin == "" {
		if opts.EtcdBin, err = testenv.LookBinary("etcd", EtcdEnv); err != nil {
			return nil, fmt.Errorf("etcd binary: %w (run `make tools`)", err)
		}
	}
	if opts.StartTimeout <= 0 {
		opts.StartTimeout = DefaultStartTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, opts.StartTimeout)
	defer cancel()

	env := &Env{Dir: opts.Dir}
	if env.Dir == "" {
		if env.Dir, err = os.MkdirTemp("", "kubeapi-"); err != nil {
			return nil, fmt.Errorf("temp dir: %w", err)
		}
		env.ownDir = true
	} else if err := os.MkdirAll(env.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("dir: %w", err)
	}
	env.APIServerLog = filepath.Join(env.Dir, "kube-apiserver.log")
	env.EtcdLog = filepath.Join(env.Dir, "etcd.log")

	if err := env.start(ctx, opts); err != nil {
		env.Stop()
		return nil, fmt.Errorf("%w (files in %s)", err, env.Dir)
	}
	return env, nil
}

// start does the work of Start, retrying when a probed port was taken.
func (e *Env) start(ctx context.Context, opts Options) error {
	pki, err := e.writePKI()
	if err != nil {
		return err
	}
	for attempt := 1; ; attempt++ {
		err := e.startEtcd(ctx, opts.EtcdBin)
		if err == nil {
			err = e.startAPIServer(ctx, opts, pki)
		}
		if err == nil {
			break
		}
		if !errors.Is(err, errAddrInUse) || attempt == 3 {
			return err
		}
		e.apiserver.stop(time.Second)
		e.etcd.stop(time.Second)
	}
	if err := e.writeKubeconfig(pki); err != nil {
		return err
	}
	return e.waitForNamespaces(ctx)
}

// pki holds the paths and PEM data Start generates.
type pki struct {
	dir                         string
	caPEM, adminCert, adminKey  []byte
	caFile, certFile, keyFile   string
	saKeyFile, saPubFile        string
	adminCertFile, adminKeyFile string
}

// writePKI creates the CA, the API server's serving certificate, the admin
// client certificate and the service-account key pair.
func (e *Env) writePKI() (*pki, error) {
	p := &pki{dir: filepath.Join(e.Dir, "pki")}
	if err := os.MkdirAll(p.dir, 0o700); err != nil {
		return nil, fmt.Errorf("pki dir: %w", err)
	}
	ca, err := newAuthority("kubeapi-test-ca")
	if err != nil {
		return nil, err
	}
	// 10.96.0.1 is the in-cluster "kubernetes" Service address of the range.
	servingCert, servingKey, err := ca.issue("kube-apiserver", nil, x509.ExtKeyUsageServerAuth,
		"127.0.0.1", "localhost", "10.96.0.1", "kubernetes", "kubernetes.default", "kubernetes.default.svc")
	if err != nil {
		return nil, err
	}
	p.adminCert, p.adminKey, err = ca.issue("kubeapi-admin", []string{"system:masters"}, x509.ExtKeyUsageClientAuth)
	if err != nil {
		return nil, err
	}
	saKey, saPub, err := newSigningKey()
	if err != nil {
		return nil, err
	}
	p.caPEM = ca.certPEM
	p.caFile = filepath.Join(p.dir, "ca.crt")
	p.certFile = filepath.Join(p.dir, "apiserver.crt")
	p.keyFile = filepath.Join(p.dir, "apiserver.key")
	p.saKeyFile = filepath.Join(p.dir, "sa.key")
	p.saPubFile = filepath.Join(p.dir, "sa.pub")
	p.adminCertFile = filepath.Join(p.dir, "admin.crt")
	p.adminKeyFile = filepath.Join(p.dir, "admin.key")
	err = writeFiles(p.dir, map[string][]byte{
		"ca.crt": ca.certPEM, "apiserver.crt": servingCert, "apiserver.key": servingKey,
		"sa.key": saKey, "sa.pub": saPub, "admin.crt": p.adminCert, "admin.key": p.adminKey,
	})
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	e.CAPEM = ca.certPEM
	return p, nil
}

// startEtcd starts etcd on two free loopback ports and waits for /health.
func (e *Env) startEtcd(ctx context.Context, bin string) error {
	ports, err := testenv.FreePorts(2)
	if err != nil {
		return err
	}
	client := "http://127.0.0.1:" + strconv.Itoa(ports[0])
	peer := "http://127.0.0.1:" + strconv.Itoa(ports[1])
	dataDir := filepath.Join(e.Dir, "etcd")
	_ = os.RemoveAll(dataDir) // a retry starts from scratch
	args := []string{
		"--name=kubeapi",
		"--data-dir=" + dataDir,
		"--listen-client-urls=" + client,
		"--advertise-client-urls=" + client,
		"--listen-peer-urls=" + peer,
		"--initial-advertise-peer-urls=" + peer,
		"--initial-cluster=kubeapi=" + peer,
		"--unsafe-no-fsync",
		"--log-level=warn",
	}
	if e.etcd, err = startProcess("etcd", bin, e.EtcdLog, args); err != nil {
		return err
	}
	e.etcdURL = client
	return waitFor(ctx, e.etcd, "etcd "+client+"/health", http.DefaultClient, client+"/health")
}

// startAPIServer starts kube-apiserver against etcd and waits for /readyz.
func (e *Env) startAPIServer(ctx context.Context, opts Options, p *pki) error {
	ports, err := testenv.FreePorts(1)
	if err != nil {
		return err
	}
	e.URL = "https://127.0.0.1:" + strconv.Itoa(ports[0])
	args := []string{
		"--etcd-servers=" + e.etcdURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(ports[0]),
		"--cert-dir=" + p.dir,
		"--tls-cert-file=" + p.certFile,
		"--tls-private-key-file=" + p.keyFile,
		"--client-ca-file=" + p.caFile,
		"--service-account-key-file=" + p.saPubFile,
		"--service-account-signing-key-file=" + p.saKeyFile,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-cluster-ip-range=" + cmp.Or(opts.ServiceClusterIPRange, ServiceClusterIPRange),
		"--authorization-mode=RBAC",
		"--disable-admission-plugins=ServiceAccount",
		"--allow-privileged=true",
		"--enable-priority-and-fairness=false",
		"--profiling=false",
		"--endpoint-reconciler-type=none",
		"--v=1",
	}
	if opts.AuditLog {
		auditArgs, err := e.auditArgs()
		if err != nil {
			return err
		}
		args = append(args, auditArgs...)
	}
	args = append(args, opts.ExtraAPIServerArgs...)
	if e.apiserver, err = startProcess("kube-apiserver", opts.APIServerBin, e.APIServerLog, args); err != nil {
		return err
	}
	e.Config = &rest.Config{
		Host: e.URL,
		TLSClientConfig: rest.TLSClientConfig{
			CAData:   p.caPEM,
			CertData: p.adminCert,
			KeyData:  p.adminKey,
		},
		QPS:   200,
		Burst: 400,
	}
	tr, err := rest.TransportFor(e.Config)
	if err != nil {
		return fmt.Errorf("client transport: %w", err)
	}
	return waitFor(ctx, e.apiserver, "kube-apiserver "+e.URL+"/readyz", &http.Client{Transport: tr, Timeout: 5 * time.Second}, e.URL+"/readyz")
}

// waitFor polls url until it answers 200, the process exits or ctx ends.
func waitFor(ctx context.Context, p *process, what string, client *http.Client, url string) error {
	var last string
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return fmt.Errorf("%s: %w", what, err)
		}
		resp, err := client.Do(req)
		if err == nil {
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Sprintf("HTTP %d: %s", resp.StatusCode, body)
		} else {
			last = err.Error()
		}
		select {
		case <-p.done:
			if p.addrInUse() {
				return fmt.Errorf("%s: %w: %w", what, errAddrInUse, p.exitError())
			}
			return p.exitError()
		case <-ctx.Done():
			return fmt.Errorf("%s not ready in time (%w); last answer: %s; last lines of %s:\n%s",
				what, ctx.Err(), last, p.logPath, tail(p.logPath, 30))
		case <-tick.C:
		}
	}
}

// writeKubeconfig writes an admin kubeconfig into the directory.
func (e *Env) writeKubeconfig(p *pki) error {
	cfg := clientcmdapi.NewConfig()
	cfg.Clusters["kubeapi"] = &clientcmdapi.Cluster{Server: e.URL, CertificateAuthorityData: p.caPEM}
	cfg.AuthInfos["admin"] = &clientcmdapi.AuthInfo{ClientCertificateData: p.adminCert, ClientKeyData: p.adminKey}
	cfg.Contexts["kubeapi"] = &clientcmdapi.Context{Cluster: "kubeapi", AuthInfo: "admin", Namespace: "default"}
	cfg.CurrentContext = "kubeapi"
	e.KubeconfigPath = filepath.Join(e.Dir, "kubeconfig")
	if err := clientcmd.WriteToFile(*cfg, e.KubeconfigPath); err != nil {
		return fmt.Errorf("write kubeconfig: %w", err)
	}
	return nil
}

// waitForNamespaces waits until the API server's bootstrap controller has
// created the namespaces tests rely on (kube-system for kube-dns).
func (e *Env) waitForNamespaces(ctx context.Context) error {
	cs, err := e.Clientset()
	if err != nil {
		return err
	}
	for _, ns := range []string{"default", "kube-system"} {
		for {
			_, err := cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
			if err == nil {
				break
			}
			if !apierrors.IsNotFound(err) && ctx.Err() == nil {
				return fmt.Errorf("get namespace %s: %w", ns, err)
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("namespace %s not created in time: %w", ns, ctx.Err())
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
	return nil
}

// Clientset returns a typed admin client.
func (e *Env) Clientset() (*kubernetes.Clientset, error) {
	cs, err := kubernetes.NewForConfig(e.Config)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	return cs, nil
}

// TLSConfig returns a client TLS configuration that trusts the API server.
func (e *Env) TLSConfig() *tls.Config {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(e.CAPEM)
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
}

// Stop kills kube-apiserver and etcd and removes the directory if Start made
// it. It is safe to call more than once.
func (e *Env) Stop() {
	e.stopOnce.Do(func() {
		e.apiserver.stop(5 * time.Second)
		e.etcd.stop(5 * time.Second)
		if e.ownDir {
			_ = os.RemoveAll(e.Dir)
		}
	})
}
