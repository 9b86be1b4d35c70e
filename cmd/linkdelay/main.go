// Command linkdelay relays Ethernet frames between two interfaces with a
// constant one-way delay in each direction: a userspace stand-in for netem's
// delay on kernels without sch_netem. See package nearchat/mininet/linkdelay.
//
// Usage (as root):
//
//	linkdelay -a mid-a -b mid-b -delay 10ms [-delay-ba 5ms] [-parent-pid N] [-rtprio 10] [-v]
//
// It exits 0 on SIGTERM/SIGINT, when its parent process (or -parent-pid)
// dies, and when one of its interfaces vanishes; 1 on errors; 2 on bad usage.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"time"

	"nearchat/mininet/linkdelay"
	"nearchat/pkg/bounds"
)

func main() {
	os.Exit(run())
}

func run() int {
	fs := flag.NewFlagSet("linkdelay", flag.ContinueOnError)
	a := fs.String("a", "", "first middle interface (required): 1 to 15 bytes, no '/', ':' or spaces")
	b := fs.String("b", "", "second middle interface (required, not -a)")
	delay := fs.Duration("delay", 10*time.Millisecond, "one-way delay applied in each direction, 0 to 10s")
	delayBA := fs.Duration("delay-ba", 0, "if > 0, one-way delay from -b to -a instead of -delay, 0 to 10s")
	queue := fs.Int("queue-bytes", linkdelay.DefaultQueueBytes, "queue size per direction in bytes (tail drop when full), 0 to 1073741824 (0: the default)")
	parentPID := fs.Int("parent-pid", -1, "exit when this process dies, -1 or a process id (-1: the parent at start; 0: never)")
	rtprio := fs.Int("rtprio", 10, "SCHED_FIFO priority for the relay threads, so frames leave on time on a busy machine, 0 to 99 (0: normal scheduling)")
	nice := fs.Int("nice", -10, "nice value for the relay threads if -rtprio is 0 or not permitted, -20 to 19 (0: unchanged)")
	noIPv6 := fs.Bool("disable-ipv6", false, "also set net.ipv6.conf.IFACE.disable_ipv6=1 on both interfaces (the Mininet link class already does)")
	noPromisc := fs.Bool("no-promisc", false, "do not put the interfaces in promiscuous mode")
	ready := fs.Bool("ready", false, "print \"ready\" on stdout once the sockets are bound")
	verbose := fs.Bool("v", false, "log to stderr (start, stop, counters)")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: linkdelay -a IFACE -b IFACE [-delay 10ms] [flags]\n\n"+
			"Relays every frame between IFACE a and IFACE b after a constant delay.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "linkdelay: unexpected arguments: %v\n", fs.Args())
		return 2
	}
	if *a == "" || *b == "" {
		fmt.Fprintln(os.Stderr, "linkdelay: -a and -b are required")
		fs.Usage()
		return 2
	}
	cfg := linkdelay.Config{
		A:                 *a,
		B:                 *b,
		Delay:             *delay,
		DelayBA:           *delayBA,
		QueueBytes:        *queue,
		NoPromisc:         *noPromisc,
		PrepareInterfaces: *noIPv6,
		Nice:              *nice,
		RealtimePriority:  *rtprio,
	}
	// Checked before anything is opened: -queue-bytes -1 used to mean the
	// default in silence, and a bad value otherwise surfaced (status 1) only
	// after the parent watch and the sockets were set up.
	if err := bounds.First(cfg.Validate(), bounds.AtLeast("parent-pid", *parentPID, -1)); err != nil {
		fmt.Fprintln(os.Stderr, "linkdelay:", err)
		return 2
	}

	logger := log.New(os.Stderr, fmt.Sprintf("linkdelay[%s<->%s] ", *a, *b), log.LstdFlags|log.Lmicroseconds)
	var logf func(string, ...any)
	if *verbose {
		logf = logger.Printf
	}

	// Each direction sits in a system call on its own locked thread; spare
	// Ps let a thread that wakes up continue at once instead of queueing
	// for one.
	if os.Getenv("GOMAXPROCS") == "" && runtime.GOMAXPROCS(0) < 4 {
		runtime.GOMAXPROCS(4)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	watch, isParent := *parentPID, false
	if watch < 0 {
		watch, isParent = os.Getppid(), true
		if watch <= 1 {
			watch = 0 // started by init or already orphaned: nothing to watch
		}
	}
	if watch > 0 {
		died, err := linkdelay.WatchProcess(ctx, watch, isParent)
		if err != nil {
			fmt.Fprintln(os.Stderr, "linkdelay:", err)
			return 1
		}
		go func() {
			select {
			case <-died:
				if logf != nil {
					logf("process %d exited; stopping", watch)
				}
				cancel()
			case <-ctx.Done():
			}
		}()
	}

	cfg.Logf = logf
	relay, err := linkdelay.Open(cfg)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer relay.Close()
	if logf != nil {
		logf("relaying %s <-> %s, delay %v (b->a %v)", *a, *b, *delay, effective(*delay, *delayBA))
	}
	if *ready {
		fmt.Println("ready") // the only thing ever written to stdout
	}

	err = relay.Run(ctx)
	if logf != nil {
		ab, ba := relay.Stats()
		logf("%s->%s: %+v", *a, *b, ab)
		logf("%s->%s: %+v", *b, *a, ba)
	}
	switch {
	case err == nil:
		if logf != nil {
			logf("stopped")
		}
		return 0
	case errors.Is(err, linkdelay.ErrInterfaceGone):
		if logf != nil {
			logf("%v; exiting", err)
		}
		return 0
	default:
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
}

func effective(d, ba time.Duration) time.Duration {
	if ba > 0 {
		return ba
	}
	return d
}
