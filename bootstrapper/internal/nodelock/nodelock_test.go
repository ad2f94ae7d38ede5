package nodelock

import (
	"errors"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cloister-dev/cloister/bootstrapper/internal/nodestate"
)

// TestRacersExactlyOneWins races many init and join racers on the REAL
// nodestate store: exactly one wins, only the winner's prepare ran, the
// persisted state names the winner, and every loser sees ErrTaken.
func TestRacersExactlyOneWins(t *testing.T) {
	for round := range 20 {
		dir := t.TempDir()
		store, err := nodestate.Open(dir, nodestate.Options{})
		if err != nil {
			t.Fatal(err)
		}
		l := New(store, "")
		var (
			wins, prepared atomic.Int32
			winner         atomic.Value
			start          = make(chan struct{})
			wg             sync.WaitGroup
		)
		for i := range 50 {
			path := nodestate.PathInit
			if i%2 == 1 {
				path = nodestate.PathJoin
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				err := l.Acquire(path, func() error {
					prepared.Add(1)
					return os.WriteFile(filepath.Join(dir, string(path)+"-inputs"), []byte("x"), 0o600)
				})
				switch {
				case err == nil:
					wins.Add(1)
					winner.Store(path)
				case !errors.Is(err, ErrTaken):
					t.Errorf("Acquire: %v", err)
				}
			}()
		}
		close(start)
		wg.Wait()
		if wins.Load() != 1 || prepared.Load() != 1 {
			t.Fatalf("round %d: %d winners, %d prepares; want exactly 1 each", round, wins.Load(), prepared.Load())
		}
		w := winner.Load().(nodestate.Path)
		if l.Holder() != w {
			t.Fatalf("Holder %q, winner %q", l.Holder(), w)
		}
		select {
		case <-l.Taken():
		default:
			t.Fatal("Taken not closed after a win")
		}
		reopened, err := nodestate.Open(dir, nodestate.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if st := reopened.State(); st.Phase != nodestate.Locked || st.Path != w {
			t.Fatalf("persisted %+v, want locked on %s", st, w)
		}
		other := nodestate.PathJoin
		if w == nodestate.PathJoin {
			other = nodestate.PathInit
		}
		if _, err := os.Stat(filepath.Join(dir, string(other)+"-inputs")); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("the loser's inputs were written: %v", err)
		}
	}
}

// fakeStore is a FAKE persister that fails as told.
type fakeStore struct {
	err   error
	calls int
}

func (f *fakeStore) Lock(nodestate.Path) error { f.calls++; return f.err }

func TestFailedPrepareOrPersistLeavesLockFree(t *testing.T) {
	t.Run("prepare fails (fake store)", func(t *testing.T) {
		st := &fakeStore{}
		l := New(st, "")
		if err := l.Acquire(nodestate.PathJoin, func() error { return errors.New("disk full") }); err == nil {
			t.Fatal("Acquire succeeded with a failing prepare")
		}
		if st.calls != 0 || l.Holder() != "" {
			t.Fatalf("persisted %d times, holder %q; want nothing", st.calls, l.Holder())
		}
		if err := l.Acquire(nodestate.PathInit, nil); err != nil {
			t.Fatalf("lock not free after a failed prepare: %v", err)
		}
	})
	t.Run("persist fails (fake store)", func(t *testing.T) {
		st := &fakeStore{err: errors.New("io error")}
		l := New(st, "")
		if err := l.Acquire(nodestate.PathJoin, nil); err == nil || errors.Is(err, ErrTaken) {
			t.Fatalf("Acquire = %v, want the store's error", err)
		}
		if l.Holder() != "" {
			t.Fatalf("holder %q after a failed persist", l.Holder())
		}
	})
}

func TestResumedLockIsTaken(t *testing.T) {
	l := New(&fakeStore{}, nodestate.PathJoin)
	if err := l.Acquire(nodestate.PathInit, func() error { t.Fatal("prepare ran"); return nil }); !errors.Is(err, ErrTaken) {
		t.Fatalf("Acquire on a resumed lock = %v, want ErrTaken", err)
	}
}
