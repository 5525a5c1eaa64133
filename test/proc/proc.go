// Package proc starts and stops the processes a test suite runs beside
// itself (the operator binary, kube-state-metrics), so that each is stopped
// by its PID, also when the test fails or the test binary is killed.
package proc

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"syscall"
	"time"
)

// Process is a running child process in its own process group.
type Process struct {
	Name string
	cmd  *exec.Cmd
	done chan struct{}
}

// Start runs binary with args, its output appended to logPath. The child
// gets SIGKILL if this process dies (Pdeathsig, forked from a thread that
// never exits), so a test timeout cannot leak it.
func Start(name, binary string, args []string, logPath string, env ...string) (*Process, error) {
	return StartWith(name, binary, args, logPath, Options{Env: env})
}

// Options are StartWith's optional settings.
type Options struct {
	// Dir is the child's working directory; empty means this process's.
	Dir string
	// Env is added to this process's environment.
	Env []string
	// Detach starts the child in a session of its own and without
	// Pdeathsig, so it outlives this process (a cluster that a CLI leaves
	// running); it is still stopped by Stop.
	Detach bool
	// Header, if set, is written to the log before the child's output.
	Header string
}

// StartWith is Start with options.
func StartWith(name, binary string, args []string, logPath string, o Options) (*Process, error) {
	log, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	// The child gets its own copy of the descriptor. Files rather than
	// pipes: a detached child must not die of SIGPIPE once its parent
	// exits, and no copying goroutines are needed.
	defer log.Close()
	if o.Header != "" {
		fmt.Fprintln(log, o.Header)
	}
	cmd := exec.Command(binary, args...)
	cmd.Dir = o.Dir
	cmd.Stdout, cmd.Stderr = log, log
	cmd.Env = append(os.Environ(), o.Env...)
	if o.Detach {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
		err = cmd.Start()
	} else {
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		spawner().do(func() { err = cmd.Start() })
	}
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Process{Name: name, cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.done) }()
	return p, nil
}

// FreePorts returns n distinct free TCP ports on 127.0.0.1, for the
// processes a test starts. The listeners stay open until all are chosen so
// the kernel cannot hand out one twice; another process may still take one
// before the child binds it, which then shows up as an early exit.
func FreePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// PID is the process's ID (and process group ID).
func (p *Process) PID() int { return p.cmd.Process.Pid }

// Exited is closed when the process has exited.
func (p *Process) Exited() <-chan struct{} { return p.done }

// ExitState is how the process ended; nil while it runs.
func (p *Process) ExitState() *os.ProcessState {
	if p.Running() {
		return nil
	}
	return p.cmd.ProcessState
}

// Running reports whether the process has not exited yet.
func (p *Process) Running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Stop sends SIGTERM to the process group (a detached child's session is its
// group too), then SIGKILL after grace.
func (p *Process) Stop(grace time.Duration) error {
	if !p.Running() {
		return nil
	}
	if err := syscall.Kill(-p.PID(), syscall.SIGTERM); err != nil && !errors.Is(err, syscall.ESRCH) {
		return err
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(grace):
	}
	return p.Kill()
}

// Kill sends SIGKILL to the process group and waits for the exit: the way a
// crash or an OOM kill ends a process, with no chance to clean up.
func (p *Process) Kill() error {
	if !p.Running() {
		return nil
	}
	if err := syscall.Kill(-p.PID(), syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return err
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(10 * time.Second):
		return fmt.Errorf("%s (pid %d) survived SIGKILL", p.Name, p.PID())
	}
}

type forker struct{ reqs chan func() }

// spawner returns the one goroutine, locked to an OS thread that never
// exits, from which children are forked: Pdeathsig follows the forking
// thread, not the process.
var spawner = sync.OnceValue(func() *forker {
	f := &forker{reqs: make(chan func())}
	go func() {
		runtime.LockOSThread()
		for r := range f.reqs {
			r()
		}
	}()
	return f
})

func (f *forker) do(r func()) {
	done := make(chan struct{})
	f.reqs <- func() { defer close(done); r() }
	<-done
}
