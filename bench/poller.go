package bench

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
)

// poller reads many members' sockets from one goroutine with epoll, so the
// client side of a benchmark costs one read system call per ready socket
// and no goroutine wake-up per member: it shares the machine's cores with
// the server under test and must stay cheap. Sockets stay registered with
// Go's own netpoller too, which is harmless as no goroutine waits on them.
type poller struct {
	epfd    int
	mu      sync.Mutex
	members map[int32]*member
	stop    atomic.Bool
	done    chan struct{}
}

func newPoller() (*poller, error) {
	fd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("bench: epoll_create1: %w", err)
	}
	p := &poller{epfd: fd, members: make(map[int32]*member), done: make(chan struct{})}
	go p.run()
	return p, nil
}

// add starts reading m. Frames m already holds are handled first.
func (p *poller) add(m *member) error {
	rc, err := m.conn.(*net.TCPConn).SyscallConn()
	if err != nil {
		return err
	}
	var fd int
	if err := rc.Control(func(f uintptr) { fd = int(f) }); err != nil {
		return err
	}
	m.fd = fd
	if err := m.consume(); err != nil {
		return err
	}
	p.mu.Lock()
	p.members[int32(fd)] = m
	p.mu.Unlock()
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP, Fd: int32(fd)}
	if err := syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_ADD, fd, &ev); err != nil {
		return fmt.Errorf("bench: epoll_ctl: %w", err)
	}
	return nil
}

func (p *poller) remove(m *member) {
	syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_DEL, m.fd, nil)
	p.mu.Lock()
	delete(p.members, int32(m.fd))
	p.mu.Unlock()
}

func (p *poller) run() {
	defer close(p.done)
	events := make([]syscall.EpollEvent, 256)
	for !p.stop.Load() {
		n, err := syscall.EpollWait(p.epfd, events, 50)
		if err != nil {
			if errors.Is(err, syscall.EINTR) {
				continue
			}
			return
		}
		for i := range n {
			p.mu.Lock()
			m := p.members[events[i].Fd]
			p.mu.Unlock()
			if m == nil {
				continue
			}
			if err := m.readReady(); err != nil {
				p.remove(m)
				if !m.s.closing.Load() {
					m.s.fail(fmt.Errorf("bench: member %s: %w", m.user, err))
				}
			}
		}
	}
}

// close stops the goroutine and releases the epoll descriptor; the
// members' connections are the caller's to close, afterwards.
func (p *poller) close() {
	p.stop.Store(true)
	<-p.done
	syscall.Close(p.epfd)
}

// readReady reads what the socket holds (one read; level-triggered epoll
// reports the socket again if more is left) and handles every whole frame.
func (m *member) readReady() error {
	rd := &m.rd
	if rd.w == len(rd.buf) {
		rd.compact()
	}
	n, err := syscall.Read(m.fd, rd.buf[rd.w:])
	switch {
	case errors.Is(err, syscall.EAGAIN) || errors.Is(err, syscall.EINTR):
		return nil
	case err != nil:
		return fmt.Errorf("read: %w", err)
	case n == 0:
		return errors.New("connection closed by the server")
	}
	rd.w += n
	return m.consume()
}
