package cluster

import (
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"
)

// Proc is one program of the cluster as a child process. Its name and
// arguments survive restarts; its stdout and stderr go to Dir/name.log
// (appended across restarts), unless Stdout says otherwise. Safe for
// concurrent use.
type Proc struct {
	Name string
	path string

	mu     sync.Mutex
	args   []string
	stdout func() io.WriteCloser // a fresh stdout for each start, or nil
	logDir string
	cmd    *exec.Cmd
	exited chan struct{}
	err    error // how the last run ended
	starts int
}

func newProc(bin, logDir, name, program string, args []string) (*Proc, error) {
	path := filepath.Join(bin, program)
	if _, err := os.Stat(path); err != nil {
		return nil, fmt.Errorf("cluster: %s not built (run make build, or point -bin at it): %w", path, err)
	}
	return &Proc{Name: name, path: path, args: args, logDir: logDir}, nil
}

// start runs the process. It fails if it is already running.
func (p *Proc) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		return fmt.Errorf("cluster: %s is already running", p.Name)
	}
	logf, err := os.OpenFile(filepath.Join(p.logDir, p.Name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	cmd := exec.Command(p.path, p.args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	if p.stdout != nil {
		cmd.Stdout = p.stdout()
	}
	// Our own process group, so a terminal's Ctrl-C reaches only the
	// harness, which stops the children in order; and death with the
	// harness, so no child outlives a crashed run.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("cluster: start %s: %w", p.Name, err)
	}
	exited := make(chan struct{})
	p.cmd, p.exited = cmd, exited
	p.starts++
	go func() {
		err := cmd.Wait()
		if w, ok := cmd.Stdout.(io.WriteCloser); ok && p.stdout != nil {
			w.Close()
		}
		logf.Close()
		p.mu.Lock()
		p.err = err
		if p.cmd == cmd {
			p.cmd = nil
		}
		p.mu.Unlock()
		close(exited)
	}()
	return nil
}

// Running reports whether the process runs.
func (p *Proc) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd != nil
}

// Starts is how many times the process was started.
func (p *Proc) Starts() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.starts
}

// Exited returns a channel closed when the current (or last) run ends;
// nil if it never started.
func (p *Proc) Exited() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.exited
}

// Err is how the last run ended (nil while running or after a clean exit).
func (p *Proc) Err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.err
}

// Signal sends sig to the running process.
func (p *Proc) Signal(sig syscall.Signal) error {
	p.mu.Lock()
	cmd := p.cmd
	p.mu.Unlock()
	if cmd == nil {
		return fmt.Errorf("cluster: %s is not running", p.Name)
	}
	return cmd.Process.Signal(sig)
}

// Kill SIGKILLs the process and waits until it is gone.
func (p *Proc) Kill() error {
	ex := p.Exited()
	if err := p.Signal(syscall.SIGKILL); err != nil {
		return err
	}
	<-ex
	return nil
}

// Stop sends sig and waits up to grace for the exit, then SIGKILLs. It
// reports an error when the grace ran out. A process not running is no
// error.
func (p *Proc) Stop(sig syscall.Signal, grace time.Duration) error {
	ex := p.Exited()
	if p.Signal(sig) != nil {
		return nil
	}
	select {
	case <-ex:
		return nil
	case <-time.After(grace):
	}
	_ = p.Kill()
	return fmt.Errorf("cluster: %s did not exit within %v of %v; killed", p.Name, grace, sig)
}

// Pid is the running process's id, 0 when it does not run.
func (p *Proc) Pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return 0
	}
	return p.cmd.Process.Pid
}
