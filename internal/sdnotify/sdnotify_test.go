package sdnotify

import (
	"net"
	"path/filepath"
	"testing"
)

func TestNotifierSendsToSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "notify")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	n := &Notifier{socket: path}
	if err := n.Status("joining %s", "node-1"); err != nil {
		t.Fatal(err)
	}
	if err := n.Ready(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 256)
	for _, want := range []string{"STATUS=joining node-1", "READY=1"} {
		k, err := conn.Read(buf)
		if err != nil {
			t.Fatal(err)
		}
		if got := string(buf[:k]); got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	}
}

func TestNotifierWithoutSystemdDoesNothing(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	if err := FromEnv().Ready(); err != nil {
		t.Errorf("no socket: %v", err)
	}
}
