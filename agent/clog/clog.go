// Package clog writes the agent's own log lines in CoreDNS's format: the
// level in brackets ("[INFO] ...", "[WARNING] ...", "[ERROR] ..."), chosen
// by the caller's method rather than read back from the message. The query
// log and the errors plugin write their own CoreDNS lines (agent/server).
package clog

import (
	"fmt"
	"log"
)

// Level is a CoreDNS log level, as it appears between the brackets.
type Level string

// CoreDNS's levels.
const (
	Debug   Level = "DEBUG"
	Info    Level = "INFO"
	Warning Level = "WARNING"
	Error   Level = "ERROR"
)

// Logger writes leveled lines to a *log.Logger, each after an optional
// fixed prefix (e.g. "node: "). Make one with New.
type Logger struct {
	out    *log.Logger
	prefix string
}

// New returns a Logger writing to out; prefix goes before the level.
func New(out *log.Logger, prefix string) Logger { return Logger{out: out, prefix: prefix} }

// Logf writes one line at level.
func (l Logger) Logf(level Level, format string, args ...any) {
	l.out.Printf("%s[%s] %s", l.prefix, level, fmt.Sprintf(format, args...))
}

// Debugf writes a line at level DEBUG.
func (l Logger) Debugf(format string, args ...any) { l.Logf(Debug, format, args...) }

// Infof writes a line at level INFO.
func (l Logger) Infof(format string, args ...any) { l.Logf(Info, format, args...) }

// Warningf writes a line at level WARNING.
func (l Logger) Warningf(format string, args ...any) { l.Logf(Warning, format, args...) }

// Errorf writes a line at level ERROR.
func (l Logger) Errorf(format string, args ...any) { l.Logf(Error, format, args...) }
