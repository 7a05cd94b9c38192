package manifests

import (
	"testing"

	appsv1 "k8s.io/api/apps/v1"
)

// TestWebhookDrainsBeforeStopping: every overlay's webhook Deployment sleeps
// in preStop (done by the kubelet, no binary needed) for less than its grace
// period, so a terminating replica keeps answering until its endpoint is gone.
// Without it a rollout admits pods uninjected (tests/e2e check 5).
func TestWebhookDrainsBeforeStopping(t *testing.T) {
	for _, dir := range overlays(t) {
		t.Run(dir, func(t *testing.T) {
			r := renderRepo(t, dir)
			dep := get[*appsv1.Deployment](t, r, webhookName)
			spec := dep.Spec.Template.Spec
			c := spec.Containers[0]
			if c.Lifecycle == nil || c.Lifecycle.PreStop == nil || c.Lifecycle.PreStop.Sleep == nil {
				t.Fatalf("container %s has no preStop sleep: %+v", c.Name, c.Lifecycle)
			}
			sleep := c.Lifecycle.PreStop.Sleep.Seconds
			grace := int64(30)
			if spec.TerminationGracePeriodSeconds != nil {
				grace = *spec.TerminationGracePeriodSeconds
			}
			if sleep < 3 || sleep >= grace {
				t.Errorf("preStop sleep %ds, want at least 3s and below the %ds grace period", sleep, grace)
			}
		})
	}
}
