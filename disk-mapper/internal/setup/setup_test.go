package setup

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cloister-dev/cloister/disk-mapper/internal/statedisk"
	"github.com/cloister-dev/cloister/disk-mapper/internal/unlock"
	"github.com/cloister-dev/cloister/internal/cryptsetup"
	"github.com/cloister-dev/cloister/internal/keys"
	"github.com/cloister-dev/cloister/internal/status"
)

func TestFreshDiskWithFakeMapper(t *testing.T) {
	img := newImage(t)
	l := &fakeLatch{}
	src := &fakeSource{}
	tf := newTestFlow(t, l, map[string]KeySource{"fake": src}, nil)
	res, err := tf.flow.Run(context.Background(), img)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if !res.Formatted || keys.CheckDiskUUID(res.DiskUUID) != nil {
		t.Errorf("result %+v, want a formatted disk with a canonical UUID", res)
	}

	// The one-time passphrase: 32 bytes, 0600, in a 0700 directory, and
	// nothing else left there (no temporary files).
	fi, err := os.Stat(tf.opts.PassphrasePath)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 || fi.Size() != 32 {
		t.Errorf("passphrase file mode %v size %d, want 0600 and 32 bytes", fi.Mode().Perm(), fi.Size())
	}
	di, err := os.Stat(filepath.Dir(tf.opts.PassphrasePath))
	if err != nil {
		t.Fatal(err)
	}
	if di.Mode().Perm() != 0o700 {
		t.Errorf("passphrase directory mode %v, want 0700", di.Mode().Perm())
	}
	if entries, _ := os.ReadDir(filepath.Dir(tf.opts.PassphrasePath)); len(entries) != 1 {
		t.Errorf("passphrase directory holds %d entries, want only the passphrase", len(entries))
	}
	pass, err := os.ReadFile(tf.opts.PassphrasePath)
	if err != nil {
		t.Fatal(err)
	}

	// The real header: strict validation passes, the passphrase opens it,
	// and the state token says "not keyed".
	d, err := cryptsetup.Open(img, cryptsetup.FormatOptions{})
	if err != nil {
		t.Fatalf("Open of the formatted disk: %v", err)
	}
	defer d.Close()
	if d.UUID() != res.DiskUUID {
		t.Errorf("header UUID %s, result %s", d.UUID(), res.DiskUUID)
	}
	if _, err := d.CheckKey(pass); err != nil {
		t.Errorf("the passphrase in the file does not open the disk: %v", err)
	}
	st, err := d.ReadState()
	if err != nil {
		t.Fatal(err)
	}
	if st.Keyed {
		t.Errorf("state token %+v, want not keyed", st)
	}

	if !bytes.Equal(tf.mapper.key, pass) || len(tf.fs.mkfs) != 1 || len(tf.fs.mounts) != 1 {
		t.Errorf("activated with the passphrase: %v, mkfs %v, mounts %v", bytes.Equal(tf.mapper.key, pass), tf.fs.mkfs, tf.fs.mounts)
	}
	if len(l.extended) != 0 {
		t.Error("a fresh disk extended the latch: it has no cluster yet")
	}
	if got := tf.status.Snapshot(); got.GetPhase() != PhaseReady || got.GetDiskUuid() != res.DiskUUID {
		t.Errorf("status %v, want phase %s with the disk UUID", got, PhaseReady)
	}
	if bytes.Contains(tf.logs.Bytes(), pass) {
		t.Error("the one-time passphrase appears in the logs")
	}
}

func TestNotKeyedDiskIsReformattedWithFakeMapper(t *testing.T) {
	img := newImage(t)
	lost := newKey(t) // the one-time passphrase of an earlier boot, gone with /run
	oldUUID, err := cryptsetup.Format(context.Background(), img, lost, cryptsetup.FormatOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tf := newTestFlow(t, &fakeLatch{}, map[string]KeySource{"fake": &fakeSource{}}, nil)
	res, err := tf.flow.Run(context.Background(), img)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if !res.Formatted || res.DiskUUID == oldUUID {
		t.Errorf("result %+v, want a new format (old UUID %s)", res, oldUUID)
	}
	d, err := cryptsetup.Open(img, cryptsetup.FormatOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if _, err := d.CheckKey(lost); !errors.Is(err, cryptsetup.ErrKeyRejected) {
		t.Errorf("the lost passphrase still opens the reformatted disk: %v", err)
	}
}

func TestRefusedHeaderIsNeverFormatted(t *testing.T) {
	cli := requireCryptsetupCLI(t)
	tests := []struct {
		name  string
		setup func(t *testing.T, img string)
	}{
		{name: "luks1 header", setup: func(t *testing.T, img string) {
			keyFile := filepath.Join(t.TempDir(), "key")
			if err := os.WriteFile(keyFile, newKey(t), 0o600); err != nil {
				t.Fatal(err)
			}
			run(t, cli, "luksFormat", "-q", "--type", "luks1", "--pbkdf-force-iterations", "1000", "--key-file", keyFile, img)
		}},
		{name: "luks magic followed by garbage", setup: func(t *testing.T, img string) {
			writeAt(t, img, 0, append([]byte("LUKS\xba\xbe"), bytes.Repeat([]byte{0xee}, 4096)...))
		}},
		{name: "header whose UUID is uppercase", setup: func(t *testing.T, img string) {
			// libcryptsetup loads any UUID bytes in the binary header;
			// this one must not travel to the join service as is.
			if _, err := cryptsetup.Format(context.Background(), img, newKey(t), cryptsetup.FormatOptions{}); err != nil {
				t.Fatal(err)
			}
			rewriteHeaderUUID(t, img, "0F4A2C1E-6B7D-4E8F-9A0B-1C2D3E4F5A6B")
		}},
		{name: "primary header wiped, secondary header left", setup: func(t *testing.T, img string) {
			if _, err := cryptsetup.Format(context.Background(), img, newKey(t), cryptsetup.FormatOptions{}); err != nil {
				t.Fatal(err)
			}
			writeAt(t, img, 0, make([]byte, 4096))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			img := newImage(t)
			tt.setup(t, img)
			before, err := os.ReadFile(img)
			if err != nil {
				t.Fatal(err)
			}
			tf := newTestFlow(t, &fakeLatch{}, map[string]KeySource{"fake": &fakeSource{}}, nil)
			res, err := tf.flow.Run(context.Background(), img)
			if ExitCode(err) != ExitHeaderInvalid {
				t.Fatalf("Run = %+v, %v (exit %d); want exit %d", res, err, ExitCode(err), ExitHeaderInvalid)
			}
			after, err := os.ReadFile(img)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(before, after) {
				t.Error("the refused disk was written to")
			}
			if _, err := os.Stat(tf.opts.PassphrasePath); err == nil {
				t.Error("a one-time passphrase was written for a refused disk")
			}
		})
	}
}

func TestKeyedDiskWithFakeSources(t *testing.T) {
	key, secret, salt := newKey(t), newKey(t), newKey(t)
	wrong := newKey(t)
	tests := []struct {
		name       string
		sources    func() map[string]KeySource
		noSalt     bool
		badSalt    []byte
		keyTimeout time.Duration
		wantExit   int
		wantLatch  bool
	}{
		{
			name: "wrong key then right key from one source",
			sources: func() map[string]KeySource {
				return map[string]KeySource{"fake": &fakeSource{offers: []unlock.Candidate{
					{DiskKey: wrong, MeasurementSecret: secret, Source: "fake"},
					{DiskKey: key, MeasurementSecret: secret, Source: "fake"},
				}}}
			},
			wantExit: ExitReady, wantLatch: true,
		},
		{
			name: "only wrong keys until the key timeout",
			sources: func() map[string]KeySource {
				return map[string]KeySource{"fake": &fakeSource{offers: []unlock.Candidate{{DiskKey: wrong, MeasurementSecret: secret}}}}
			},
			keyTimeout: 100 * time.Millisecond, wantExit: ExitNoKey,
		},
		{
			name: "every source gives up",
			sources: func() map[string]KeySource {
				return map[string]KeySource{"a": &fakeSource{fail: errors.New("listener closed")}, "b": &fakeSource{fail: errors.New("no endpoints")}}
			},
			wantExit: ExitNoKey,
		},
		{
			name: "salt missing on a keyed disk",
			sources: func() map[string]KeySource {
				return map[string]KeySource{"fake": &fakeSource{offers: []unlock.Candidate{{DiskKey: key, MeasurementSecret: secret}}}}
			},
			noSalt: true, wantExit: ExitInternal,
		},
		{
			name: "salt of the wrong size",
			sources: func() map[string]KeySource {
				return map[string]KeySource{"fake": &fakeSource{offers: []unlock.Candidate{{DiskKey: key, MeasurementSecret: secret}}}}
			},
			badSalt: salt[:31], wantExit: ExitInternal,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			img, uuid := keyedImage(t, key)
			l := &fakeLatch{}
			srcs := tt.sources()
			tf := newTestFlow(t, l, srcs, func(o *Options) { o.KeyTimeout = tt.keyTimeout })
			switch {
			case tt.badSalt != nil:
				tf.writeSalt(t, tt.badSalt)
			case !tt.noSalt:
				tf.writeSalt(t, salt)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			res, err := tf.flow.Run(ctx, img)
			if got := ExitCode(err); got != tt.wantExit {
				t.Fatalf("Run = %+v, %v; exit %d, want %d", res, err, got, tt.wantExit)
			}
			if !tt.wantLatch {
				if len(l.extended) != 0 {
					t.Errorf("latch extended %d times, want never", len(l.extended))
				}
				return
			}
			want, err := keys.ClusterID(secret, salt)
			if err != nil {
				t.Fatal(err)
			}
			if len(l.extended) != 1 || !bytes.Equal(l.extended[0], want) || !bytes.Equal(res.ClusterID, want) {
				t.Errorf("latch extended with %x, want once with %x", l.extended, want)
			}
			if res.DiskUUID != uuid || !bytes.Equal(tf.mapper.key, key) || len(tf.fs.mkfs) != 0 {
				t.Errorf("result %+v, activated with the key: %v, mkfs %v (must never run on a keyed disk)", res, bytes.Equal(tf.mapper.key, key), tf.fs.mkfs)
			}
			fs := srcs["fake"].(*fakeSource)
			if errs := fs.results(); len(errs) == 2 && !errors.Is(errs[0], unlock.ErrWrongKey) {
				t.Errorf("wrong key answered %v, want ErrWrongKey", errs[0])
			}
			if got := tf.status.Snapshot(); got.GetPhase() != PhaseReady {
				t.Errorf("status %v, want %s", got, PhaseReady)
			}
			for _, secretBytes := range [][]byte{key, secret} {
				if bytes.Contains(tf.logs.Bytes(), secretBytes) {
					t.Error("key material in the logs")
				}
			}
		})
	}
}

func TestExitCode(t *testing.T) {
	tests := []struct {
		err  error
		want int
	}{
		{nil, ExitReady},
		{errors.New("mount: device busy"), ExitInternal},
		{statedisk.ErrNotFound, ExitDiskMissing},
		{statedisk.ErrBootDisk, ExitDiskMissing},
		{&cryptsetup.HeaderError{Field: "segments.0.encryption"}, ExitHeaderInvalid},
		{ErrHeaderInvalid, ExitHeaderInvalid},
		{ErrNoKey, ExitNoKey},
	}
	for _, tt := range tests {
		wrapped := tt.err
		if tt.err != nil {
			wrapped = errors.Join(errors.New("context"), tt.err)
		}
		if got := ExitCode(wrapped); got != tt.want {
			t.Errorf("ExitCode(%v) = %d, want %d", wrapped, got, tt.want)
		}
	}
}

func TestNewRefusesMissingComponents(t *testing.T) {
	full := Components{
		Headers: LUKS{}, Mapper: &fakeMapper{}, Filesystem: &fakeFilesystem{}, Latch: &fakeLatch{},
		Status: status.New("disk-mapper", status.Options{}), Log: slog.New(slog.DiscardHandler),
		Sources: map[string]KeySource{"f": &fakeSource{}},
	}
	if _, err := New(full, Options{}); err != nil {
		t.Fatalf("New with every component: %v", err)
	}
	for name, mod := range map[string]func(*Components){
		"headers": func(c *Components) { c.Headers = nil },
		"mapper":  func(c *Components) { c.Mapper = nil },
		"fs":      func(c *Components) { c.Filesystem = nil },
		"latch":   func(c *Components) { c.Latch = nil },
		"status":  func(c *Components) { c.Status = nil },
		"log":     func(c *Components) { c.Log = nil },
		"sources": func(c *Components) { c.Sources = nil },
	} {
		c := full
		mod(&c)
		if _, err := New(c, Options{}); err == nil {
			t.Errorf("New without %s succeeded", name)
		}
	}
	if _, err := New(full, Options{PassphrasePath: "relative/path"}); err == nil {
		t.Error("New accepted a relative passphrase path")
	}
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	out, err := execCommand(name, args...)
	if err != nil {
		t.Fatalf("%s %v: %v\n%s", name, args, err, out)
	}
}

func writeAt(t *testing.T, path string, off int64, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// rewriteHeaderUUID writes uuid into both LUKS2 binary headers (offset
// 0xa8, 40 bytes) and fixes their SHA-256 checksums (offset 0x1c0), as
// someone holding the disk can.
func rewriteHeaderUUID(tb testing.TB, img, uuid string) {
	tb.Helper()
	const hdrSize = 16384
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	for _, off := range []int64{0, hdrSize} {
		hdr := make([]byte, hdrSize)
		if _, err := f.ReadAt(hdr, off); err != nil {
			tb.Fatal(err)
		}
		clear(hdr[0xa8 : 0xa8+40])
		copy(hdr[0xa8:], uuid)
		clear(hdr[0x1c0 : 0x1c0+64])
		sum := sha256.Sum256(hdr)
		copy(hdr[0x1c0:], sum[:])
		if _, err := f.WriteAt(hdr, off); err != nil {
			tb.Fatal(err)
		}
	}
}
