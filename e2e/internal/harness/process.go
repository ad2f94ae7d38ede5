package harness

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// process is a child started under timeout(1), so it ends even if the test
// binary dies without running its cleanups.
type process struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when the process has been waited for
	err  error         // Wait's result, valid after done
	once sync.Once
}

// startProcess runs name args under `timeout --kill-after=10s <limit>` with
// stdin from /dev/null and stdout+stderr to outPath. t.Cleanup stops it.
func startProcess(t TB, outPath string, limit time.Duration, name string, args ...string) *process {
	t.Helper()
	timeout := RequireTool(t, "timeout")
	out, err := os.Create(outPath)
	if err != nil {
		t.Fatalf("creating %s: %v", outPath, err)
	}
	secs := strconv.Itoa(int(limit.Round(time.Second) / time.Second))
	cmd := exec.Command(timeout, append([]string{"--kill-after=10s", secs, name}, args...)...)
	cmd.Stdout, cmd.Stderr = out, out // stdin stays nil: /dev/null
	// Its own process group: a Ctrl-C on the test reaches the test, which
	// stops its children in order, not the children directly. If the test
	// process dies without its cleanups (killed, go test's timeout),
	// timeout(1) gets SIGTERM and passes it on: no VM outlives its test.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		out.Close()
		t.Fatalf("starting %s: %v", name, err)
	}
	p := &process{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		out.Close()
		close(p.done)
	}()
	t.Cleanup(p.stop)
	return p
}

// stop ends the process by its PID: SIGTERM to timeout(1), which passes it
// on to its child, then SIGKILL to both after five seconds.
func (p *process) stop() {
	p.once.Do(func() {
		select {
		case <-p.done:
			return
		default:
		}
		pid := p.cmd.Process.Pid
		_ = syscall.Kill(pid, syscall.SIGTERM)
		select {
		case <-p.done:
			return
		case <-time.After(5 * time.Second):
		}
		// timeout(1) ignored us: kill its group (its own PID, see Setpgid).
		_ = syscall.Kill(-pid, syscall.SIGKILL)
		<-p.done
	})
}

// exited reports whether the process has ended.
func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

func (p *process) String() string {
	return fmt.Sprintf("pid %d (%s)", p.cmd.Process.Pid, p.cmd.Args[3])
}
