package status

import (
	"context"
	"fmt"
	"math"
	"strings"
	"sync"
	"time"

	statusv1 "github.com/cloister-dev/cloister/proto/status/v1"
)

// maxErrorLen caps the error text kept, so one runaway error cannot bloat
// every status response and sd_notify datagram.
const maxErrorLen = 512

// InitialPhase is a new Tracker's phase.
const InitialPhase = "starting"

// Options are a Tracker's optional settings; the zero value is fine.
type Options struct {
	// Now is the clock (default time.Now).
	Now func() time.Time
	// OnChange, if set, is called with the one-line status after every
	// change, in order, one call at a time: main passes sdnotify's Status so
	// that STATUS= shows the same text as status.v1. It may call Snapshot
	// but must not change the Tracker.
	OnChange func(line string)
}

// Tracker holds a daemon's current status. It is safe for concurrent use.
type Tracker struct {
	statusv1.UnimplementedStatusServiceServer

	component string
	now       func() time.Time
	onChange  func(string)

	// notifyMu serializes changes with their OnChange calls, so lines arrive
	// in the order of the changes; mu guards the fields below and is never
	// held while OnChange runs.
	notifyMu sync.Mutex
	mu       sync.Mutex
	phase    string
	lastErr  string
	attempts uint32
	since    time.Time
	diskUUID string
}

var _ statusv1.StatusServiceServer = (*Tracker)(nil)

// New returns a Tracker for component ("disk-mapper", "bootstrapper",
// "joinservice") in InitialPhase.
func New(component string, opts Options) *Tracker {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	t := &Tracker{component: component, now: opts.Now, onChange: opts.OnChange, phase: InitialPhase}
	t.since = t.now()
	return t
}

// SetPhase enters phase: it resets the attempts and the last error and
// records when the phase began.
func (t *Tracker) SetPhase(phase string) {
	t.update(func() {
		t.phase = phase
		t.attempts = 0
		t.lastErr = ""
		t.since = t.now()
	})
}

// Attempt counts an attempt in the current phase. A nil err clears the last
// error; otherwise err's text becomes the last error. The text is served
// without authentication, so err must never contain secrets: pass errors
// from checks and connections, never ones that could hold key bytes.
func (t *Tracker) Attempt(err error) {
	t.update(func() {
		if t.attempts < math.MaxUint32 {
			t.attempts++
		}
		t.lastErr = ""
		if err != nil {
			t.lastErr = oneLine(err.Error())
		}
	})
}

// SetDiskUUID records the state disk's UUID once it is known.
func (t *Tracker) SetDiskUUID(uuid string) {
	t.update(func() { t.diskUUID = uuid })
}

// Snapshot returns a copy of the current status.
func (t *Tracker) Snapshot() *statusv1.GetResponse {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.snapshotLocked()
}

// Line returns the one-line status that OnChange receives.
func (t *Tracker) Line() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.lineLocked()
}

// Get implements statusv1.StatusServiceServer.
func (t *Tracker) Get(context.Context, *statusv1.GetRequest) (*statusv1.GetResponse, error) {
	return t.Snapshot(), nil
}

func (t *Tracker) update(change func()) {
	t.notifyMu.Lock()
	defer t.notifyMu.Unlock()
	t.mu.Lock()
	change()
	line := t.lineLocked()
	t.mu.Unlock()
	if t.onChange != nil {
		t.onChange(line)
	}
}

func (t *Tracker) snapshotLocked() *statusv1.GetResponse {
	return &statusv1.GetResponse{
		Component: t.component,
		Phase:     t.phase,
		LastError: t.lastErr,
		Attempts:  t.attempts,
		Since:     t.since.Unix(),
		DiskUuid:  t.diskUUID,
	}
}

// lineLocked formats "phase", "phase (attempt 3)" or
// "phase (attempt 3): last error".
func (t *Tracker) lineLocked() string {
	line := t.phase
	if t.attempts > 0 {
		line += fmt.Sprintf(" (attempt %d)", t.attempts)
	}
	if t.lastErr != "" {
		line += ": " + t.lastErr
	}
	return line
}

// oneLine keeps an error on one line (STATUS= is one line) and caps it.
func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > maxErrorLen {
		cut := maxErrorLen
		for cut > 0 && !isRuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return s
}

func isRuneStart(b byte) bool { return b&0xC0 != 0x80 }
