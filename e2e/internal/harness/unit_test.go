package harness

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"testing"
	"time"
)

// These tests need no QEMU: they run with make test.

func TestKernelPackage(t *testing.T) {
	for _, tc := range []struct {
		name, in, want string
		wantErr        bool
	}{
		{name: "debian bookworm", in: "linux-image-amd64\n  Depends: linux-image-6.1.0-56-amd64\n", want: "linux-image-6.1.0-56-amd64"},
		{name: "alternative first", in: "linux-image-amd64\n |Depends: linux-image-6.1.0-57-amd64\n  Depends: linux-image-6.1.0-56-amd64\n", want: "linux-image-6.1.0-56-amd64"},
		{name: "unsigned meta package only", in: "linux-image-amd64\n  Depends: linux-image-amd64-unsigned\n", wantErr: true},
		{name: "empty", in: "", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := kernelPackage([]byte(tc.in))
			if (err != nil) != tc.wantErr || got != tc.want {
				t.Fatalf("kernelPackage: got %q, %v; want %q, error %v", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

func TestConsoleWait(t *testing.T) {
	path := filepath.Join(t.TempDir(), "serial.log")
	if err := os.WriteFile(path, []byte("boot\nMARK one\nMARK two\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile(`MARK (\w+)`)
	running := &Console{path: path, exited: func() bool { return false }}
	ctx := context.Background()

	m, end, err := running.Wait(ctx, re, 0)
	if err != nil || m[1] != "one" {
		t.Fatalf("first marker: got %v, %v; want one", m, err)
	}
	if m, _, err = running.Wait(ctx, re, end); err != nil || m[1] != "two" {
		t.Fatalf("marker after the first: got %v, %v; want two", m, err)
	}

	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if _, _, err := running.Wait(short, regexp.MustCompile("never"), 0); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("missing marker on a running VM: want context.DeadlineExceeded, got %v", err)
	}
	exited := &Console{path: path, exited: func() bool { return true }}
	if _, _, err := exited.Wait(ctx, regexp.MustCompile("never"), 0); !errors.Is(err, ErrVMExited) {
		t.Errorf("missing marker on an exited VM: want ErrVMExited, got %v", err)
	}
	if m, _, err := exited.Wait(ctx, re, 0); err != nil || m[1] != "one" {
		t.Errorf("marker printed before the exit: got %v, %v; want one", m, err)
	}
	failing := &Console{path: path, exited: func() bool { return false }, FailOn: []*regexp.Regexp{regexp.MustCompile("MARK two")}}
	if _, _, err := failing.Wait(ctx, regexp.MustCompile("never"), 0); !errors.Is(err, ErrFailMarker) {
		t.Errorf("failure marker before the awaited one: want ErrFailMarker, got %v", err)
	}
}

func TestContainsAnyAcrossChunks(t *testing.T) {
	path := filepath.Join(t.TempDir(), "disk.raw")
	data := make([]byte, 9<<20)
	needle := []byte("lost+found")
	// Straddle the 4 MiB chunk boundary.
	copy(data[4<<20-4:], needle)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	got := ContainsAny(t, path, needle, []byte("absent"))
	if len(got) != 1 || !bytes.Equal(got[0], needle) {
		t.Fatalf("ContainsAny: want only %q, got %q", needle, got)
	}
}

func TestQemuEscape(t *testing.T) {
	if got, want := qemuEscape("cloister.join=a:1,b:2"), "cloister.join=a:1,,b:2"; got != want {
		t.Fatalf("qemuEscape: want %q, got %q", want, got)
	}
}
