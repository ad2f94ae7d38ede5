package ratelimit

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Logger writes a warning at most once per interval for each message, so
// that a flood of abusive peers cannot flood the log: the first occurrence
// is logged at once with its attributes; later ones in the same interval
// are only counted, and one line at the interval's end reports how many
// there were ("count" and "interval" attributes, the message unchanged, so
// that one search finds both kinds of line).
type Logger struct {
	log   *slog.Logger
	every time.Duration

	mu      sync.Mutex
	pending map[string]*logWindow
}

type logWindow struct {
	count int
	timer *time.Timer
}

// NewLogger returns a Logger that writes to log at most once per every for
// each message. A nil log discards everything.
func NewLogger(log *slog.Logger, every time.Duration) *Logger {
	return &Logger{log: log, every: every, pending: map[string]*logWindow{}}
}

// Warn logs msg with args, or counts it when msg was logged less than one
// interval ago.
func (l *Logger) Warn(msg string, args ...any) {
	if l == nil || l.log == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if w, ok := l.pending[msg]; ok {
		w.count++
		return
	}
	w := &logWindow{}
	l.pending[msg] = w
	w.timer = time.AfterFunc(l.every, func() { l.flush(msg) })
	l.log.Warn(msg, args...)
}

// flush ends msg's interval and reports what it suppressed.
func (l *Logger) flush(msg string) {
	l.mu.Lock()
	w := l.pending[msg]
	delete(l.pending, msg)
	l.mu.Unlock()
	if w != nil && w.count > 0 {
		l.log.LogAttrs(context.Background(), slog.LevelWarn, msg, slog.Int("count", w.count), slog.Duration("interval", l.every))
	}
}
