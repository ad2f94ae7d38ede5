package nodelock

import (
	"errors"
	"fmt"
	"sync"

	"github.com/cloister-dev/cloister/bootstrapper/internal/nodestate"
)

// ErrTaken means the node lock is already held, by the path Holder names.
var ErrTaken = errors.New("node lock already taken")

// store persists the win; nodestate.Store implements it.
type store interface {
	Lock(path nodestate.Path) error
}

var _ store = (*nodestate.Store)(nil)

// Lock is the node lock.
type Lock struct {
	st store

	mu     sync.Mutex
	holder nodestate.Path
	taken  chan struct{}
}

// New returns the lock over st. holder is the path that already holds it
// according to the persisted state (empty while the node is Fresh).
func New(st store, holder nodestate.Path) *Lock {
	l := &Lock{st: st, holder: holder, taken: make(chan struct{})}
	if holder != "" {
		close(l.taken)
	}
	return l
}

// Acquire takes the lock for path: it runs prepare, then persists the win.
// It returns an error wrapping ErrTaken when the lock is already held (prepare
// does not run then), and prepare's or the store's error otherwise, leaving
// the lock free.
func (l *Lock) Acquire(path nodestate.Path, prepare func() error) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.holder != "" {
		return fmt.Errorf("taking the node lock for %s: held by %s: %w", path, l.holder, ErrTaken)
	}
	if prepare != nil {
		if err := prepare(); err != nil {
			return fmt.Errorf("preparing the %s path: %w", path, err)
		}
	}
	if err := l.st.Lock(path); err != nil {
		return fmt.Errorf("taking the node lock for %s: %w", path, err)
	}
	l.holder = path
	close(l.taken)
	return nil
}

// Holder returns the path that holds the lock, or "" while it is free.
func (l *Lock) Holder() nodestate.Path {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.holder
}

// Taken is closed once the lock is held.
func (l *Lock) Taken() <-chan struct{} { return l.taken }
