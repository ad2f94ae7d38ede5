package nodestate

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/cloister-dev/cloister/internal/strictyaml"
)

// FileName is the state file's name in the state directory.
const FileName = "bootstrapper-state.json"

// maxFileSize bounds the state file, checked before parsing.
const maxFileSize = 64 << 10

// Phase is a state of the node.
type Phase string

// The phases, in their only order (Failed may follow any non-terminal one).
const (
	Fresh          Phase = "fresh"
	Locked         Phase = "locked"
	Keyed          Phase = "keyed"
	Configured     Phase = "configured"
	KubeadmStarted Phase = "kubeadm-started"
	Joined         Phase = "joined"
	Failed         Phase = "failed"
)

// order numbers the forward phases.
var order = map[Phase]int{Fresh: 0, Locked: 1, Keyed: 2, Configured: 3, KubeadmStarted: 4, Joined: 5}

// Terminal reports whether no transition leaves p.
func (p Phase) Terminal() bool { return p == Joined || p == Failed }

// Path is which way the node took at the lock.
type Path string

// The two paths.
const (
	PathInit Path = "init"
	PathJoin Path = "join"
)

// ErrFault wraps an error injected through Options.Fault.
var ErrFault = errors.New("fault injected")

// ErrTransition means a transition the state machine does not allow
// (backwards, skipping a phase, leaving a terminal phase, or locking twice).
var ErrTransition = errors.New("transition not allowed")

// Transition is one recorded phase change.
type Transition struct {
	Phase Phase     `json:"phase"`
	At    time.Time `json:"at"`
}

// State is the node's persisted state.
type State struct {
	Phase Phase `json:"phase"`
	// Path is set from Locked on.
	Path Path `json:"path,omitempty"`
	// Reason says why the node Failed.
	Reason string `json:"reason,omitempty"`
	// FailedIn is the phase the node was in when it failed.
	FailedIn Phase `json:"failedIn,omitempty"`
	// History lists every transition, oldest first.
	History []Transition `json:"history"`
}

// Options are a Store's optional settings; the zero value is fine.
type Options struct {
	// Now is the clock (default time.Now).
	Now func() time.Time
	// OnTransition is called after every persisted transition, in order, one
	// call at a time (the bootstrapper logs it and sets the status phase).
	OnTransition func(State)
	// Fault is FAULT INJECTION for crash tests: it is called with
	// "before:<phase>" right before a transition to phase is persisted and
	// with "after:<phase>" right after; an error stops the transition (or
	// the caller, after it) as a crash there would. Nil in production.
	Fault func(point string) error
}

// Store is the state file. Its methods are safe for concurrent use, and
// transitions are compare-and-set: of two concurrent Lock calls exactly one
// succeeds.
type Store struct {
	dir  string
	opts Options

	mu  sync.Mutex
	cur State
}

// Open reads the state from dir (the state disk's directory), or starts Fresh
// when there is no state file yet. A file that does not parse is an error.
func Open(dir string, opts Options) (*Store, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	s := &Store{dir: dir, opts: opts, cur: State{Phase: Fresh}}
	b, err := readLimited(filepath.Join(dir, FileName))
	if errors.Is(err, os.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return nil, fmt.Errorf("nodestate: reading state: %w", err)
	}
	st, err := parse(b)
	if err != nil {
		return nil, fmt.Errorf("nodestate: %s: %w", filepath.Join(dir, FileName), err)
	}
	s.cur = st
	return s, nil
}

// Dir is the state directory.
func (s *Store) Dir() string { return s.dir }

// State returns a copy of the current state.
func (s *Store) State() State {
	s.mu.Lock()
	defer s.mu.Unlock()
	c := s.cur
	c.History = append([]Transition(nil), s.cur.History...)
	return c
}

// Lock moves Fresh to Locked on path. Exactly one Lock call succeeds; every
// other returns an error wrapping ErrTransition.
func (s *Store) Lock(path Path) error {
	if path != PathInit && path != PathJoin {
		return fmt.Errorf("nodestate: lock on unknown path %q", path)
	}
	return s.transition(func(cur State) (State, error) {
		if cur.Phase != Fresh {
			return cur, fmt.Errorf("nodestate: lock for %s: node already %s: %w", path, describe(cur), ErrTransition)
		}
		cur.Phase, cur.Path = Locked, path
		return cur, nil
	})
}

// Advance moves the node one phase forward, from the phase before to. It
// refuses anything else with ErrTransition, so every step runs at most once
// in order.
func (s *Store) Advance(to Phase) error {
	return s.transition(func(cur State) (State, error) {
		want, ok := order[to]
		if !ok || to == Fresh || to == Locked {
			return cur, fmt.Errorf("nodestate: advance to %s: use Lock or Fail: %w", to, ErrTransition)
		}
		if cur.Phase.Terminal() || order[cur.Phase] != want-1 {
			return cur, fmt.Errorf("nodestate: advance from %s to %s: %w", cur.Phase, to, ErrTransition)
		}
		cur.Phase = to
		return cur, nil
	})
}

// Fail moves any non-terminal phase to Failed with reason, which must not
// contain secrets (it is served on status.v1).
func (s *Store) Fail(reason string) error {
	return s.transition(func(cur State) (State, error) {
		if cur.Phase.Terminal() {
			return cur, fmt.Errorf("nodestate: fail in %s: %w", cur.Phase, ErrTransition)
		}
		cur.FailedIn, cur.Phase, cur.Reason = cur.Phase, Failed, reason
		return cur, nil
	})
}

func describe(s State) string {
	if s.Path != "" {
		return fmt.Sprintf("%s (%s)", s.Phase, s.Path)
	}
	return string(s.Phase)
}

// transition computes the next state under the lock, persists it, and only
// then makes it current.
func (s *Store) transition(next func(State) (State, error)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	cur := s.cur
	cur.History = append([]Transition(nil), s.cur.History...)
	st, err := next(cur)
	if err != nil {
		return err
	}
	st.History = append(st.History, Transition{Phase: st.Phase, At: s.opts.Now().UTC()})
	if err := s.fault("before:" + string(st.Phase)); err != nil {
		return err
	}
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return fmt.Errorf("nodestate: encoding state: %w", err)
	}
	if err := WriteFile(filepath.Join(s.dir, FileName), append(b, '\n')); err != nil {
		return fmt.Errorf("nodestate: writing state %s: %w", st.Phase, err)
	}
	s.cur = st
	if s.opts.OnTransition != nil {
		s.opts.OnTransition(s.cur)
	}
	return s.fault("after:" + string(st.Phase))
}

func (s *Store) fault(point string) error {
	if s.opts.Fault == nil {
		return nil
	}
	if err := s.opts.Fault(point); err != nil {
		return fmt.Errorf("nodestate: %w at %s: %w", ErrFault, point, err)
	}
	return nil
}

// parse decodes a state file strictly and checks that it describes a state
// the machine can reach. strictyaml.DecodeJSON, not encoding/json alone:
// that would take "Phase" for phase and keep the last of two "phase" keys,
// so a state file could say two things and one of them would win silently.
// It also refuses trailing data (one JSON value only).
func parse(b []byte) (State, error) {
	var st State
	if err := strictyaml.DecodeJSON(b, &st); err != nil {
		return State{}, fmt.Errorf("decoding: %w", err)
	}
	switch {
	case st.Phase == Failed:
		if st.Reason == "" {
			return State{}, errors.New("phase failed without a reason")
		}
		if _, ok := order[st.FailedIn]; !ok || st.FailedIn == Joined {
			return State{}, fmt.Errorf("failedIn: want a non-terminal phase, got %q", st.FailedIn)
		}
	case order[st.Phase] == 0 && st.Phase != Fresh:
		return State{}, fmt.Errorf("phase: unknown %q", st.Phase)
	case st.Reason != "" || st.FailedIn != "":
		return State{}, fmt.Errorf("phase %s with a failure reason", st.Phase)
	}
	locked := st.Phase != Fresh && !(st.Phase == Failed && st.FailedIn == Fresh)
	switch {
	case locked && st.Path != PathInit && st.Path != PathJoin:
		return State{}, fmt.Errorf("path: want init or join in phase %s, got %q", st.Phase, st.Path)
	case !locked && st.Path != "":
		return State{}, fmt.Errorf("path %q before the lock", st.Path)
	}
	return st, nil
}

func readLimited(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxFileSize {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, maxFileSize)
	}
	return b, nil
}
