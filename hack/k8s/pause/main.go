// Command pause is the pod sandbox process: it holds a pod's namespaces
// open and does nothing else until it is told to stop. It stands in for
// upstream's registry.k8s.io/pause, a C program that is not published as a
// Go module, so that nodes need no registry.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "-v" {
		os.Stdout.WriteString("pause (Cloister, Go)\n")
		return
	}
	// As PID 1 of a pod with a shared PID namespace, pause reaps the
	// orphans that are re-parented to it.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range sigs {
		if s != syscall.SIGCHLD {
			return
		}
		for {
			pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
