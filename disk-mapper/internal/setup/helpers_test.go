package setup

import (
	"bytes"
	"context"
	"crypto/rand"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/cloister-dev/cloister/disk-mapper/internal/unlock"
	"github.com/cloister-dev/cloister/internal/cryptsetup"
	"github.com/cloister-dev/cloister/internal/status"
)

// imageSize is the 16 MiB LUKS2 header area plus 16 MiB of data.
const imageSize = 32 << 20

// newImage returns a sparse, empty file image of a state disk.
func newImage(tb testing.TB) string {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "state.img")
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	if err := f.Truncate(imageSize); err != nil {
		tb.Fatal(err)
	}
	if err := f.Close(); err != nil {
		tb.Fatal(err)
	}
	return path
}

func newKey(tb testing.TB) []byte {
	tb.Helper()
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		tb.Fatal(err)
	}
	return k
}

// keyedImage returns an image formatted with a one-time passphrase and
// re-keyed to key, as the bootstrapper leaves it after a join.
func keyedImage(tb testing.TB, key []byte) (path, uuid string) {
	tb.Helper()
	return keyedImageFor(tb, func(string) []byte { return key })
}

// keyedImageFor is keyedImage with the key derived from the disk's UUID, as
// the join service derives it.
func keyedImageFor(tb testing.TB, keyFor func(uuid string) []byte) (path, uuid string) {
	tb.Helper()
	path = newImage(tb)
	oneTime := newKey(tb)
	uuid, err := cryptsetup.Format(context.Background(), path, oneTime, cryptsetup.FormatOptions{})
	if err != nil {
		tb.Fatalf("Format: %v", err)
	}
	d, err := cryptsetup.Open(path, cryptsetup.FormatOptions{})
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	defer d.Close()
	// The join service's default generation is 0, but Rekey numbers
	// derived keys from 1; the token's generation is informational only.
	if err := d.Rekey(context.Background(), oneTime, keyFor(uuid), 1); err != nil {
		tb.Fatalf("Rekey: %v", err)
	}
	return path, uuid
}

// requireCryptsetupCLI returns Debian's cryptsetup binary, to write headers
// disk-mapper must refuse. Missing: fatal in CI, skipped elsewhere.
func requireCryptsetupCLI(tb testing.TB) string {
	tb.Helper()
	p, err := exec.LookPath("cryptsetup")
	if err == nil {
		return p
	}
	if os.Getenv("CI") == "true" {
		tb.Fatalf("cryptsetup is required in CI: %v", err)
	}
	tb.Skipf("cryptsetup not installed (apt-get install cryptsetup-bin): %v", err)
	return ""
}

// fakeMapper is a FAKE device-mapper (the host has none): it records the
// activation and checks the key on the real header first, as dm-crypt would
// refuse a wrong one.
type fakeMapper struct {
	dir string

	mu        sync.Mutex
	activated []string
	key       []byte
}

func newFakeMapper(tb testing.TB) *fakeMapper { return &fakeMapper{dir: tb.TempDir()} }

func (m *fakeMapper) Activate(_ context.Context, path, name string, key []byte) (string, error) {
	d, err := cryptsetup.Open(path, cryptsetup.FormatOptions{})
	if err != nil {
		return "", err
	}
	defer d.Close()
	if _, err := d.CheckKey(key); err != nil {
		return "", err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.activated = append(m.activated, name)
	m.key = bytes.Clone(key)
	return filepath.Join(m.dir, name), nil
}

// fakeFilesystem is a FAKE mkfs and mount: mounting only checks the target
// exists and records the call.
type fakeFilesystem struct {
	mkfs, mounts []string
}

func (f *fakeFilesystem) Mkfs(_ context.Context, dev string) error {
	f.mkfs = append(f.mkfs, dev)
	return nil
}

func (f *fakeFilesystem) Mount(_ context.Context, dev, target string) error {
	if err := os.MkdirAll(target, 0o755); err != nil {
		return err
	}
	f.mounts = append(f.mounts, dev+" "+target)
	return nil
}

// fakeLatch is a FAKE cluster-ID latch recording what it was extended with.
type fakeLatch struct{ extended [][]byte }

func (l *fakeLatch) Extend(_ context.Context, id []byte) error {
	l.extended = append(l.extended, bytes.Clone(id))
	return nil
}

// fakeSource is a FAKE key source that offers fixed candidates in order,
// recording each result, then waits for the end.
type fakeSource struct {
	offers []unlock.Candidate
	fail   error
	mu     sync.Mutex
	errs   []error
}

func (s *fakeSource) Run(ctx context.Context, c *unlock.Checker) error {
	if s.fail != nil {
		return s.fail
	}
	for _, cand := range s.offers {
		err := c.Offer(ctx, cand)
		s.mu.Lock()
		s.errs = append(s.errs, err)
		s.mu.Unlock()
	}
	<-ctx.Done()
	return ctx.Err()
}

func (s *fakeSource) results() []error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]error(nil), s.errs...)
}

type testFlow struct {
	flow   *Flow
	mapper *fakeMapper
	fs     *fakeFilesystem
	status *status.Tracker
	opts   Options
	logs   *bytes.Buffer
}

func newTestFlow(tb testing.TB, l latch, sources map[string]KeySource, mod func(*Options)) *testFlow {
	tb.Helper()
	return newTestFlowWith(tb, l, status.New("disk-mapper", status.Options{}), &bytes.Buffer{}, sources, mod)
}

// newTestFlowWith is newTestFlow with the tracker and log buffer the key
// sources share.
func newTestFlowWith(tb testing.TB, l latch, st *status.Tracker, logs *bytes.Buffer, sources map[string]KeySource, mod func(*Options)) *testFlow {
	tb.Helper()
	dir := tb.TempDir()
	tf := &testFlow{mapper: newFakeMapper(tb), fs: &fakeFilesystem{}, status: st, logs: logs}
	tf.opts = Options{
		PassphrasePath: filepath.Join(dir, "run/cloister/one-time-passphrase"),
		MountPoint:     filepath.Join(dir, "state"),
	}
	if mod != nil {
		mod(&tf.opts)
	}
	f, err := New(Components{
		Headers:    LUKS{},
		Mapper:     tf.mapper,
		Filesystem: tf.fs,
		Latch:      l,
		Status:     tf.status,
		Log:        slog.New(slog.NewJSONHandler(tf.logs, nil)),
		Sources:    sources,
	}, tf.opts)
	if err != nil {
		tb.Fatal(err)
	}
	tf.flow = f
	return tf
}

// writeSalt puts the measurement salt where the bootstrapper stores it on
// the (fake-mounted) state filesystem.
func (tf *testFlow) writeSalt(tb testing.TB, salt []byte) {
	tb.Helper()
	p := filepath.Join(tf.opts.MountPoint, MeasurementSaltPath)
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		tb.Fatal(err)
	}
	if err := os.WriteFile(p, salt, 0o600); err != nil {
		tb.Fatal(err)
	}
}

func execCommand(name string, args ...string) ([]byte, error) {
	return exec.Command(name, args...).CombinedOutput()
}
