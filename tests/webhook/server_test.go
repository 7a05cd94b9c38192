package webhook

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"
)

// TestStartServerErrors checks that a webhook that cannot start is reported
// at once with the reason, and that a cert dir the caller gave is kept.
func TestStartServerErrors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		opts    ServerOptions
		wantErr string
	}{
		{name: "bad flag value", opts: ServerOptions{Args: []string{"--ndots=99"}}, wantErr: "ndots"},
		{name: "unknown flag", opts: ServerOptions{Args: []string{"--no-such-flag"}}, wantErr: "no-such-flag"},
		{name: "missing binary", opts: ServerOptions{Binary: "/nonexistent/webhook"}, wantErr: "/nonexistent/webhook"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.CertDir = t.TempDir() + "/certs"
			start := time.Now()
			srv, err := StartServer(context.Background(), tc.opts)
			if err == nil {
				_ = srv.Stop()
				t.Fatal("StartServer succeeded, want an error")
			}
			if !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("error %q does not mention %q", err, tc.wantErr)
			}
			if d := time.Since(start); d > 10*time.Second {
				t.Errorf("failing StartServer took %v", d)
			}
			if _, err := os.Stat(tc.opts.CertDir + "/tls.crt"); err != nil {
				t.Errorf("given cert dir must be kept: %v", err)
			}
		})
	}
}
