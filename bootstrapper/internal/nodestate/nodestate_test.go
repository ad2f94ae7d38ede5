package nodestate

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func mustOpen(t *testing.T, dir string, opts Options) *Store {
	t.Helper()
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

func TestForwardPathPersistsEveryTransition(t *testing.T) {
	dir := t.TempDir()
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	var seen []Phase
	s := mustOpen(t, dir, Options{Now: func() time.Time { return now }, OnTransition: func(st State) { seen = append(seen, st.Phase) }})
	if got := s.State().Phase; got != Fresh {
		t.Fatalf("new store: phase %s, want fresh", got)
	}
	if err := s.Lock(PathJoin); err != nil {
		t.Fatal(err)
	}
	for _, p := range []Phase{Keyed, Configured, KubeadmStarted, Joined} {
		if err := s.Advance(p); err != nil {
			t.Fatalf("Advance(%s): %v", p, err)
		}
		// Every transition is on disk at once: a reopened store agrees.
		if got := mustOpen(t, dir, Options{}).State(); got.Phase != p || got.Path != PathJoin {
			t.Fatalf("reopened after %s: %+v", p, got)
		}
	}
	want := []Phase{Locked, Keyed, Configured, KubeadmStarted, Joined}
	if len(seen) != len(want) {
		t.Fatalf("OnTransition saw %v, want %v", seen, want)
	}
	h := mustOpen(t, dir, Options{}).State().History
	if len(h) != 5 || h[0].Phase != Locked || !h[4].At.Equal(now) {
		t.Fatalf("history %+v", h)
	}
	fi, err := os.Stat(filepath.Join(dir, FileName))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("state file mode %v, want 0600", fi.Mode().Perm())
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".*")); len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}
}

func TestRefusedTransitions(t *testing.T) {
	cases := []struct {
		name string
		prep func(s *Store) error
		do   func(s *Store) error
	}{
		{"advance before the lock", nil, func(s *Store) error { return s.Advance(Keyed) }},
		{"skip keyed", func(s *Store) error { return s.Lock(PathInit) }, func(s *Store) error { return s.Advance(Configured) }},
		{"backwards", func(s *Store) error {
			return errors.Join(s.Lock(PathInit), s.Advance(Keyed), s.Advance(Configured))
		}, func(s *Store) error { return s.Advance(Keyed) }},
		{"same phase twice", func(s *Store) error { return errors.Join(s.Lock(PathInit), s.Advance(Keyed)) }, func(s *Store) error { return s.Advance(Keyed) }},
		{"second lock", func(s *Store) error { return s.Lock(PathInit) }, func(s *Store) error { return s.Lock(PathJoin) }},
		{"advance to locked", nil, func(s *Store) error { return s.Advance(Locked) }},
		{"advance to failed", nil, func(s *Store) error { return s.Advance(Failed) }},
		{"leave failed", func(s *Store) error { return errors.Join(s.Lock(PathJoin), s.Fail("boom")) }, func(s *Store) error { return s.Advance(Keyed) }},
		{"fail twice", func(s *Store) error { return errors.Join(s.Lock(PathJoin), s.Fail("boom")) }, func(s *Store) error { return s.Fail("again") }},
		{"fail after joined", func(s *Store) error {
			return errors.Join(s.Lock(PathJoin), s.Advance(Keyed), s.Advance(Configured), s.Advance(KubeadmStarted), s.Advance(Joined))
		}, func(s *Store) error { return s.Fail("late") }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s := mustOpen(t, dir, Options{})
			if tc.prep != nil {
				if err := tc.prep(s); err != nil {
					t.Fatalf("prep: %v", err)
				}
			}
			before := s.State()
			err := tc.do(s)
			if !errors.Is(err, ErrTransition) {
				t.Fatalf("err = %v, want ErrTransition", err)
			}
			after := mustOpen(t, dir, Options{}).State()
			if after.Phase != before.Phase || len(after.History) != len(before.History) {
				t.Fatalf("refused transition changed the persisted state: %+v → %+v", before, after)
			}
		})
	}
}

func TestLockOnUnknownPathRefused(t *testing.T) {
	s := mustOpen(t, t.TempDir(), Options{})
	if err := s.Lock("other"); err == nil {
		t.Fatal("Lock(other) succeeded")
	}
}

func TestConcurrentLockExactlyOneWins(t *testing.T) {
	s := mustOpen(t, t.TempDir(), Options{})
	var wins atomic.Int32
	var wg sync.WaitGroup
	for i := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			path := PathInit
			if i%2 == 1 {
				path = PathJoin
			}
			if err := s.Lock(path); err == nil {
				wins.Add(1)
			} else if !errors.Is(err, ErrTransition) {
				t.Errorf("Lock: %v", err)
			}
		}()
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Fatalf("%d Lock calls won, want exactly 1", wins.Load())
	}
}

func TestFailRecordsReasonAndPhase(t *testing.T) {
	dir := t.TempDir()
	s := mustOpen(t, dir, Options{})
	if err := errors.Join(s.Lock(PathJoin), s.Advance(Keyed), s.Fail("latch: not reset")); err != nil {
		t.Fatal(err)
	}
	st := mustOpen(t, dir, Options{}).State()
	if st.Phase != Failed || st.FailedIn != Keyed || st.Reason != "latch: not reset" {
		t.Fatalf("state %+v", st)
	}
}

func TestFaultInjectionPoints(t *testing.T) {
	t.Run("before: nothing persisted", func(t *testing.T) {
		dir := t.TempDir()
		crash := errors.New("crash")
		s := mustOpen(t, dir, Options{Fault: func(p string) error {
			if p == "before:locked" {
				return crash
			}
			return nil
		}})
		if err := s.Lock(PathInit); !errors.Is(err, crash) || !errors.Is(err, ErrFault) {
			t.Fatalf("Lock = %v, want the injected fault", err)
		}
		if st := mustOpen(t, dir, Options{}).State(); st.Phase != Fresh {
			t.Fatalf("phase %s after a crash before the write, want fresh", st.Phase)
		}
	})
	t.Run("after: persisted", func(t *testing.T) {
		dir := t.TempDir()
		crash := errors.New("crash")
		s := mustOpen(t, dir, Options{Fault: func(p string) error {
			if p == "after:locked" {
				return crash
			}
			return nil
		}})
		if err := s.Lock(PathInit); !errors.Is(err, crash) {
			t.Fatalf("Lock = %v, want the injected fault", err)
		}
		if st := mustOpen(t, dir, Options{}).State(); st.Phase != Locked {
			t.Fatalf("phase %s after a crash after the write, want locked", st.Phase)
		}
	})
}

func TestOpenRefusesBadFiles(t *testing.T) {
	cases := []struct{ name, doc, want string }{
		{"not json", "garbage", "not valid JSON"},
		// encoding/json alone took these, the last spelling winning.
		{"case variant of a field", `{"phase":"fresh","history":[],"Phase":"joined"}`, `unknown field "Phase" (field names are case-sensitive: did you mean "phase"?)`},
		{"duplicate key", `{"phase":"fresh","history":[],"phase":"joined"}`, `(document): duplicate key "phase"`},
		{"YAML, not JSON", "phase: fresh\nhistory: []\n", "not valid JSON"},
		{"unknown field", `{"phase":"fresh","history":[],"extra":1}`, `unknown field "extra"`},
		{"unknown phase", `{"phase":"flying","history":[]}`, "flying"},
		{"locked without path", `{"phase":"locked","history":[]}`, "path"},
		{"unknown path", `{"phase":"keyed","path":"sideways","history":[]}`, "sideways"},
		{"path before lock", `{"phase":"fresh","path":"join","history":[]}`, "path"},
		{"failed without reason", `{"phase":"failed","failedIn":"keyed","path":"join","history":[]}`, "reason"},
		{"failed in joined", `{"phase":"failed","failedIn":"joined","reason":"x","path":"join","history":[]}`, "failedIn"},
		{"reason without failure", `{"phase":"keyed","path":"join","reason":"x","history":[]}`, "reason"},
		{"trailing data", `{"phase":"fresh","history":[]} {}`, "not valid JSON"},
		{"too large", `{"phase":"fresh","history":[],"reason":"` + string(make([]byte, maxFileSize)) + `"}`, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if err := os.WriteFile(filepath.Join(dir, FileName), []byte(tc.doc), 0o600); err != nil {
				t.Fatal(err)
			}
			s, err := Open(dir, Options{})
			if err == nil {
				t.Fatalf("Open accepted %s: %+v", tc.name, s.State())
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not name %q", err, tc.want)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	for _, seed := range []string{
		`{"phase":"fresh","history":[]}`,
		`{"phase":"locked","path":"join","history":[{"phase":"locked","at":"2026-01-01T00:00:00Z"}]}`,
		`{"phase":"failed","failedIn":"keyed","path":"init","reason":"x","history":[]}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := parse(b)
		if err != nil {
			if st.Phase != "" {
				t.Fatalf("parse returned a state with an error: %+v", st)
			}
			return
		}
		if _, ok := order[st.Phase]; !ok && st.Phase != Failed {
			t.Fatalf("parse accepted phase %q", st.Phase)
		}
	})
}

// BenchmarkTransition measures one persisted transition (write, fsync,
// rename, fsync of the directory) on the test's temporary file system.
func BenchmarkTransition(b *testing.B) {
	dir := b.TempDir()
	for b.Loop() {
		s, err := Open(dir, Options{})
		if err != nil {
			b.Fatal(err)
		}
		if err := s.Fail("bench"); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		if err := os.Remove(filepath.Join(dir, FileName)); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
}
