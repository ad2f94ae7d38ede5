// Package sdnotify tells systemd about a daemon's state (sd_notify(3)):
// READY=1 once it really serves, STATUS= on every phase change, STOPPING=1
// on shutdown. Outside systemd (no NOTIFY_SOCKET) it does nothing. It never
// fails its caller: a lost notification must not stop a node from joining.
package sdnotify

import (
	"fmt"
	"net"
	"os"
)

// Notifier sends notifications to one socket.
type Notifier struct {
	socket string
}

// FromEnv returns a Notifier for $NOTIFY_SOCKET; it is a no-op when unset.
func FromEnv() *Notifier { return &Notifier{socket: os.Getenv("NOTIFY_SOCKET")} }

// Ready says the service is serving.
func (n *Notifier) Ready() error { return n.send("READY=1") }

// Status sets the one-line status shown by systemctl status.
func (n *Notifier) Status(format string, args ...any) error {
	return n.send("STATUS=" + fmt.Sprintf(format, args...))
}

// Stopping says the service is shutting down.
func (n *Notifier) Stopping() error { return n.send("STOPPING=1") }

func (n *Notifier) send(state string) error {
	if n == nil || n.socket == "" {
		return nil
	}
	addr := &net.UnixAddr{Name: n.socket, Net: "unixgram"}
	if n.socket[0] == '@' { // abstract namespace
		addr.Name = "\x00" + n.socket[1:]
	}
	conn, err := net.DialUnix("unixgram", nil, addr)
	if err != nil {
		return fmt.Errorf("sd_notify %s: %w", n.socket, err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(state)); err != nil {
		return fmt.Errorf("sd_notify %s: %w", n.socket, err)
	}
	return nil
}
