package clog

import (
	"bytes"
	"log"
	"testing"
)

func TestLevels(t *testing.T) {
	var buf bytes.Buffer
	for _, tc := range []struct {
		name   string
		prefix string
		write  func(Logger)
		want   string
	}{
		{"info", "", func(l Logger) { l.Infof("serving %v", []string{"dns://:53"}) }, "[INFO] serving [dns://:53]\n"},
		{"warning", "", func(l Logger) { l.Warningf("%d left", 2) }, "[WARNING] 2 left\n"},
		{"error", "", func(l Logger) { l.Errorf("teardown: %v", "boom") }, "[ERROR] teardown: boom\n"},
		{"debug", "", func(l Logger) { l.Debugf("x") }, "[DEBUG] x\n"},
		{"prefix before the level", "node: ", func(l Logger) { l.Infof("interface created") }, "node: [INFO] interface created\n"},
		// The level is the method's, whatever the message looks like.
		{"message starting with a bracket", "", func(l Logger) { l.Infof("[ERROR] is text here") }, "[INFO] [ERROR] is text here\n"},
		{"Logf", "", func(l Logger) { l.Logf(Warning, "w") }, "[WARNING] w\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			buf.Reset()
			tc.write(New(log.New(&buf, "", 0), tc.prefix))
			if got := buf.String(); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}
