package kubeapi

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// auditPolicy logs pods and namespaces at Metadata level (enough for
// admission audit annotations) and nothing else.
const auditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: Metadata
    resources:
      - group: ""
        resources: ["pods", "namespaces"]
  - level: None
`

// auditArgs writes the audit policy and returns the flags that enable a
// synchronous (blocking) JSON audit log.
func (e *Env) auditArgs() ([]string, error) {
	policy := filepath.Join(e.Dir, "audit-policy.yaml")
	if err := os.WriteFile(policy, []byte(auditPolicy), 0o644); err != nil {
		return nil, fmt.Errorf("audit policy: %w", err)
	}
	e.AuditLogPath = filepath.Join(e.Dir, "audit.log")
	return []string{
		"--audit-policy-file=" + policy,
		"--audit-log-path=" + e.AuditLogPath,
		"--audit-log-format=json",
		"--audit-log-mode=blocking",
		"--audit-log-maxbackup=1",
	}, nil
}

// AuditEvent is the part of an audit.k8s.io/v1 Event tests look at.
type AuditEvent struct {
	Stage     string `json:"stage"`
	Verb      string `json:"verb"`
	ObjectRef *struct {
		Resource  string `json:"resource"`
		Namespace string `json:"namespace"`
		Name      string `json:"name"`
	} `json:"objectRef"`
	ResponseStatus *struct {
		Code int `json:"code"`
	} `json:"responseStatus"`
	Annotations map[string]string `json:"annotations"`
}

// AuditEvents reads every event of the audit log so far.
func (e *Env) AuditEvents() ([]AuditEvent, error) {
	if e.AuditLogPath == "" {
		return nil, fmt.Errorf("audit log not enabled (Options.AuditLog)")
	}
	data, err := os.ReadFile(e.AuditLogPath)
	if err != nil {
		return nil, fmt.Errorf("audit log: %w", err)
	}
	// Only complete lines: the API server may be writing the last one.
	data = data[:bytes.LastIndexByte(data, '\n')+1]
	var events []AuditEvent
	for line := range bytes.Lines(data) {
		var ev AuditEvent
		if err := json.Unmarshal(line, &ev); err != nil {
			return nil, fmt.Errorf("audit log line %q: %w", line, err)
		}
		events = append(events, ev)
	}
	return events, nil
}
